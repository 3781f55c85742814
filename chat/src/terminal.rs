//! Interactive use on a terminal: a line is a message to the current room; `/commands` join,
//! leave and change rooms, and verify the people you talk to. What arrives is printed as it
//! comes.

use std::collections::BTreeSet;

use anyhow::Context;
use ilo_client::ServerFrame;
use ilo_client::chat::{Chat, Event, Received};
use ilo_client::e2e::Content;
use ilo_e2e::E2eError;
use ilo_e2e::safety::{grouped, safety_number};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{Args, KnownKeys, show};

const HELP: &str = "commands:
/join <room>      join a room and make it the current one
/go <room>        change rooms: leave the current one, join this one
/leave [room]     leave a room (the current one by default)
/rooms            the rooms you are in
/who              the members of the current room, and who cannot read encrypted messages
/verify <user>    your safety number with <user>: compare it with theirs, in person or on a call
/verified <user>  mark <user> verified once the numbers match; a later key change then
                  holds your messages until you /trust the new key
/trust <user>     accept <user>'s changed key
/quit             leave (Ctrl-D too)
Anything else is sent to the current room.";

#[derive(Default)]
struct View {
    current: Option<String>,
    rooms: BTreeSet<String>,
    /// Rooms whose last message shown was one not encrypted for you: the next are folded in.
    folded: BTreeSet<String>,
}

pub async fn run(
    chat: &mut Chat,
    args: &Args,
    mut known: Option<&mut KnownKeys>,
) -> anyhow::Result<()> {
    let mut view = View {
        current: args.room.first().cloned(),
        ..View::default()
    };
    if chat.e2e().is_none() {
        println!(
            "* plaintext mode: your messages are not encrypted, and anyone on the server side can read them"
        );
    }
    println!("Type a message, or /help.");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            event = chat.next() => match event? {
                Event::Message(message) => view.message(&message),
                Event::Frame(frame) => {
                    view.track(&frame);
                    if let Some(line) = show::frame_line(&frame) {
                        println!("{line}");
                    }
                }
                Event::KeyChanged(change) => println!("{}", show::key_change_line(&change)),
                Event::Reconnecting { delay, .. } => {
                    println!("* connection lost; reconnecting in {delay:.1?}");
                }
                Event::Reconnected => println!("* reconnected; rejoining {} room(s)", chat.rooms().len()),
            },
            line = lines.next_line() => {
                let Some(line) = line.context("cannot read stdin")? else { break };
                if !command(chat, &mut view, line.trim_end()).await {
                    break;
                }
            }
        }
        if let (Some(known), Some(e2e)) = (known.as_deref_mut(), chat.e2e()) {
            known.save(e2e.keyring())?;
        }
    }
    Ok(())
}

/// Acts on one typed line; false to quit.
async fn command(chat: &mut Chat, view: &mut View, line: &str) -> bool {
    let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
    let arg = arg.trim();
    let silent = |done: Result<(), String>| done.map(|()| String::new());
    let reply: Result<String, String> = match (verb, arg) {
        ("/quit", _) => return false,
        ("/join", room) if !room.is_empty() => {
            view.current = Some(room.to_owned());
            silent(chat.join(room).await.map_err(|e| e.to_string()))
        }
        ("/go", room) if !room.is_empty() => {
            let left = match view.current.replace(room.to_owned()) {
                Some(old) if old != room => chat.leave(&old).await,
                _ => Ok(()),
            };
            silent(left.and(chat.join(room).await).map_err(|e| e.to_string()))
        }
        ("/leave", "") => match view.current.clone() {
            Some(current) => silent(chat.leave(&current).await.map_err(|e| e.to_string())),
            None => Err("you are in no room".into()),
        },
        ("/leave", room) => silent(chat.leave(room).await.map_err(|e| e.to_string())),
        ("/help", _) => Ok(HELP.to_owned()),
        ("/rooms", _) => Ok(format!("rooms: {}", chat.rooms().join(", "))),
        ("/who", _) => Ok(members_line(chat, view)),
        ("/verify", user) if !user.is_empty() => verify(chat, user),
        ("/verified", user) if !user.is_empty() => mark_verified(chat, user),
        ("/trust", user) if !user.is_empty() => trust(chat, user),
        (verb, _) if verb.starts_with('/') => {
            Err("unknown command, or it needs an argument; /help lists them".into())
        }
        _ if line.is_empty() => Ok(String::new()),
        _ => match view.current.clone() {
            Some(room) => silent(chat.say(&room, line, None).await.map_err(|e| e.to_string())),
            None => Err("join a room first: /join <room>".into()),
        },
    };
    match reply {
        Ok(text) if text.is_empty() => {}
        Ok(text) | Err(text) => println!("* {text}"),
    }
    true
}

fn verify(chat: &Chat, user: &str) -> Result<String, String> {
    let e2e = chat
        .e2e()
        .ok_or("plaintext mode: there is nothing to verify")?;
    let me = chat.me().ok_or("not connected yet")?;
    let theirs = e2e
        .bundle_of(user)
        .ok_or_else(|| format!("{user} is in none of your rooms, or has no encryption key"))?;
    let number = safety_number((me, e2e.keys().bundle()), (user, theirs));
    Ok(format!(
        "safety number with {user}:\n  {}\nIf {user} sees the same number, type /verified {user}",
        grouped(&number)
    ))
}

fn mark_verified(chat: &mut Chat, user: &str) -> Result<String, String> {
    let e2e = chat
        .e2e_mut()
        .ok_or("plaintext mode: there is nothing to verify")?;
    if e2e.keyring().is_held(user) {
        return Err(format!(
            "{user}'s key changed: /verify {user}, then /trust {user} first"
        ));
    }
    if e2e.keyring_mut().verify(user) {
        Ok(format!(
            "{user} is verified; a change of their key will hold your messages until you /trust it"
        ))
    } else {
        Err(format!("no key known for {user}"))
    }
}

fn trust(chat: &mut Chat, user: &str) -> Result<String, String> {
    let e2e = chat
        .e2e_mut()
        .ok_or("plaintext mode: there are no keys to trust")?;
    if e2e.keyring_mut().trust(user) {
        Ok(format!(
            "accepted {user}'s new key; /verify {user} again to verify it"
        ))
    } else {
        Err(format!("no changed key of {user} is waiting"))
    }
}

fn members_line(chat: &Chat, view: &View) -> String {
    let Some(room) = view.current.as_ref().filter(|r| view.rooms.contains(*r)) else {
        return "you are in no room".to_owned();
    };
    let Some(e2e) = chat.e2e() else {
        return format!("members of {room}: see the joined and presence lines (plaintext mode)");
    };
    let names: Vec<String> = e2e
        .members(room)
        .into_iter()
        .map(|(user, has_key)| {
            let verified = e2e.keyring().get(&user).is_some_and(|k| k.verified);
            match (has_key, verified) {
                (false, _) => format!("{user} (no key: cannot read encrypted messages)"),
                (true, true) => format!("{user} (verified)"),
                (true, false) => user,
            }
        })
        .collect();
    format!("members of {room}: {}", names.join(", "))
}

impl View {
    fn track(&mut self, frame: &ServerFrame) {
        match frame {
            ServerFrame::Joined { room, .. } => {
                self.rooms.insert(room.clone());
            }
            ServerFrame::Left { room } => {
                self.rooms.remove(room);
                if self.current.as_ref() == Some(room) {
                    self.current = self.rooms.iter().next().cloned();
                }
            }
            _ => {}
        }
    }

    /// Prints a message; a run of messages not encrypted for you is one line.
    fn message(&mut self, message: &Received) {
        let not_for_me = message.content == Content::Unreadable(E2eError::NotForYou);
        let first = if not_for_me {
            self.folded.insert(message.room.clone())
        } else {
            self.folded.remove(&message.room);
            true
        };
        if first {
            println!("{}", show::message_line(message));
        }
    }
}
