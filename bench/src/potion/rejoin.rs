//! `potion-bench --rejoin N`: how long a client coming back takes to get what it missed. One
//! member is away while N messages are sent, then reconnects to another relay and rejoins with
//! `since`; measured from sending `join` to reading the last replayed message, over 20 rounds.

use std::time::Instant;

use ilo_client::rest::Api;
use ilo_client::ws::{self, Options as WsOptions, Presented, Receiver};
use ilo_client::{ClientFrame, Position, ServerFrame};
use serde_json::json;

use super::{Options, joined, next_frame, users};
use crate::stats::{Samples, round};

const ROUNDS: usize = 20;

pub(super) async fn rejoin(options: &Options, api: &Api, missed: usize) -> anyhow::Result<()> {
    let tokens = users(api, 2).await?;
    let room = format!("rejoin-{:x}", std::process::id());
    let (first, last) = (
        &options.relays[0],
        &options.relays[options.relays.len() - 1],
    );
    let (mut sender, mut echoes) = joined(first, &tokens[0], &room).await?;
    let mut since: Option<Position> = None;
    let (mut to_join, mut to_last) = (Samples::default(), Samples::default());
    for round_no in 0..=ROUNDS {
        for _ in 0..missed {
            let body = "x".repeat(options.body_bytes);
            let send = ClientFrame::Send {
                room: room.clone(),
                body,
                reference: None,
            };
            sender.send(&send).await?;
        }
        for _ in 0..missed {
            next_message(&mut echoes).await?;
        }
        let connection =
            ws::connect(last, &tokens[1], Presented::Header, WsOptions::default()).await?;
        let (mut member, mut incoming) = connection.split();
        let started = Instant::now();
        let join = ClientFrame::Join {
            room: room.clone(),
            since: since.clone(),
            history: None,
        };
        member.send(&join).await?;
        let replayed = loop {
            if let ServerFrame::Joined {
                epoch,
                offset,
                missed,
                ..
            } = next_frame(&mut incoming).await?
            {
                if since.is_none() {
                    since = epoch
                        .zip(offset)
                        .map(|(epoch, offset)| Position { epoch, offset });
                }
                break missed;
            }
        };
        to_join.push(started.elapsed());
        for _ in 0..replayed {
            if let ServerFrame::Message { epoch, offset, .. } = next_message(&mut incoming).await? {
                since = epoch
                    .zip(offset)
                    .map(|(epoch, offset)| Position { epoch, offset });
            }
        }
        if round_no > 0 {
            anyhow::ensure!(
                replayed as usize == missed,
                "{replayed} replayed, {missed} missed"
            );
            to_last.push(started.elapsed());
        }
    }
    let figures = |s: &mut Samples| json!({"p50": round(s.quantile_ms(0.5), 2), "p99": round(s.quantile_ms(0.99), 2), "max": round(s.quantile_ms(1.0), 2)});
    let report = json!({
        "mode": "rejoin",
        "missed": missed,
        "rounds": ROUNDS,
        "joined_ms": figures(&mut to_join),
        "last_replayed_ms": figures(&mut to_last),
    });
    println!("{report}");
    Ok(())
}

async fn next_message(incoming: &mut Receiver) -> anyhow::Result<ServerFrame> {
    loop {
        let frame = next_frame(incoming).await?;
        if matches!(frame, ServerFrame::Message { .. }) {
            return Ok(frame);
        }
    }
}
