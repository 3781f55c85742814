//! Scripted use: stdin is not a terminal. Each line is one message to the first `--room`;
//! received messages go to stdout (JSON lines with `--json`). Once stdin ends, ilo-chat waits
//! until every line has come back from the relay (or was refused), then exits.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use anyhow::Context;
use ilo_client::ServerFrame;
use ilo_client::chat::{Chat, Event};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

use crate::Args;
use crate::terminal::show;

/// How long, after stdin ends, ilo-chat waits for its last messages to come back.
const CONFIRM_WITHIN: Duration = Duration::from_secs(10);

pub async fn run(mut chat: Chat, args: &Args) -> anyhow::Result<()> {
    let room = args
        .room
        .first()
        .context("scripts need --room: every line of stdin is sent there")?
        .clone();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut me = String::new();
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
                Event::Frame(frame) => {
                    if let ServerFrame::Welcome { user, .. } = &frame {
                        me.clone_from(user);
                    }
                    if let Some(reference) = settled(&frame, &me)
                        && unconfirmed.remove(reference)
                        && matches!(frame, ServerFrame::Error { .. })
                    {
                        refused += 1;
                    }
                    show(&frame, args.json);
                }
                Event::Reconnecting { code, delay } => {
                    eprintln!("ilo-chat: disconnected ({}); retrying in {delay:.1?}", code.map_or("no close frame".into(), |c| c.to_string()));
                }
                Event::Reconnected => eprintln!("ilo-chat: reconnected"),
            },
            () = sleep_until(give_up), if give_up.is_some() && !args.follow => {
                anyhow::bail!("{} message(s) not confirmed by the relay within {CONFIRM_WITHIN:?}", unconfirmed.len() + outbox.len());
            }
        }
        while let Some((reference, body)) = outbox.front() {
            if chat
                .say(&room, body, Some(reference.clone()))
                .await
                .is_err()
            {
                break; // not connected: sent after the reconnect
            }
            unconfirmed.insert(reference.clone());
            outbox.pop_front();
        }
    }
    chat.close().await;
    anyhow::ensure!(
        refused == 0,
        "the relay refused {refused} of {read} message(s)"
    );
    Ok(())
}

/// The `ref` of a line this frame settles: our own message coming back, or an error about it.
fn settled<'f>(frame: &'f ServerFrame, me: &str) -> Option<&'f String> {
    match frame {
        ServerFrame::Message {
            from, reference, ..
        } if from == me => reference.as_ref(),
        ServerFrame::Error { reference, .. } => reference.as_ref(),
        _ => None,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
