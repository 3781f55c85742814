//! `potion-bench`: users made through the REST API, clients spread round-robin over the relays
//! given, rooms of senders and listeners; one JSON line per measurement. With `--rate-steps` it
//! raises the send rate step by step until loss passes 0.1 % or p99 passes 100 ms; with
//! `--idle N` it opens N connections and reports the relays' memory per connection; with
//! `--rejoin N`, how long a client that missed N messages takes to get them back.
//! Run the relays with `POTION_SEND_RATE=0` (the per-connection limit off).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use futures_util::StreamExt as _;
use ilo_client::rest::Api;
use ilo_client::ws::{self, Incoming, Options as WsOptions, Presented, Receiver, Sender};
use ilo_client::{ClientFrame, ServerFrame};
use serde_json::json;

mod rejoin;

use crate::proc;
use crate::stats::{Samples, round};

const PASSWORD: &str = "Bench-password-1";

#[derive(clap::Parser)]
#[command(name = "potion-bench", about = "Load on potion relays over loopback")]
pub struct Options {
    /// ilo-api's REST base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// Relays' WebSocket URLs (`ws://127.0.0.1:8081/ws`), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    relays: Vec<String>,
    /// The relays' process ids, for CPU and memory figures.
    #[arg(long, value_delimiter = ',')]
    relay_pids: Vec<u32>,
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    #[arg(long, default_value_t = 50)]
    clients_per_room: usize,
    #[arg(long, default_value_t = 2)]
    senders_per_room: usize,
    /// Messages per second per sender.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Saturation: these per-sender rates in turn, stopping at the first that fails.
    #[arg(long, value_delimiter = ',')]
    rate_steps: Vec<f64>,
    #[arg(long, default_value_t = 100)]
    body_bytes: usize,
    /// Seconds of sending per measurement.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Idle mode: open this many connections, joined to rooms, and measure memory.
    #[arg(long)]
    idle: Option<usize>,
    /// Rejoin mode: a member misses this many messages, then rejoins with `since` on another
    /// relay; how long until it has them all.
    #[arg(long)]
    rejoin: Option<usize>,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let api = Api::new(options.api.trim_end_matches('/'));
    if let Some(connections) = options.idle {
        return idle(&options, &api, connections).await;
    }
    if let Some(missed) = options.rejoin {
        return rejoin::rejoin(&options, &api, missed).await;
    }
    let clients = options.rooms * options.clients_per_room;
    let tokens = users(&api, clients).await?;
    let epoch = Instant::now();
    let mut senders = Vec::new();
    let mut recorders = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let room = format!("bench-{}", i / options.clients_per_room);
        let url = &options.relays[i % options.relays.len()];
        let (sender, receiver) = joined(url, token, &room).await?;
        let recorder = Arc::new(Recorder::default());
        tokio::spawn(record(receiver, recorder.clone(), epoch));
        recorders.push(recorder);
        if i % options.clients_per_room < options.senders_per_room {
            senders.push((sender, room));
        }
    }
    let steps = if options.rate_steps.is_empty() {
        vec![options.rate]
    } else {
        options.rate_steps.clone()
    };
    let senders = Arc::new(tokio::sync::Mutex::new(senders));
    for rate in steps {
        let report = step(&options, &senders, &recorders, rate, epoch).await;
        println!("{report}");
        let (loss, p99) = (
            report["loss"].as_f64().unwrap_or(1.0),
            report["latency_ms"]["p99"].as_f64().unwrap_or(f64::MAX),
        );
        if loss > 0.001 || p99 > 100.0 {
            break;
        }
    }
    Ok(())
}

/// Per-connection tally of the messages received and their latencies.
#[derive(Default)]
struct Recorder {
    received: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

async fn step(
    options: &Options,
    senders: &Arc<tokio::sync::Mutex<Vec<(Sender, String)>>>,
    recorders: &[Arc<Recorder>],
    rate: f64,
    epoch: Instant,
) -> serde_json::Value {
    for r in recorders {
        r.received.store(0, Ordering::Relaxed);
        r.latencies_us.lock().map(|mut l| l.clear()).ok();
    }
    let cpu_before: f64 = options
        .relay_pids
        .iter()
        .map(|p| proc::cpu_seconds(*p))
        .sum();
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut all = senders.lock().await;
    let window = Duration::from_secs(options.seconds);
    let started = Instant::now();
    let count = all.len().max(1);
    let tasks: Vec<_> = all
        .drain(..)
        .enumerate()
        .map(|(k, (sender, room))| {
            let (sent, stop, body_bytes) = (sent.clone(), stop.clone(), options.body_bytes);
            // Senders are spread over the period, as independent people would be.
            let phase = Duration::from_secs_f64(k as f64 / count as f64 / rate.max(0.001));
            tokio::spawn(send_at(
                sender, room, rate, phase, body_bytes, sent, stop, epoch,
            ))
        })
        .collect();
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        if let Ok(pair) = task.await {
            all.push(pair);
        }
    }
    let sending = started.elapsed();
    // Let deliveries in flight arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = options
        .relay_pids
        .iter()
        .map(|p| proc::cpu_seconds(*p))
        .sum::<f64>()
        - cpu_before;

    let sent = sent.load(Ordering::Relaxed);
    let expected = sent * options.clients_per_room as u64;
    let received: u64 = recorders
        .iter()
        .map(|r| r.received.load(Ordering::Relaxed))
        .sum();
    let mut samples = Samples::default();
    for r in recorders {
        if let Ok(latencies) = r.latencies_us.lock() {
            samples.0.extend(
                latencies
                    .iter()
                    .map(|us| Duration::from_micros(u64::from(*us))),
            );
        }
    }
    let seconds = sending.as_secs_f64();
    json!({
        "relays": options.relays.len(),
        "connections": recorders.len(),
        "rooms": options.rooms,
        "senders": all.len(),
        "rate_per_sender": rate,
        "body_bytes": options.body_bytes,
        "seconds": round(seconds, 1),
        "messages_sent": sent,
        "deliveries_expected": expected,
        "deliveries_received": received,
        "loss": if expected == 0 { 0.0 } else { round(1.0 - received as f64 / expected as f64, 5) },
        "delivered_per_s": round(received as f64 / seconds, 0),
        "latency_ms": {
            "p50": round(samples.quantile_ms(0.5), 3),
            "p90": round(samples.quantile_ms(0.9), 3),
            "p99": round(samples.quantile_ms(0.99), 3),
            "max": round(samples.quantile_ms(1.0), 3),
        },
        "relay_cpu_s": round(cpu, 3),
        "relay_cpu_pct_of_one_core": round(100.0 * cpu / (seconds + 2.0), 1),
        "relay_cpu_us_per_delivery": if received == 0 { f64::NAN } else { round(cpu * 1e6 / received as f64, 3) },
    })
}

#[allow(clippy::too_many_arguments)]
async fn send_at(
    mut sender: Sender,
    room: String,
    rate: f64,
    phase: Duration,
    body_bytes: usize,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
) -> (Sender, String) {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        // The body starts with the send time, so any receiver can tell the latency.
        let mut body = format!("{:016}", epoch.elapsed().as_micros());
        body.extend(std::iter::repeat_n(
            'x',
            body_bytes.saturating_sub(body.len()),
        ));
        let frame = ClientFrame::Send {
            room: room.clone(),
            body,
            reference: None,
        };
        if sender.send(&frame).await.is_err() {
            break;
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
    (sender, room)
}

async fn record(mut receiver: Receiver, recorder: Arc<Recorder>, epoch: Instant) {
    while let Ok(Incoming::Text(text)) = receiver.recv().await {
        // Cheaper than parsing the frame: the body's first 16 characters are the send time.
        let Some(at) = text.find("\"body\":\"") else {
            continue;
        };
        let start = at + 8;
        let Some(sent_us) = text
            .get(start..start + 16)
            .and_then(|d| d.parse::<u128>().ok())
        else {
            continue;
        };
        let latency = epoch.elapsed().as_micros().saturating_sub(sent_us);
        recorder.received.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut latencies) = recorder.latencies_us.lock() {
            latencies.push(u32::try_from(latency).unwrap_or(u32::MAX));
        }
    }
}

/// Connects, reads the welcome, joins `room` and waits for `joined`.
async fn joined(url: &str, token: &str, room: &str) -> anyhow::Result<(Sender, Receiver)> {
    let connection = ws::connect(url, token, Presented::Header, WsOptions::default())
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let (mut sender, mut receiver) = connection.split();
    sender.send(&ClientFrame::join(room)).await?;
    while !matches!(
        next_frame(&mut receiver).await.context("while joining")?,
        ServerFrame::Joined { .. }
    ) {}
    Ok((sender, receiver))
}

/// The next frame this client understands; an error once the relay closes.
async fn next_frame(incoming: &mut Receiver) -> anyhow::Result<ServerFrame> {
    loop {
        match incoming.recv().await? {
            Incoming::Text(text) => {
                if let Ok(frame) = serde_json::from_str(&text) {
                    return Ok(frame);
                }
            }
            Incoming::Closed(code) => anyhow::bail!("closed with {code}"),
        }
    }
}

/// `count` new users, logged in; their tokens. Usernames are unique per run.
async fn users(api: &Api, count: usize) -> anyhow::Result<Vec<String>> {
    let run = format!("{:x}", std::process::id());
    let public_key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    let key = api.new_api_key().await?;
    let mut tokens = Vec::with_capacity(count);
    let mut pending = futures_util::stream::iter((0..count).map(|i| {
        let (api, key, public_key, name) = (
            api.clone(),
            key.clone(),
            public_key.clone(),
            format!("b{run}-{i}"),
        );
        async move {
            api.register(&name, PASSWORD, &public_key, &key).await?;
            anyhow::Ok(api.login(&name, PASSWORD, &key).await?.token)
        }
    }))
    .buffer_unordered(8);
    while let Some(token) = pending.next().await {
        tokens.push(token?);
    }
    eprintln!("potion-bench: {count} users ready");
    Ok(tokens)
}

async fn idle(options: &Options, api: &Api, connections: usize) -> anyhow::Result<()> {
    // Many connections share a user: the relay's cost is per connection, not per user.
    let tokens = users(api, connections.div_ceil(100).max(1)).await?;
    let rss_before: u64 = options.relay_pids.iter().map(|p| proc::rss_bytes(*p)).sum();
    let mut open = Vec::with_capacity(connections);
    for chunk_start in (0..connections).step_by(200) {
        let chunk = (chunk_start..(chunk_start + 200).min(connections)).map(|i| {
            let url = options.relays[i % options.relays.len()].clone();
            let token = tokens[i % tokens.len()].clone();
            let room = format!("idle-{}", i % 200);
            async move { joined(&url, &token, &room).await }
        });
        for pair in futures_util::future::join_all(chunk).await {
            open.push(pair?);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after: u64 = options.relay_pids.iter().map(|p| proc::rss_bytes(*p)).sum();
    let per_connection = (rss_after.saturating_sub(rss_before)) as f64 / connections as f64;
    println!(
        "{}",
        json!({
            "mode": "idle",
            "relays": options.relays.len(),
            "connections": open.len(),
            "relay_rss_before_mib": round(rss_before as f64 / 1048576.0, 1),
            "relay_rss_after_mib": round(rss_after as f64 / 1048576.0, 1),
            "relay_rss_per_connection_kib": round(per_connection / 1024.0, 2),
        })
    );
    Ok(())
}
