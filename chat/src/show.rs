//! How ilo-chat prints what arrives: readable lines, or one JSON object per message.

use ilo_client::chat::Received;
use ilo_client::e2e::{Content, KeyChange};
use ilo_client::{PresenceEvent, ServerFrame};
use ilo_e2e::E2eError;
use serde_json::json;

/// `{"room", "from", "text", "id", "ts", "encrypted"}`; `"text": null` and `"error"` (`format`,
/// `unknown_key`, `signature`, `not_for_you`, `decrypt`) for a message that did not open.
pub fn message_json(message: &Received) -> String {
    let (text, encrypted, error) = match &message.content {
        Content::Encrypted(text) => (Some(text.as_str()), true, None),
        Content::Plain(text) => (Some(text.as_str()), false, None),
        Content::Unreadable(e) => (None, true, Some(e.kind())),
    };
    let mut value = json!({
        "room": message.room,
        "from": message.from,
        "text": text,
        "id": message.id,
        "ts": message.ts,
        "encrypted": encrypted,
    });
    if let Some(error) = error {
        value["error"] = json!(error);
    }
    value.to_string()
}

/// A message for a person: what was written, with what could not be read said plainly.
pub fn message_line(message: &Received) -> String {
    let Received {
        room,
        from,
        content,
        ..
    } = message;
    match content {
        Content::Encrypted(text) => format!("[{room}] {from}: {}", indent(text)),
        Content::Plain(text) => format!("[{room}] {from} (not encrypted): {}", indent(text)),
        Content::Unreadable(E2eError::NotForYou) => {
            format!("[{room}] {from}: (a message not encrypted for you: sent before you joined)")
        }
        Content::Unreadable(E2eError::Signature | E2eError::UnknownSenderKey) => format!(
            "[{room}] {from}: (a message that could not be verified was dropped: it was altered, \
             or not sent by {from} in {room})"
        ),
        Content::Unreadable(e) => {
            format!("[{room}] {from}: (a message that could not be read: {e})")
        }
    }
}

/// Continuation lines of a multi-line message, indented under the first.
fn indent(text: &str) -> String {
    text.replace('\n', "\n    ")
}

pub fn key_change_line(change: &KeyChange) -> String {
    let KeyChange { user, rooms, held } = change;
    let rooms = rooms.join(", ");
    if *held {
        format!(
            "* {user}'s key changed, and you had verified {user}: nothing is sent to {rooms} \
             until you compare the new safety number (/verify {user}) and accept it \
             (/trust {user})"
        )
    } else {
        format!("* {user}'s key changed ({rooms}): /verify {user} to compare safety numbers")
    }
}

/// Room changes, presence and errors for a person; welcome and pong are bookkeeping.
pub fn frame_line(frame: &ServerFrame) -> Option<String> {
    Some(match frame {
        ServerFrame::Joined {
            room,
            members,
            missed,
            recovered,
            reason,
            ..
        } => {
            let mut line = format!("* joined {room} ({} here)", members.len());
            if *missed > 0 {
                line.push_str(&format!("; {missed} earlier messages follow"));
            }
            if *recovered == Some(false) {
                let why = reason.map_or("", |r| r.describe());
                line.push_str(&format!("; some messages may be missing ({why})"));
            }
            line
        }
        ServerFrame::Gap { room, .. } => format!("* some messages in {room} may be missing"),
        ServerFrame::Left { room } => format!("* left {room}"),
        ServerFrame::Presence {
            room, user, event, ..
        } => {
            let verb = match event {
                PresenceEvent::Join => "joined",
                PresenceEvent::Leave => "left",
            };
            format!("* {user} {verb} {room}")
        }
        ServerFrame::Error { code, detail, .. } => format!("* error {code}: {detail}"),
        ServerFrame::Welcome { user, .. } => format!("* connected as {user}"),
        ServerFrame::Pong | ServerFrame::Message { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use ilo_client::{ServerFrame, Unrecovered};

    use super::frame_line;

    fn joined(missed: u64, recovered: Option<bool>, reason: Option<Unrecovered>) -> ServerFrame {
        ServerFrame::Joined {
            room: "lobby".into(),
            members: Vec::new(),
            epoch: Some("e1".into()),
            offset: Some(57),
            missed,
            recovered,
            reason,
        }
    }

    #[test]
    fn a_rejoin_says_what_follows_and_what_may_be_missing() {
        assert_eq!(
            frame_line(&joined(16, Some(true), None)).as_deref(),
            Some("* joined lobby (0 here); 16 earlier messages follow")
        );
        assert_eq!(
            frame_line(&joined(10, Some(false), Some(Unrecovered::TooOld))).as_deref(),
            Some(
                "* joined lobby (0 here); 10 earlier messages follow; some messages may be \
                 missing (older messages are no longer kept)"
            )
        );
        let gap = ServerFrame::Gap {
            room: "lobby".into(),
            epoch: "e2".into(),
            offset: 0,
        };
        assert_eq!(
            frame_line(&gap).as_deref(),
            Some("* some messages in lobby may be missing")
        );
    }
}
