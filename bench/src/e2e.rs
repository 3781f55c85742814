//! `ilo-bench e2e`: what ilo-e2e/1 costs a client, on one core: sealing a text for 1, 10, 50
//! and 100 recipients (one HPKE wrap each, one AES-GCM, one signature), and opening one
//! (a signature check, one HPKE unwrap, one AES-GCM). Prints one JSON line per figure.

use std::time::Instant;

use ilo_e2e::{Body, Bundle, Keys};
use serde_json::json;

use crate::stats::{Samples, round};

#[derive(clap::Parser, Clone)]
pub struct Options {
    /// Timed runs per figure.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Characters of the text sealed.
    #[arg(long, default_value_t = 100)]
    text_chars: usize,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let me = Keys::generate();
    let others: Vec<Keys> = (1..100).map(|_| Keys::generate()).collect();
    let text = "x".repeat(options.text_chars);
    for n in [1usize, 10, 50, 100] {
        let recipients: Vec<&Bundle> = std::iter::once(me.bundle())
            .chain(others.iter().take(n - 1).map(Keys::bundle))
            .collect();
        let mut samples = Samples::default();
        let mut body_bytes = 0;
        for _ in 0..options.runs {
            let started = Instant::now();
            let body = ilo_e2e::seal(&me, "lobby", "me", &text, recipients.iter().copied())?;
            samples.push(started.elapsed());
            body_bytes = body.len();
        }
        print_figure("seal", n, body_bytes, &mut samples);
    }

    let fifty: Vec<&Bundle> = std::iter::once(me.bundle())
        .chain(others.iter().take(49).map(Keys::bundle))
        .collect();
    // The reader's record is the last one: the search for it is the longest.
    let reader = &others[48];
    let body = ilo_e2e::seal(&me, "lobby", "me", &text, fifty)?;
    let mut samples = Samples::default();
    for _ in 0..options.runs {
        let started = Instant::now();
        let Body::Sealed(envelope) = Body::parse(&body)? else {
            anyhow::bail!("sealed bodies carry the prefix");
        };
        envelope.open(reader, "lobby", "me", me.bundle())?;
        samples.push(started.elapsed());
    }
    print_figure("open", 50, body.len(), &mut samples);
    Ok(())
}

fn print_figure(what: &str, recipients: usize, body_bytes: usize, samples: &mut Samples) {
    println!(
        "{}",
        json!({
            "e2e": what,
            "recipients": recipients,
            "body_bytes": body_bytes,
            "runs": samples.len(),
            "p50_ms": round(samples.quantile_ms(0.5), 3),
            "p99_ms": round(samples.quantile_ms(0.99), 3),
        })
    );
}
