//! Hostile clients, on loopback, each attack bounded in count and time: what the relay must
//! withstand (oversized frames, connection hoarding, presence churn, logging out while a
//! connection opens).
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::process::Process;
use support::relay::{TestRelay, user};
use support::ws::{self, Presented, Refused};
use support::{Backend, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A relay as its own process, so that its memory can be read from `/proc`.
struct RelayProcess {
    process: Process,
    port: u16,
}

impl RelayProcess {
    async fn start(api: &TestApp) -> Self {
        let port = support::postgres::free_port();
        let process = Process::spawn(
            Command::new(support::binary("potion", "potion"))
                .env("POTION_ADDR", format!("127.0.0.1:{port}"))
                .env("ILO_GRPC_URL", api.grpc_url())
                .env_remove("REDIS_URL")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null()),
        );
        let relay = Self { process, port };
        support::wait_until_ok(
            &format!("http://127.0.0.1:{port}/ready"),
            Duration::from_secs(30),
        )
        .await;
        relay
    }

    fn rss_kib(&mut self) -> u64 {
        let pid = self.process.child().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

/// A WebSocket upgrade done by hand, so that raw frame bytes can follow it.
async fn raw_upgrade(port: u16, token: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// A masked text frame header claiming `len` bytes.
fn header_claiming(len: u64) -> Vec<u8> {
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]); // the mask
    header
}

/// Reads server frames until a close frame; its code.
async fn close_code(stream: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Unmasked server frames: opcode, short length (the relay's frames here are small).
        while buf.len() >= 2 && buf.len() >= 2 + usize::from(buf[1] & 0x7f) {
            let len = usize::from(buf[1] & 0x7f);
            if buf[0] & 0x0f == 0x8 {
                return u16::from_be_bytes([buf[2], buf[3]]);
            }
            buf.drain(..2 + len);
        }
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, stream.read(&mut chunk))
            .await
            .expect("a close frame within 5 s")
            .unwrap();
        assert!(n > 0, "closed without a close frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_header_claiming_a_terabyte_is_refused_before_its_payload() {
    let api = TestApp::spawn(Backend::Sqlite).await;
    let mut relay = RelayProcess::start(&api).await;
    let token = user(&api, "mallory").await;

    // The header alone is enough: 1009, without waiting for a byte of payload.
    let mut stream = raw_upgrade(relay.port, &token).await;
    stream.write_all(&header_claiming(1 << 40)).await.unwrap();
    assert_eq!(close_code(&mut stream).await, 1009);

    // Streaming the payload anyway (at most 256 MiB, at most 5 s) does not fill the relay.
    let before = relay.rss_kib();
    let mut stream = raw_upgrade(relay.port, &token).await;
    stream.write_all(&header_claiming(1 << 40)).await.unwrap();
    let chunk = vec![0x55u8; 1 << 20];
    let started = Instant::now();
    let mut sent = 0usize;
    while sent < 256 << 20 && started.elapsed() < Duration::from_secs(5) {
        match tokio::time::timeout(Duration::from_secs(1), stream.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            _ => break, // refused: the relay stopped reading and closed
        }
    }
    let grown = relay.rss_kib().saturating_sub(before);
    assert!(
        grown < 8 * 1024,
        "the relay grew by {grown} KiB while {sent} bytes were pushed at it"
    );
    // A message just over the limit, fragmented, is refused as well.
    let mut stream = raw_upgrade(relay.port, &token).await;
    let mut fragment = vec![0x01, 0x80 | 126];
    fragment.extend_from_slice(&60_000u16.to_be_bytes());
    fragment.extend_from_slice(&[0, 0, 0, 0]);
    fragment.extend(std::iter::repeat_n(b'a', 60_000));
    stream.write_all(&fragment).await.unwrap();
    let mut last = vec![0x80, 0x80 | 126];
    last.extend_from_slice(&10_000u16.to_be_bytes());
    last.extend_from_slice(&[0, 0, 0, 0]);
    stream.write_all(&last).await.unwrap();
    assert_eq!(close_code(&mut stream).await, 1009);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_user_and_per_address() {
    let api = TestApp::spawn(Backend::Sqlite).await;
    let relay = TestRelay::spawn(&api, None, |c| {
        c.max_connections_per_user = 3;
        c.max_connections_per_address = 5;
    })
    .await;
    let url = relay.ws_url("/ws");
    let hoarder = user(&api, "hoarder").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(
            ws::connect(&url, &hoarder, Presented::Header)
                .await
                .unwrap(),
        );
    }
    let Err(Refused { status, body }) = ws::connect(&url, &hoarder, Presented::Header).await else {
        panic!("a fourth connection of one user was accepted");
    };
    assert_eq!(
        (status, &body["code"]),
        (429, &json!("too_many_connections"))
    );
    assert!(body["detail"].as_str().unwrap().contains("user"), "{body}");

    // Others from the same address fit until the address's cap.
    let (one, two) = (user(&api, "one").await, user(&api, "two").await);
    open.push(ws::connect(&url, &one, Presented::Header).await.unwrap());
    open.push(ws::connect(&url, &one, Presented::Header).await.unwrap());
    let Err(Refused { status, body }) = ws::connect(&url, &two, Presented::Header).await else {
        panic!("a sixth connection from one address was accepted");
    };
    assert_eq!(status, 429);
    assert!(
        body["detail"].as_str().unwrap().contains("address"),
        "{body}"
    );

    // A closed connection gives its place back.
    drop(open.remove(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match ws::connect(&url, &two, Presented::Header).await {
            Ok(_) => break,
            Err(Refused { status: 429, .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(refused) => panic!("{refused:?}"),
        }
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_churns_is_limited_and_members_hear_little_of_it() {
    let api = TestApp::spawn(Backend::Sqlite).await;
    let relay = TestRelay::spawn(&api, None, |c| {
        c.join_burst = 20;
        c.join_rate = 5;
    })
    .await;
    let mut bystander = relay.connect(&user(&api, "bystander").await).await;
    bystander.join("hall").await;
    let mut churner = relay.connect(&user(&api, "churner").await).await;
    // As fast as it can, for at most 3 s: join and leave, 500 times each.
    let started = Instant::now();
    for _ in 0..500 {
        let sent = churner
            .try_send(json!({"type": "join", "room": "hall"}))
            .await
            && churner
                .try_send(json!({"type": "leave", "room": "hall"}))
                .await;
        if !sent || started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    assert_eq!(
        churner.closed_with().await,
        4008,
        "a churning connection is closed"
    );
    // The bystander heard a bounded number of presence frames: about the burst.
    let mut presence = 0;
    while let Ok(frame) = tokio::time::timeout(Duration::from_millis(500), bystander.next()).await {
        if frame["type"] == "presence" {
            presence += 1;
        }
    }
    assert!(
        presence <= 2 * 21 + 10,
        "{presence} presence frames reached a bystander"
    );
    bystander.send(json!({"type": "ping"})).await;
    assert_eq!(bystander.next_of("pong").await["type"], "pong");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_wins_over_a_connection_opening_at_the_same_moment() {
    let api = TestApp::spawn(Backend::Sqlite).await;
    let relay = TestRelay::spawn(&api, None, |_| {}).await;
    let client = ilo_client::rest::Api::new(api.url(""));
    let key = api.create_user("racer").await;
    let url = relay.ws_url("/ws");
    let mut survived = Vec::new();
    for round in 0..300 {
        let token = client
            .login("racer", support::PASSWORD, &key)
            .await
            .unwrap()
            .token;
        let (opened, logged_out) = tokio::join!(
            ws::connect(&url, &token, Presented::Header),
            client.logout(&token),
        );
        logged_out.unwrap();
        if let Ok(mut ws) = opened {
            // It may have opened; it must then be closed as the session ended.
            let closed = tokio::time::timeout(Duration::from_secs(2), ws.closed_with()).await;
            if closed != Ok(4001) {
                survived.push(round);
            }
        }
        // And the token is refused from now on, cache or not.
        assert!(
            matches!(
                ws::connect(&url, &token, Presented::Header).await,
                Err(Refused { status: 401, .. })
            ),
            "round {round}: the revoked token still opens connections"
        );
    }
    assert!(
        survived.is_empty(),
        "connections survived their logout in rounds {survived:?}"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_garbage_tokens_reaches_ilo_api_once_per_token() {
    let api = TestApp::spawn(Backend::Sqlite).await;
    let relay = TestRelay::spawn(&api, None, |_| {}).await;
    for _ in 0..100 {
        let refused =
            ws::connect(&relay.ws_url("/ws"), "not-a-real-token", Presented::Header).await;
        assert!(matches!(refused, Err(Refused { status: 401, .. })));
    }
    let metrics = support::text_of(&relay.http_url("/metrics")).await;
    assert!(
        metrics.contains("potion_token_validation_seconds_count 1\n"),
        "one question to ilo-api for 100 upgrades: {metrics}"
    );
    api.stop().await;
}
