//! The client side of ilo-e2e/1 (`e2e.md`): the bundles of each room's members as the relay
//! lists them, sealing a text for them (the sender included), and opening what arrives into
//! plain words about what it is. Trust on first use is the [`Keyring`]'s.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ilo_e2e::{Body, Bundle, E2eError, Keys};
use ilo_protocol::{Member, PresenceEvent, ServerFrame};
use tokio::time::Instant;

use crate::keyring::{Keyring, Seen};
use crate::rest::Api;

/// Message ids remembered per room to drop a replayed one.
const SEEN_PER_ROOM: usize = 4096;
/// A user's key is fetched from the directory at most this often.
const LOOKUP_EVERY: Duration = Duration::from_secs(10);

/// What a received message turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Opened and verified: this is what the sender wrote, in this room, for this reader.
    Encrypted(String),
    /// Sent without encryption: anyone on the path could read or change it.
    Plain(String),
    /// Encrypted, but not readable here, and why: `NotForYou` (sent before this reader joined,
    /// or to another key of theirs), `Signature` (could not be verified: altered, forged,
    /// replayed in another room or under another name), `UnknownSenderKey`, `Format`,
    /// `Decrypt`.
    Unreadable(E2eError),
}

/// Why a text was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("not connected right now; reconnecting")]
    NotConnected,
    #[error("not in {0} yet: wait until it is joined")]
    NotJoined(String),
    #[error("the key of {} changed and you had verified it: /trust them before sending", .0.join(", "))]
    KeyHeld(Vec<String>),
    #[error("cannot encrypt: {0}")]
    Seal(E2eError),
    #[error(
        "too long for {recipients} recipient(s): encrypted it would be {len} bytes, over the {max}-byte limit"
    )]
    TooLarge {
        recipients: usize,
        len: usize,
        max: usize,
    },
}

/// A member's key that differs from the one known before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    pub user: String,
    /// The rooms this client shares with the user, where it should be announced.
    pub rooms: Vec<String>,
    /// The user had been verified: nothing is sent to them until the new key is trusted.
    pub held: bool,
}

#[derive(Default)]
struct Room {
    /// Every member as the relay last listed them; `None`: no E2E key.
    members: BTreeMap<String, Option<Bundle>>,
    seen: HashSet<[u8; 16]>,
    seen_order: VecDeque<[u8; 16]>,
}

impl Room {
    /// False when `mid` was already seen here.
    fn first_sight(&mut self, mid: [u8; 16]) -> bool {
        if !self.seen.insert(mid) {
            return false;
        }
        self.seen_order.push_back(mid);
        if self.seen_order.len() > SEEN_PER_ROOM
            && let Some(old) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

/// A user's keys, the rooms' members and what is known of their keys.
pub struct E2e {
    /// Shared with the blocking thread that seals.
    keys: Arc<Keys>,
    keyring: Keyring,
    directory: Option<Api>,
    rooms: HashMap<String, Room>,
    /// Keys fetched from the directory, for senders no longer listed in the room.
    fetched: HashMap<String, (Instant, Option<Bundle>)>,
}

impl E2e {
    /// `directory` is asked for the key of a sender the room no longer lists.
    pub fn new(keys: Keys, keyring: Keyring, directory: Option<Api>) -> Self {
        Self {
            keys: Arc::new(keys),
            keyring,
            directory,
            rooms: HashMap::new(),
            fetched: HashMap::new(),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub fn keyring_mut(&mut self) -> &mut Keyring {
        &mut self.keyring
    }

    /// The bundle a room lists for `user`, else the one last fetched for them.
    pub fn bundle_of(&self, user: &str) -> Option<&Bundle> {
        self.rooms
            .values()
            .find_map(|r| r.members.get(user).and_then(Option::as_ref))
            .or_else(|| self.fetched.get(user).and_then(|(_, b)| b.as_ref()))
    }

    /// The members of `room` and whether each can receive encrypted messages.
    pub fn members(&self, room: &str) -> Vec<(String, bool)> {
        self.rooms.get(room).map_or_else(Vec::new, |r| {
            r.members
                .iter()
                .map(|(user, bundle)| (user.clone(), bundle.is_some()))
                .collect()
        })
    }

    /// Follows the relay's frames: who is in which room with which key. Returns the key changes
    /// they reveal.
    pub fn track(&mut self, frame: &ServerFrame) -> Vec<KeyChange> {
        match frame {
            ServerFrame::Joined { room, members, .. } => {
                let listed = members
                    .iter()
                    .map(|Member { user, public_key }| (user.clone(), Bundle::parse(public_key)));
                let entry = self.rooms.entry(room.clone()).or_default();
                entry.members = listed.collect();
                let seen: Vec<(String, Option<Bundle>)> = entry
                    .members
                    .iter()
                    .map(|(u, b)| (u.clone(), b.clone()))
                    .collect();
                seen.iter()
                    .filter_map(|(user, bundle)| self.saw(user, bundle.as_ref()))
                    .collect()
            }
            ServerFrame::Left { room } => {
                self.rooms.remove(room);
                Vec::new()
            }
            ServerFrame::Presence {
                room,
                user,
                event,
                public_key,
            } => {
                let Some(entry) = self.rooms.get_mut(room) else {
                    return Vec::new();
                };
                if *event == PresenceEvent::Leave {
                    entry.members.remove(user);
                    return Vec::new();
                }
                let bundle = public_key.as_deref().and_then(Bundle::parse);
                entry.members.insert(user.clone(), bundle.clone());
                self.saw(user, bundle.as_ref()).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    fn saw(&mut self, user: &str, bundle: Option<&Bundle>) -> Option<KeyChange> {
        let held = match self.keyring.saw(user, bundle?) {
            Seen::First | Seen::Same => return None,
            Seen::Changed => false,
            Seen::ChangedVerified => true,
        };
        let mut rooms: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.members.contains_key(user))
            .map(|(name, _)| name.clone())
            .collect();
        rooms.sort();
        Some(KeyChange {
            user: user.to_owned(),
            rooms,
            held,
        })
    }

    /// Seals `text`, sent by `me` (this user's name as the relay's `welcome` gave it), for
    /// `room`'s members who have a key and for this user. The X25519 work (milliseconds for a
    /// large room) runs on tokio's blocking pool, off the executor.
    pub async fn seal(
        &self,
        me: &str,
        room: &str,
        text: &str,
        max_body: usize,
    ) -> Result<String, SendError> {
        let Some(entry) = self.rooms.get(room) else {
            return Err(SendError::NotJoined(room.to_owned()));
        };
        let held: Vec<String> = entry
            .members
            .keys()
            .filter(|user| self.keyring.is_held(user))
            .cloned()
            .collect();
        if !held.is_empty() {
            return Err(SendError::KeyHeld(held));
        }
        let others = entry
            .members
            .iter()
            .filter(|(user, _)| **user != me)
            .filter_map(|(_, bundle)| bundle.clone());
        let recipients: Vec<Bundle> = std::iter::once(self.keys.bundle().clone())
            .chain(others)
            .collect();
        let len = ilo_e2e::body_len(recipients.len(), text);
        if len > max_body {
            return Err(SendError::TooLarge {
                recipients: recipients.len(),
                len,
                max: max_body,
            });
        }
        let (keys, me, room, text) = (
            Arc::clone(&self.keys),
            me.to_owned(),
            room.to_owned(),
            text.to_owned(),
        );
        tokio::task::spawn_blocking(move || ilo_e2e::seal(&keys, &room, &me, &text, &recipients))
            .await
            .map_err(|_| SendError::Seal(ilo_e2e::E2eError::Recipients))?
            .map_err(SendError::Seal)
    }

    /// Opens a message `from` sent in `room`. `None`: a message id already seen in that room
    /// (a replay), to be dropped.
    pub async fn open(&mut self, room: &str, from: &str, body: &str) -> Option<Content> {
        let envelope = match Body::parse(body) {
            Ok(Body::Plain(text)) => return Some(Content::Plain(text.to_owned())),
            Ok(Body::Sealed(envelope)) => envelope,
            Err(e) => return Some(Content::Unreadable(e)),
        };
        let kid = envelope.sender_kid();
        let listed = self
            .rooms
            .get(room)
            .and_then(|r| r.members.get(from).cloned().flatten());
        let sender = match listed {
            Some(bundle) if bundle.kid() == kid => Some(bundle),
            // Not listed, or listed with another key: ask the directory once more.
            _ => self.fetch(from).await.filter(|b| b.kid() == kid),
        };
        let Some(sender) = sender else {
            return Some(Content::Unreadable(E2eError::UnknownSenderKey));
        };
        match envelope.open(&self.keys, room, from, &sender) {
            Ok(opened) => {
                let fresh = self
                    .rooms
                    .entry(room.to_owned())
                    .or_default()
                    .first_sight(opened.mid);
                fresh.then_some(Content::Encrypted(opened.text))
            }
            Err(e) => Some(Content::Unreadable(e)),
        }
    }

    /// `GET /user/{user}`, at most once per [`LOOKUP_EVERY`] per user.
    async fn fetch(&mut self, user: &str) -> Option<Bundle> {
        if let Some((at, bundle)) = self.fetched.get(user)
            && at.elapsed() < LOOKUP_EVERY
        {
            return bundle.clone();
        }
        let directory = self.directory.as_ref()?;
        let bundle = match directory.public_key(user).await {
            Ok(key) => Bundle::parse(&key),
            Err(_) => None,
        };
        self.fetched
            .insert(user.to_owned(), (Instant::now(), bundle.clone()));
        bundle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(user: &str, keys: &Keys) -> Member {
        Member {
            user: user.into(),
            public_key: keys.bundle().encode(),
        }
    }

    fn session(keys: Keys, room: &str, members: Vec<Member>) -> E2e {
        let mut e2e = E2e::new(keys, Keyring::default(), None);
        e2e.track(&ServerFrame::joined(room, members));
        e2e
    }

    fn presence(user: &str, event: PresenceEvent, keys: Option<&Keys>) -> ServerFrame {
        ServerFrame::Presence {
            room: "lobby".into(),
            user: user.into(),
            event,
            public_key: keys.map(|k| k.bundle().encode()),
        }
    }

    #[tokio::test]
    async fn members_read_each_other_and_a_replay_is_dropped() {
        let (a, b) = (Keys::generate(), Keys::generate());
        let members = vec![member("alice", &a), member("bob", &b)];
        let mut alice = session(a, "lobby", members.clone());
        let mut bob = session(b, "lobby", members);
        let body = alice
            .seal("alice", "lobby", "hi bob", 16_384)
            .await
            .expect("sealed");
        assert!(!body.contains("hi bob"));
        assert_eq!(
            bob.open("lobby", "alice", &body).await,
            Some(Content::Encrypted("hi bob".into()))
        );
        assert_eq!(bob.open("lobby", "alice", &body).await, None, "replayed");
        assert_eq!(
            alice.open("lobby", "alice", &body).await,
            Some(Content::Encrypted("hi bob".into())),
            "the sender's own echo opens"
        );
        assert_eq!(
            bob.open("lobby", "alice", "plain words").await,
            Some(Content::Plain("plain words".into()))
        );
        // The same bytes shown as sent by bob, or in another room, are refused.
        assert!(matches!(
            alice.open("lobby", "bob", &body).await,
            Some(Content::Unreadable(E2eError::UnknownSenderKey))
        ));
    }

    #[tokio::test]
    async fn who_leaves_stops_receiving_and_who_joins_reads_from_then_on() {
        let (a, b, c) = (Keys::generate(), Keys::generate(), Keys::generate());
        let mut alice = session(a, "lobby", vec![]);
        alice.track(&ServerFrame::joined(
            "lobby",
            vec![member("alice", alice.keys()), member("bob", &b)],
        ));
        let before = alice
            .seal("alice", "lobby", "before carol", 16_384)
            .await
            .expect("sealed");
        alice.track(&presence("bob", PresenceEvent::Leave, None));
        alice.track(&presence("carol", PresenceEvent::Join, Some(&c)));
        let after = alice
            .seal("alice", "lobby", "after carol", 16_384)
            .await
            .expect("sealed");
        let alice_listed = vec![member("alice", alice.keys()), member("carol", &c)];
        let mut carol = session(c, "lobby", alice_listed);
        assert_eq!(
            carol.open("lobby", "alice", &before).await,
            Some(Content::Unreadable(E2eError::NotForYou))
        );
        assert_eq!(
            carol.open("lobby", "alice", &after).await,
            Some(Content::Encrypted("after carol".into()))
        );
        let mut bob = session(b, "lobby", vec![member("alice", alice.keys())]);
        assert_eq!(
            bob.open("lobby", "alice", &after).await,
            Some(Content::Unreadable(E2eError::NotForYou))
        );
    }

    #[tokio::test]
    async fn a_changed_key_is_announced_and_a_verified_one_holds_sending() {
        let (a, b, b2) = (Keys::generate(), Keys::generate(), Keys::generate());
        let mut alice = session(a, "lobby", vec![]);
        alice.track(&presence("bob", PresenceEvent::Join, Some(&b)));
        assert!(alice.keyring_mut().verify("bob"));
        alice.track(&presence("bob", PresenceEvent::Leave, None));
        let changes = alice.track(&presence("bob", PresenceEvent::Join, Some(&b2)));
        assert_eq!(
            changes,
            vec![KeyChange {
                user: "bob".into(),
                rooms: vec!["lobby".into()],
                held: true
            }]
        );
        assert_eq!(
            alice.seal("alice", "lobby", "hi", 16_384).await,
            Err(SendError::KeyHeld(vec!["bob".into()]))
        );
        assert!(alice.keyring_mut().trust("bob"));
        assert!(alice.seal("alice", "lobby", "hi", 16_384).await.is_ok());
    }

    #[tokio::test]
    async fn a_text_too_large_for_the_room_is_refused_before_sending() {
        let mut alice = session(Keys::generate(), "lobby", vec![]);
        for i in 0..50 {
            alice.track(&presence(
                &format!("u{i}"),
                PresenceEvent::Join,
                Some(&Keys::generate()),
            ));
        }
        let text = "x".repeat(9_000);
        assert!(matches!(
            alice.seal("alice", "lobby", &text, 16_384).await,
            Err(SendError::TooLarge { recipients: 51, .. })
        ));
        assert!(
            alice
                .seal("alice", "lobby", &"x".repeat(7_000), 16_384)
                .await
                .is_ok()
        );
        assert_eq!(
            alice.seal("alice", "kitchen", "hi", 16_384).await,
            Err(SendError::NotJoined("kitchen".into()))
        );
    }
}
