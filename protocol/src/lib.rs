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
