//! `ilo-bench floor`: what the kernel alone charges a relay on loopback. One thread writes a
//! frame to `burst` of its connections, sleeps until the next tick and starts again, `ticks`
//! times a second: one wake and `burst` writes per message, as a relay that did nothing else
//! would. Readers on a tokio runtime take the bytes, as potion-bench's clients do. On loopback
//! the receiver's TCP processing and wake-up run inside the writer's system call, so they are
//! charged to the writer, as they are to a relay under potion-bench.

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncReadExt as _;

use crate::proc;
use crate::stats::round;

#[derive(clap::Parser, Clone)]
pub struct Options {
    /// Receiving connections.
    #[arg(long, default_value_t = 250)]
    connections: usize,
    /// Writes per wake (one relay's share of a room at the reference load: 25).
    #[arg(long, default_value_t = 25)]
    burst: usize,
    /// Wakes per second (messages per second reaching one relay at the reference load: 400).
    #[arg(long, default_value_t = 400)]
    ticks: u32,
    /// Bytes per write (about a `message` frame with a 100-byte body, header included).
    #[arg(long, default_value_t = 240)]
    frame_bytes: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut writers = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        let client = tokio::net::TcpStream::connect(addr).await?;
        let (server, _) = listener.accept()?;
        server.set_nodelay(true)?;
        writers.push(server);
        tokio::spawn(drain(client));
    }
    let writing = {
        let options = options.clone();
        tokio::task::spawn_blocking(move || write(&options, &mut writers))
    };
    let (writes, cpu_s, seconds) = writing.await??;
    let line = json!({
        "burst": options.burst,
        "ticks_per_s": options.ticks,
        "writes": writes,
        "writer_cpu_pct_of_one_core": round(cpu_s / seconds * 100.0, 1),
        "writer_cpu_us_per_write": round(cpu_s * 1e6 / writes as f64, 2),
    });
    println!("{line}");
    Ok(())
}

async fn drain(mut client: tokio::net::TcpStream) {
    let mut buf = vec![0; 64 * 1024];
    while matches!(client.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// The writing thread: (writes made, its CPU seconds, seconds it took).
fn write(options: &Options, writers: &mut [TcpStream]) -> anyhow::Result<(u64, f64, f64)> {
    let frame = vec![b'x'; options.frame_bytes];
    let tick = Duration::from_secs(1) / options.ticks.max(1);
    let ticks = options.seconds * u64::from(options.ticks);
    let (start, cpu_start) = (Instant::now(), proc::thread_cpu_seconds());
    let mut next = 0;
    for k in 1..=ticks {
        for _ in 0..options.burst {
            writers[next].write_all(&frame)?;
            next = (next + 1) % writers.len();
        }
        let due = start + tick * k as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    let writes = ticks * options.burst as u64;
    let cpu_s = proc::thread_cpu_seconds() - cpu_start;
    Ok((writes, cpu_s, start.elapsed().as_secs_f64()))
}
