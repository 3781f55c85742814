//! How many connections one user, and one client address, may hold open on this relay
//! (`POTION_MAX_CONNECTIONS_PER_USER`, `POTION_MAX_CONNECTIONS_PER_ADDRESS`): without a cap, a
//! few clients could hold every socket and every byte of memory the relay has.

use std::net::IpAddr;

use ilo_runtime::counts::{Counts, Held};

/// Which cap an upgrade met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    User,
    Address,
}

pub(crate) struct Caps {
    per_user: usize,
    per_address: usize,
    by_user: Counts<String>,
    by_address: Counts<IpAddr>,
}

/// One connection's place under the caps, given back when it is dropped.
pub(crate) struct Slot {
    _user: Held<String>,
    _address: Held<IpAddr>,
}

impl Caps {
    pub(crate) fn new(per_user: usize, per_address: usize) -> Self {
        Self {
            per_user,
            per_address,
            by_user: Counts::default(),
            by_address: Counts::default(),
        }
    }

    /// A slot for one more connection of `user` from `address`, unless a cap is met.
    pub(crate) fn admit(&self, user: &str, address: IpAddr) -> Result<Slot, Full> {
        let user = self
            .by_user
            .take(&user.to_owned(), self.per_user)
            .ok_or(Full::User)?;
        let address = self
            .by_address
            .take(&address, self.per_address)
            .ok_or(Full::Address)?;
        Ok(Slot {
            _user: user,
            _address: address,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_user_and_address_and_given_back() {
        let caps = Caps::new(2, 3);
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
        assert_eq!(caps.by_user.count(&"ann".to_owned()), 1, "the second stays");
    }
}
