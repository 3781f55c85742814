//! Interactive use on a terminal: a line is a message to the current room; `/commands` join,
//! leave and change rooms. What arrives is printed as it comes.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use ilo_client::chat::{Chat, Event};
use ilo_client::{PresenceEvent, ServerFrame};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::Args;

const HELP: &str = "commands:
/join <room>   join a room and make it the current one
/go <room>     change rooms: leave the current one, join this one
/leave [room]  leave a room (the current one by default)
/rooms         the rooms you are in
/who           the members of the current room
/quit          leave (Ctrl-D too)
Anything else is sent to the current room.";

#[derive(Default)]
struct Rooms {
    current: Option<String>,
    members: BTreeMap<String, BTreeSet<String>>,
}

pub async fn run(mut chat: Chat, args: &Args) -> anyhow::Result<()> {
    let mut rooms = Rooms {
        current: args.room.first().cloned(),
        ..Rooms::default()
    };
    println!("Type a message, or /help.");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            event = chat.next() => match event? {
                Event::Frame(frame) => {
                    rooms.track(&frame);
                    show(&frame, args.json);
                }
                Event::Reconnecting { delay, .. } => {
                    println!("* connection lost; reconnecting in {delay:.1?}");
                }
                Event::Reconnected => println!("* reconnected; rejoining {} room(s)", chat.rooms().len()),
            },
            line = lines.next_line() => {
                let Some(line) = line.context("cannot read stdin")? else { break };
                if !command(&mut chat, &mut rooms, line.trim_end()).await {
                    break;
                }
            }
        }
    }
    chat.close().await;
    Ok(())
}

/// Acts on one typed line; false to quit.
async fn command(chat: &mut Chat, rooms: &mut Rooms, line: &str) -> bool {
    let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
    let arg = arg.trim();
    let sent = match (verb, arg) {
        ("/quit", _) => return false,
        ("/join", room) if !room.is_empty() => {
            rooms.current = Some(room.to_owned());
            chat.join(room).await
        }
        ("/go", room) if !room.is_empty() => {
            let left = match rooms.current.replace(room.to_owned()) {
                Some(old) if old != room => chat.leave(&old).await,
                _ => Ok(()),
            };
            left.and(chat.join(room).await)
        }
        ("/leave", "") => match rooms.current.clone() {
            Some(current) => chat.leave(&current).await,
            None => return say_back("you are in no room"),
        },
        ("/leave", room) => chat.leave(room).await,
        ("/help", _) => return say_back(HELP),
        ("/rooms", _) => return say_back(&format!("rooms: {}", chat.rooms().join(", "))),
        ("/who", _) => return say_back(&rooms.members_line()),
        (verb, _) if verb.starts_with('/') => return say_back("unknown command; /help lists them"),
        _ if line.is_empty() => return true,
        _ => match rooms.current.clone() {
            Some(room) => chat.say(&room, line, None).await,
            None => return say_back("join a room first: /join <room>"),
        },
    };
    if let Err(e) = sent {
        println!("* {e}");
    }
    true
}

/// Answers the user on the terminal; keeps going.
fn say_back(text: &str) -> bool {
    println!("* {text}");
    true
}

impl Rooms {
    fn track(&mut self, frame: &ServerFrame) {
        match frame {
            ServerFrame::Joined { room, members } => {
                let names = members.iter().map(|m| m.user.clone()).collect();
                self.members.insert(room.clone(), names);
            }
            ServerFrame::Left { room } => {
                self.members.remove(room);
                if self.current.as_ref() == Some(room) {
                    self.current = self.members.keys().next().cloned();
                }
            }
            ServerFrame::Presence {
                room, user, event, ..
            } => {
                let members = self.members.entry(room.clone()).or_default();
                match event {
                    PresenceEvent::Join => members.insert(user.clone()),
                    PresenceEvent::Leave => members.remove(user),
                };
            }
            _ => {}
        }
    }

    fn members_line(&self) -> String {
        match self.current.as_ref().and_then(|r| self.members.get(r)) {
            Some(members) => {
                let names: Vec<&str> = members.iter().map(String::as_str).collect();
                format!("members: {}", names.join(", "))
            }
            None => "you are in no room".to_owned(),
        }
    }
}

/// Prints a frame for a person, or as the relay's JSON with `json`. Only messages, room
/// changes, presence and errors are shown; welcome and pong are bookkeeping.
pub fn show(frame: &ServerFrame, json: bool) {
    if json {
        if matches!(frame, ServerFrame::Message { .. }) {
            println!("{}", frame.to_json());
        } else if let ServerFrame::Error { code, detail, .. } = frame {
            eprintln!("ilo-chat: {code}: {detail}");
        }
        return;
    }
    match frame {
        ServerFrame::Message {
            room, from, body, ..
        } => println!("[{room}] {from}: {body}"),
        ServerFrame::Joined { room, members } => {
            println!("* joined {room} ({} here)", members.len());
        }
        ServerFrame::Left { room } => println!("* left {room}"),
        ServerFrame::Presence {
            room, user, event, ..
        } => {
            let verb = match event {
                PresenceEvent::Join => "joined",
                PresenceEvent::Leave => "left",
            };
            println!("* {user} {verb} {room}");
        }
        ServerFrame::Error { code, detail, .. } => println!("* error {code}: {detail}"),
        ServerFrame::Welcome { user, .. } => println!("* connected as {user}"),
        ServerFrame::Pong => {}
    }
}
