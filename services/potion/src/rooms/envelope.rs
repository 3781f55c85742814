//! The envelope a room's frames travel in between relays: one header line, then the frame
//! exactly as every recipient gets it (and as the history keeps it, so a replay re-encodes
//! nothing).
//!
//! - `m <offset> <epoch>\n<frame>`: a message and its place in the room's history;
//! - `m\n<frame>`: a message on a relay that keeps no history;
//! - `p <user id>\n<frame>`: presence, for every connection but that user's own.

use std::sync::Arc;

use bytes::Bytes;
use ilo_protocol::{PresenceEvent, ServerFrame};

use crate::hub::Identity;
use crate::socket;

/// A message's place in its room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    pub epoch: Arc<str>,
    pub offset: u64,
}

impl Place {
    /// Whether `self` is in `other`'s epoch and not after it.
    pub(crate) fn within(&self, other: &Place) -> bool {
        self.offset <= other.offset && self.epoch == other.epoch
    }
}

/// A frame for a room's members, its WebSocket frame encoded once for all of them.
#[derive(Debug, Clone)]
pub(crate) struct Arrival {
    pub kind: Kind,
    pub frame: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A message; `None` on a relay without history.
    Message(Option<Place>),
    /// Presence, not for the connections of this user id.
    Presence(Box<str>),
    /// Messages before this point may be missing.
    Gap(Place),
}

impl Arrival {
    pub(crate) fn message(place: Option<Place>, json: &str) -> Self {
        Self {
            kind: Kind::Message(place),
            frame: socket::text(json),
        }
    }

    /// Presence, for the in-process bus (the Redis bus sends [`presence`]'s envelope).
    pub(crate) fn presence(room: &str, who: &Identity, event: PresenceEvent) -> Self {
        Self {
            kind: Kind::Presence(who.user_id.as_str().into()),
            frame: socket::text(&presence_frame(room, who, event).to_json()),
        }
    }

    pub(crate) fn gap(room: &str, place: Place) -> Self {
        let json = ServerFrame::Gap {
            room: room.to_owned(),
            epoch: place.epoch.to_string(),
            offset: place.offset,
        }
        .to_json();
        Self {
            kind: Kind::Gap(place),
            frame: socket::text(&json),
        }
    }

    pub(crate) fn place(&self) -> Option<&Place> {
        match &self.kind {
            Kind::Message(place) => place.as_ref(),
            Kind::Gap(place) => Some(place),
            Kind::Presence(_) => None,
        }
    }
}

/// Reads an envelope from the bus; `None` for anything else.
pub(crate) fn open(payload: &[u8]) -> Option<Arrival> {
    let text = std::str::from_utf8(payload).ok()?;
    let (header, frame) = text.split_once('\n')?;
    let mut fields = header.split(' ');
    let kind = match (fields.next()?, fields.next(), fields.next()) {
        ("m", None, None) => Kind::Message(None),
        ("m", Some(offset), Some(epoch)) => Kind::Message(Some(Place {
            epoch: Arc::from(epoch),
            offset: offset.parse().ok()?,
        })),
        ("p", Some(user), None) => Kind::Presence(user.into()),
        _ => return None,
    };
    Some(Arrival {
        kind,
        frame: socket::text(frame),
    })
}

/// A message for a relay without history.
pub(crate) fn plain_message(frame: &str) -> String {
    format!("m\n{frame}")
}

/// A message with its place, as the Redis script writes it.
#[cfg(test)]
fn message(place: &Place, frame: &str) -> String {
    format!("m {} {}\n{frame}", place.offset, place.epoch)
}

/// `who` arrived in or left `room`: for every connection but the user's own.
pub(crate) fn presence(room: &str, who: &Identity, event: PresenceEvent) -> String {
    format!(
        "p {}\n{}",
        who.user_id,
        presence_frame(room, who, event).to_json()
    )
}

fn presence_frame(room: &str, who: &Identity, event: PresenceEvent) -> ServerFrame {
    ServerFrame::Presence {
        room: room.to_owned(),
        user: who.username.clone(),
        public_key: (event == PresenceEvent::Join).then(|| who.public_key.clone()),
        event,
    }
}

/// A `message` frame serialized without its place and without its closing brace: the history
/// appends `,"epoch":"…","offset":N}` once it has assigned them, in Redis or in process.
pub(crate) fn message_head(frame: &ServerFrame) -> String {
    let mut json = frame.to_json();
    json.pop();
    json
}

/// What [`message_head`] becomes once placed (the Redis script does the same concatenation).
pub(crate) fn complete(head: &str, place: &Place) -> String {
    format!(
        "{head},\"epoch\":\"{}\",\"offset\":{}}}",
        place.epoch, place.offset
    )
}

/// A new epoch: 48 random bits, as 12 hexadecimal digits.
pub(crate) fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(place: Option<(&str, u64)>) -> ServerFrame {
        ServerFrame::Message {
            room: "lobby".into(),
            from: "alice".into(),
            body: "hi\n\"there\"".into(),
            id: "r-1".into(),
            ts: 7,
            reference: Some("c-1".into()),
            epoch: place.map(|p| p.0.to_owned()),
            offset: place.map(|p| p.1),
        }
    }

    #[test]
    fn a_completed_head_is_the_frame_serialized_with_its_place() {
        let place = Place {
            epoch: "kQxTzLpa".into(),
            offset: 42,
        };
        let head = message_head(&frame(None));
        assert_eq!(
            complete(&head, &place),
            frame(Some(("kQxTzLpa", 42))).to_json()
        );
    }

    #[test]
    fn envelopes_open_to_what_was_put_in() {
        let place = Place {
            epoch: "e1".into(),
            offset: 9,
        };
        let json = frame(Some(("e1", 9))).to_json();
        let arrival = open(message(&place, &json).as_bytes()).expect("message");
        assert_eq!(arrival.kind, Kind::Message(Some(place)));
        assert_eq!(arrival.frame, socket::text(&json));
        let who = Identity {
            user_id: "u-1".into(),
            username: "bob".into(),
            public_key: "k".into(),
            session_id: "s".into(),
            expires_at: 0,
        };
        let arrival =
            open(presence("lobby", &who, PresenceEvent::Join).as_bytes()).expect("presence");
        let direct = Arrival::presence("lobby", &who, PresenceEvent::Join);
        assert_eq!(
            (&arrival.kind, &arrival.frame),
            (&direct.kind, &direct.frame)
        );
        assert_eq!(arrival.kind, Kind::Presence("u-1".into()));
        assert_eq!(
            open(plain_message("{}").as_bytes()).map(|a| a.kind),
            Some(Kind::Message(None))
        );
        for junk in ["", "m 1\n{}", "m x e\n{}", "q\n{}", "no header"] {
            assert!(open(junk.as_bytes()).is_none(), "{junk}");
        }
    }
}
