//! Scripted use: stdin is not a terminal. Each line is one message to the first `--room`,
//! encrypted like a typed one; received messages go to stdout (one JSON object each with
//! `--json`). Once stdin ends, ilo-chat waits until every line has come back from the relay
//! (or was refused), then exits.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use anyhow::Context;
use ilo_client::ServerFrame;
use ilo_client::chat::{Chat, Event};
use ilo_client::e2e::SendError;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

use crate::{Args, KnownKeys, show};

/// How long, after stdin ends, ilo-chat waits for its last messages to come back.
const CONFIRM_WITHIN: Duration = Duration::from_secs(10);

pub async fn run(
    chat: &mut Chat,
    args: &Args,
    mut known: Option<&mut KnownKeys>,
) -> anyhow::Result<()> {
    let room = args
        .room
        .first()
        .context("scripts need --room: every line of stdin is sent there")?
        .clone();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    // Lines read but not yet handed to the relay (at most one: stdin waits while it is full).
    let mut outbox: VecDeque<(String, String)> = VecDeque::new();
    let mut unconfirmed: HashSet<String> = HashSet::new();
    let (mut read, mut refused) = (0u64, 0u64);
    let mut eof_at: Option<Instant> = None;
    loop {
        if eof_at.is_some() && outbox.is_empty() && unconfirmed.is_empty() && !args.follow {
            break;
        }
        let give_up = eof_at.map(|at| at + CONFIRM_WITHIN);
        tokio::select! {
            line = lines.next_line(), if eof_at.is_none() && outbox.is_empty() => {
                match line.context("cannot read stdin")? {
                    Some(line) => {
                        read += 1;
                        outbox.push_back((format!("line-{read}"), line));
                    }
                    None => eof_at = Some(Instant::now()),
                }
            }
            event = chat.next() => match event? {
                Event::Message(message) => {
                    if chat.me() == Some(message.from.as_str()) && let Some(reference) = &message.reference {
                        unconfirmed.remove(reference);
                    }
                    print(&show::message_json(&message), &show::message_line(&message), args.json);
                }
                Event::Frame(frame) => {
                    if let ServerFrame::Error { reference: Some(reference), code, detail } = &frame {
                        if unconfirmed.remove(reference) {
                            refused += 1;
                        }
                        eprintln!("ilo-chat: {code}: {detail}");
                    } else if !args.json && let Some(line) = show::frame_line(&frame) {
                        println!("{line}");
                    }
                }
                Event::KeyChanged(change) => eprintln!("ilo-chat: {}", show::key_change_line(&change)),
                Event::Reconnecting { code, delay } => {
                    eprintln!("ilo-chat: disconnected ({}); retrying in {delay:.1?}", code.map_or("no close frame".into(), |c| c.to_string()));
                }
                Event::Reconnected => eprintln!("ilo-chat: reconnected"),
            },
            () = sleep_until(give_up), if give_up.is_some() && !args.follow => {
                anyhow::bail!("{} message(s) not confirmed by the relay within {CONFIRM_WITHIN:?}", unconfirmed.len() + outbox.len());
            }
        }
        if let (Some(known), Some(e2e)) = (known.as_deref_mut(), chat.e2e()) {
            known.save(e2e.keyring())?;
        }
        while let Some((reference, text)) = outbox.front() {
            match chat.say(&room, text, Some(reference.clone())).await {
                Ok(()) => {
                    unconfirmed.insert(reference.clone());
                }
                // Sent once connected and in the room.
                Err(SendError::NotConnected | SendError::NotJoined(_)) => break,
                Err(e) => {
                    eprintln!("ilo-chat: {reference} not sent: {e}");
                    refused += 1;
                }
            }
            outbox.pop_front();
        }
    }
    anyhow::ensure!(
        refused == 0,
        "{refused} of {read} message(s) were not sent or were refused by the relay"
    );
    Ok(())
}

fn print(json: &str, line: &str, as_json: bool) {
    println!("{}", if as_json { json } else { line });
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
