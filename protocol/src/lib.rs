//! Potion's WebSocket protocol, version 1 (`potion-protocol.md`): every frame a client or the
//! relay sends, and the rules of room names. Shared by the relay and every client.

use serde::{Deserialize, Serialize};

/// The subprotocol a relay selects.
pub const SUBPROTOCOL: &str = "potion.v1";
/// Prefix of the subprotocol that carries a browser's token: `bearer.<token>`.
pub const BEARER_PREFIX: &str = "bearer.";
/// The default limit of a `send` frame's `body`, in UTF-8 bytes (`POTION_MAX_BODY`).
pub const MAX_BODY_BYTES: usize = 16_384;
/// Longest `ref` a client may attach to a frame.
pub const MAX_REF_CHARS: usize = 64;

/// Close codes of the protocol.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const TOO_BIG: u16 = 1009;
    pub const IDLE: u16 = 4000;
    pub const INVALID_SESSION: u16 = 4001;
    pub const RATE_LIMITED: u16 = 4008;
    pub const SLOW_CONSUMER: u16 = 4009;
}

/// A frame from a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Join {
        room: String,
        /// The last message this client saw in the room: replay what came after it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Position>,
        /// On a first join: the room's last messages still kept, at most this many.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        history: Option<u64>,
    },
    Leave {
        room: String,
    },
    Send {
        room: String,
        body: String,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    Ping,
}

impl ClientFrame {
    /// A plain `join`: no history asked for.
    pub fn join(room: impl Into<String>) -> Self {
        Self::Join {
            room: room.into(),
            since: None,
            history: None,
        }
    }
}

/// Where a room's history stands: its epoch, and a message's offset in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

/// Why a `join` with `since` could not replay everything after it.
/// A client shows "some messages may be missing" for any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unrecovered {
    /// The room's history was lost (Redis restarted, or it expired): a new epoch.
    EpochChanged,
    /// The oldest message kept is later than the one after `since`.
    TooOld,
    /// The history cannot be read now (Redis unreachable).
    Unavailable,
}

impl Unrecovered {
    /// For a person.
    pub fn describe(self) -> &'static str {
        match self {
            Self::EpochChanged => "the room's history was lost",
            Self::TooOld => "older messages are no longer kept",
            Self::Unavailable => "the history cannot be read right now",
        }
    }
}

/// A member of a room as `joined` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user: String,
    pub public_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceEvent {
    Join,
    Leave,
}

/// A frame from the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        user: String,
        connection: String,
    },
    Joined {
        room: String,
        members: Vec<Member>,
        /// Absent when the relay keeps no history.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        /// How many `message` frames of the room follow, before any live one.
        #[serde(default)]
        missed: u64,
        /// Only in answer to `since`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Unrecovered>,
    },
    Left {
        room: String,
    },
    Message {
        room: String,
        from: String,
        body: String,
        id: String,
        ts: u64,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        /// The room's history and the message's place in it; absent when no history is kept.
        /// Last, so that a relay can append them to a frame serialized without them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    },
    /// Messages before it may be missing; the next one has `offset + 1` in `epoch`.
    Gap {
        room: String,
        epoch: String,
        offset: u64,
    },
    Pong,
    Presence {
        room: String,
        user: String,
        event: PresenceEvent,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        public_key: Option<String>,
    },
    Error {
        code: String,
        detail: String,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
}

impl ServerFrame {
    pub fn error(code: &str, detail: impl Into<String>, reference: Option<String>) -> Self {
        Self::Error {
            code: code.to_owned(),
            detail: detail.into(),
            reference,
        }
    }

    /// A `joined` with no history: what a relay without history answers.
    pub fn joined(room: impl Into<String>, members: Vec<Member>) -> Self {
        Self::Joined {
            room: room.into(),
            members,
            epoch: None,
            offset: None,
            missed: 0,
            recovered: None,
            reason: None,
        }
    }

    pub fn to_json(&self) -> String {
        // These types hold only strings and integers: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why a room name is refused.
pub const ROOM_RULE: &str = "room names are 1 to 64 characters: letters and digits (Unicode) \
    of one script, '-', '_', '.', ':'";

/// Whether `name` is a valid room name. Its letters must come from one script (UTS #39's
/// single-script test), so that `lobby` and `lоbby` (Cyrillic о) cannot be two rooms that look
/// the same.
pub fn is_valid_room(name: &str) -> bool {
    use unicode_security::MixedScript;
    let chars = name.chars().count();
    (1..=64).contains(&chars)
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        && name.is_single_script()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_parse_as_specified() {
        let send: ClientFrame =
            serde_json::from_str(r#"{"type":"send","room":"lobby","body":"hi","ref":"c-17"}"#)
                .expect("send");
        assert_eq!(
            send,
            ClientFrame::Send {
                room: "lobby".into(),
                body: "hi".into(),
                reference: Some("c-17".into())
            }
        );
        assert_eq!(
            serde_json::from_str::<ClientFrame>(r#"{"type":"ping"}"#).expect("ping"),
            ClientFrame::Ping
        );
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"dance"}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"join"}"#).is_err());
    }

    #[test]
    fn server_frames_serialize_as_specified() {
        let frame = ServerFrame::Presence {
            room: "lobby".into(),
            user: "bob".into(),
            event: PresenceEvent::Leave,
            public_key: None,
        };
        assert_eq!(
            frame.to_json(),
            r#"{"type":"presence","room":"lobby","user":"bob","event":"leave"}"#
        );
        assert_eq!(ServerFrame::Pong.to_json(), r#"{"type":"pong"}"#);
    }

    #[test]
    fn join_takes_a_position_or_a_history_and_refuses_malformed_ones() {
        let join: ClientFrame = serde_json::from_str(
            r#"{"type":"join","room":"lobby","since":{"epoch":"kQxTzLpa","offset":41}}"#,
        )
        .expect("join with since");
        assert_eq!(
            join,
            ClientFrame::Join {
                room: "lobby".into(),
                since: Some(Position {
                    epoch: "kQxTzLpa".into(),
                    offset: 41
                }),
                history: None
            }
        );
        for bad in [
            r#"{"type":"join","room":"lobby","since":{"epoch":"e","offset":-1}}"#,
            r#"{"type":"join","room":"lobby","since":{"epoch":"e"}}"#,
            r#"{"type":"join","room":"lobby","since":"e:41"}"#,
            r#"{"type":"join","room":"lobby","since":{"epoch":7,"offset":1}}"#,
            r#"{"type":"join","room":"lobby","history":-5}"#,
            r#"{"type":"join","room":"lobby","history":1e40}"#,
            r#"{"type":"join","room":"lobby","history":"all"}"#,
        ] {
            assert!(serde_json::from_str::<ClientFrame>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn message_frames_end_with_their_place_in_the_history() {
        let frame = ServerFrame::Message {
            room: "lobby".into(),
            from: "alice".into(),
            body: "hi".into(),
            id: "r-1".into(),
            ts: 5,
            reference: None,
            epoch: Some("kQxTzLpa".into()),
            offset: Some(42),
        };
        assert!(
            frame
                .to_json()
                .ends_with(r#","epoch":"kQxTzLpa","offset":42}"#)
        );
    }

    #[test]
    fn room_names_follow_the_rules() {
        for good in [
            "lobby",
            "a",
            "x:y.z-w_1",
            "salon-café",
            "房间",
            &"r".repeat(64),
        ] {
            assert!(is_valid_room(good), "{good}");
        }
        for bad in [
            "",
            "with space",
            "semi;colon",
            "slash/",
            &"r".repeat(65),
            "l\u{043e}bby",
        ] {
            assert!(!is_valid_room(bad), "{bad}");
        }
    }
}
