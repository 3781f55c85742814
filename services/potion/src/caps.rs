//! How many connections one user, and one client address, may hold open on this relay
//! (`POTION_MAX_CONNECTIONS_PER_USER`, `POTION_MAX_CONNECTIONS_PER_ADDRESS`): without a cap, a
//! few clients could hold every socket and every byte of memory the relay has.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Which cap an upgrade met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    User,
    Address,
}

pub(crate) struct Caps {
    per_user: usize,
    per_address: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    by_user: HashMap<String, usize>,
    by_address: HashMap<IpAddr, usize>,
}

/// One connection's place under the caps, given back when it is dropped.
pub(crate) struct Slot {
    caps: Arc<Caps>,
    user: String,
    address: IpAddr,
}

impl Caps {
    pub(crate) fn new(per_user: usize, per_address: usize) -> Self {
        Self {
            per_user,
            per_address,
            open: Mutex::new(Open::default()),
        }
    }

    /// A slot for one more connection of `user` from `address`, unless a cap is met.
    pub(crate) fn admit(self: &Arc<Self>, user: &str, address: IpAddr) -> Result<Slot, Full> {
        let mut open = self.lock();
        if open.by_user.get(user).copied().unwrap_or(0) >= self.per_user {
            return Err(Full::User);
        }
        if open.by_address.get(&address).copied().unwrap_or(0) >= self.per_address {
            return Err(Full::Address);
        }
        *open.by_user.entry(user.to_owned()).or_default() += 1;
        *open.by_address.entry(address).or_default() += 1;
        Ok(Slot {
            caps: Arc::clone(self),
            user: user.to_owned(),
            address,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.caps.lock();
        release(&mut open.by_user, &self.user);
        release(&mut open.by_address, &self.address);
    }
}

/// One fewer; the entry goes when it reaches zero, so the maps hold only what is open.
fn release<K: std::hash::Hash + Eq + Clone>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_user_and_address_and_given_back() {
        let caps = Arc::new(Caps::new(2, 3));
        let (home, cafe) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let a1 = caps.admit("ann", home).expect("first");
        let _a2 = caps.admit("ann", cafe).expect("second");
        assert_eq!(caps.admit("ann", home).err(), Some(Full::User));
        let _b = caps.admit("bob", home).expect("bob");
        let _c = caps.admit("cat", home).expect("cat");
        assert_eq!(caps.admit("dan", home).err(), Some(Full::Address));
        drop(a1);
        assert!(
            caps.admit("ann", cafe).is_ok(),
            "a slot is given back when dropped"
        );
        assert!(caps.lock().by_user.contains_key("ann"));
    }
}
