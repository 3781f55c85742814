//! Who is in each room, as the relay has told this client, so that a join announced again for
//! a member already listed with the same key is not passed on as news. Relays announce such
//! joins when they re-enter their presence leases after Redis restarted empty: the others never
//! saw the member leave.

use std::collections::HashMap;

use ilo_protocol::{PresenceEvent, ServerFrame};

#[derive(Default)]
pub(crate) struct Present {
    /// Room → member → the public key they were announced with.
    rooms: HashMap<String, HashMap<String, Option<String>>>,
}

impl Present {
    /// Records what `frame` says of a room's members; false for a join that changes nothing.
    pub(crate) fn is_news(&mut self, frame: &ServerFrame) -> bool {
        match frame {
            ServerFrame::Joined { room, members, .. } => {
                let listed = members
                    .iter()
                    .map(|m| (m.user.clone(), Some(m.public_key.clone())))
                    .collect();
                self.rooms.insert(room.clone(), listed);
            }
            ServerFrame::Left { room } => {
                self.rooms.remove(room);
            }
            ServerFrame::Presence {
                room,
                user,
                event: PresenceEvent::Join,
                public_key,
            } => {
                let members = self.rooms.entry(room.clone()).or_default();
                let before = members.insert(user.clone(), public_key.clone());
                return before.as_ref() != Some(public_key);
            }
            ServerFrame::Presence {
                room,
                user,
                event: PresenceEvent::Leave,
                ..
            } => {
                if let Some(members) = self.rooms.get_mut(room) {
                    members.remove(user);
                }
            }
            _ => {}
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use ilo_protocol::Member;

    use super::*;

    fn presence(user: &str, event: PresenceEvent, key: &str) -> ServerFrame {
        ServerFrame::Presence {
            room: "lobby".into(),
            user: user.into(),
            event,
            public_key: Some(key.into()),
        }
    }

    #[test]
    fn a_join_announced_again_with_the_same_key_is_not_news() {
        let mut present = Present::default();
        let ann = Member {
            user: "ann".into(),
            public_key: "k1".into(),
        };
        assert!(present.is_news(&ServerFrame::joined("lobby", vec![ann])));
        assert!(!present.is_news(&presence("ann", PresenceEvent::Join, "k1")));
        assert!(
            present.is_news(&presence("ann", PresenceEvent::Join, "k2")),
            "a new key"
        );
        assert!(present.is_news(&presence("bob", PresenceEvent::Join, "k3")));
        assert!(!present.is_news(&presence("bob", PresenceEvent::Join, "k3")));
        assert!(present.is_news(&presence("bob", PresenceEvent::Leave, "k3")));
        assert!(
            present.is_news(&presence("bob", PresenceEvent::Join, "k3")),
            "back after leaving"
        );
    }
}
