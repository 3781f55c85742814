//! Trust on first use (`e2e.md`, "Membership, keys and verification"): the bundle first seen
//! for each user is remembered; a different one later is a key change. For a user this person
//! marked verified, the new key waits for [`Keyring::trust`] and nothing is sent to that user
//! meanwhile, as Signal does for verified contacts; for anyone else it is taken at once and
//! announced.

use std::collections::BTreeMap;

use ilo_e2e::Bundle;
use serde::{Deserialize, Serialize};

/// What is remembered of a user: their bundle (encoded) and whether it was verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    pub bundle: String,
    #[serde(default)]
    pub verified: bool,
}

/// How a newly seen bundle compares with what was known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The user was unknown: remembered now.
    First,
    Same,
    /// A different key, taken in place of the old one.
    Changed,
    /// A different key for a verified user: held until [`Keyring::trust`].
    ChangedVerified,
}

/// Known keys, by username. Serializable, so a client can keep it beside its key file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Keyring {
    known: BTreeMap<String, Known>,
    /// New keys of verified users, waiting for the person's word.
    #[serde(default)]
    held: BTreeMap<String, String>,
}

impl Keyring {
    /// Records `bundle` as `user`'s key as far as trust goes.
    pub fn saw(&mut self, user: &str, bundle: &Bundle) -> Seen {
        let encoded = bundle.encode();
        let Some(known) = self.known.get_mut(user) else {
            self.known.insert(
                user.to_owned(),
                Known {
                    bundle: encoded,
                    verified: false,
                },
            );
            return Seen::First;
        };
        if known.bundle == encoded {
            self.held.remove(user);
            return Seen::Same;
        }
        if known.verified {
            let fresh = self.held.insert(user.to_owned(), encoded.clone()) != Some(encoded);
            return if fresh {
                Seen::ChangedVerified
            } else {
                Seen::Same
            };
        }
        known.bundle = encoded;
        Seen::Changed
    }

    /// Whether `user`'s current key waits for the person's word: nothing goes to them until it
    /// is [`Keyring::trust`]ed.
    pub fn is_held(&self, user: &str) -> bool {
        self.held.contains_key(user)
    }

    /// Accepts `user`'s new key (no longer verified: verifying is done again on the new one).
    /// False when no key of theirs was waiting.
    pub fn trust(&mut self, user: &str) -> bool {
        let Some(bundle) = self.held.remove(user) else {
            return false;
        };
        self.known.insert(
            user.to_owned(),
            Known {
                bundle,
                verified: false,
            },
        );
        true
    }

    /// Marks `user`'s known key verified (after comparing safety numbers); false if unknown.
    pub fn verify(&mut self, user: &str) -> bool {
        match self.known.get_mut(user) {
            Some(known) => {
                known.verified = true;
                true
            }
            None => false,
        }
    }

    pub fn get(&self, user: &str) -> Option<&Known> {
        self.known.get(user)
    }
}

#[cfg(test)]
mod tests {
    use ilo_e2e::Keys;

    use super::*;

    #[test]
    fn the_first_key_is_trusted_and_a_change_is_reported() {
        let (first, second) = (Keys::generate(), Keys::generate());
        let mut ring = Keyring::default();
        assert_eq!(ring.saw("bob", first.bundle()), Seen::First);
        assert_eq!(ring.saw("bob", first.bundle()), Seen::Same);
        assert_eq!(ring.saw("bob", second.bundle()), Seen::Changed);
        assert_eq!(ring.saw("bob", second.bundle()), Seen::Same);
        assert!(!ring.is_held("bob"));
    }

    #[test]
    fn a_verified_users_new_key_waits_for_trust() {
        let (first, second) = (Keys::generate(), Keys::generate());
        let mut ring = Keyring::default();
        ring.saw("bob", first.bundle());
        assert!(ring.verify("bob"));
        assert_eq!(ring.saw("bob", second.bundle()), Seen::ChangedVerified);
        assert_eq!(
            ring.saw("bob", second.bundle()),
            Seen::Same,
            "announced once"
        );
        assert!(ring.is_held("bob"));
        assert!(ring.trust("bob"));
        assert!(!ring.is_held("bob"));
        assert_eq!(ring.get("bob").map(|k| k.verified), Some(false));
        assert_eq!(ring.saw("bob", second.bundle()), Seen::Same);
        assert!(!ring.trust("bob"), "nothing waits any more");
    }
}
