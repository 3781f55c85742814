//! Several potion relays sharing one private Redis (and, for fan-out, order, presence and
//! revocation, a private Redis Cluster too), against a real ilo-api: fan-out, order, presence
//! and revocation across relays, and the faults operators meet.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::bus::{BusKind, SharedBus};
use support::redis::PrivateRedis;
use support::relay::{TestRelay, user};
use support::{Backend, TestApp};

async fn redis() -> PrivateRedis {
    PrivateRedis::start_async().await
}

async fn relays(api: &TestApp, redis: &PrivateRedis, n: usize) -> Vec<TestRelay> {
    TestRelay::several(api, &redis.url(), n, |_| {}).await
}

on_one_redis_and_a_cluster!(
    messages_and_presence_cross_relays,
    each_senders_order_holds_across_three_relays_without_duplicates,
    a_revocation_closes_the_session_on_every_relay,
);

/// A test app and `n` relays sharing a new bus of `kind`.
async fn setup(kind: BusKind, n: usize) -> (TestApp, SharedBus, Vec<TestRelay>) {
    let (api, bus) = (
        TestApp::spawn(Backend::Sqlite).await,
        SharedBus::start(kind).await,
    );
    let relays = TestRelay::several_on(&api, &bus, n, |_| {}).await;
    (api, bus, relays)
}

fn names(joined: &Value) -> Vec<String> {
    let mut names: Vec<String> = joined["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

async fn messages_and_presence_cross_relays(kind: BusKind) {
    let (api, _bus, relays) = setup(kind, 2).await;
    let mut alice = relays[0].connect(&user(&api, "alice").await).await;
    let mut bob = relays[1].connect(&user(&api, "bob").await).await;
    alice.join("lobby").await;
    let joined = bob.join("lobby").await;
    assert_eq!(
        names(&joined),
        ["alice", "bob"],
        "members on every relay are listed"
    );
    let presence = alice.next().await;
    assert_eq!(
        (&presence["type"], &presence["user"], &presence["event"]),
        (&json!("presence"), &json!("bob"), &json!("join"))
    );

    bob.send(json!({"type": "send", "room": "lobby", "body": "across", "ref": "x"}))
        .await;
    let (to_alice, to_bob) = (alice.next_text().await, bob.next_text().await);
    assert_eq!(to_alice, to_bob, "the same bytes on both relays");
    assert_eq!(
        serde_json::from_str::<Value>(&to_alice).unwrap()["body"],
        "across"
    );

    drop(bob);
    let presence = alice.next().await;
    assert_eq!(
        (&presence["user"], &presence["event"]),
        (&json!("bob"), &json!("leave"))
    );
}

async fn each_senders_order_holds_across_three_relays_without_duplicates(kind: BusKind) {
    const COUNT: usize = 1_000;
    let (api, _bus, relays) = setup(kind, 3).await;
    let mut receivers = Vec::new();
    for (i, relay) in relays.iter().enumerate() {
        let mut ws = relay
            .connect(&user(&api, &format!("reader{i}")).await)
            .await;
        ws.join("ordered").await;
        receivers.push(ws);
    }
    let mut senders = Vec::new();
    for (i, relay) in relays.iter().take(2).enumerate() {
        let mut ws = relay
            .connect(&user(&api, &format!("writer{i}")).await)
            .await;
        ws.join("ordered").await;
        senders.push(ws);
    }
    let reading: Vec<_> = receivers
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut seen: HashMap<String, Vec<usize>> = HashMap::new();
                while seen.values().map(Vec::len).sum::<usize>() < 2 * COUNT {
                    let frame = ws.next().await;
                    if frame["type"] == "message" {
                        let n = frame["body"].as_str().unwrap().parse().unwrap();
                        seen.entry(frame["from"].as_str().unwrap().to_owned())
                            .or_default()
                            .push(n);
                    }
                }
                // Nothing more arrives: no duplicates trailing behind.
                ws.send(json!({"type": "ping"})).await;
                assert_eq!(ws.next_of("pong").await["type"], "pong");
                seen
            })
        })
        .collect();
    let writing: Vec<_> = senders
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                for n in 0..COUNT {
                    let n = n.to_string();
                    ws.send(json!({"type": "send", "room": "ordered", "body": n, "ref": n}))
                        .await;
                    // A client reads what it is sent; every 50 messages, catch up to our own.
                    if n.ends_with("00") || n.ends_with("50") {
                        while ws.next().await["ref"] != json!(n) {}
                    }
                }
                ws
            })
        })
        .collect();
    // Keep the senders connected until every reader is done: closing a socket with unread
    // frames resets it, and the relay would lose what it had not read yet.
    let mut senders = Vec::new();
    for w in writing {
        senders.push(w.await.unwrap());
    }
    for r in reading {
        let seen = r.await.unwrap();
        for sender in ["writer0", "writer1"] {
            assert_eq!(
                seen[sender],
                (0..COUNT).collect::<Vec<_>>(),
                "{sender}: in order, once each"
            );
        }
    }
}

async fn a_revocation_closes_the_session_on_every_relay(kind: BusKind) {
    let (api, _bus, relays) = setup(kind, 2).await;
    let token = user(&api, "carol").await;
    let mut on_first = relays[0].connect(&token).await;
    let mut on_second = relays[1].connect(&token).await;
    let mut bystander = relays[1].connect(&user(&api, "dan").await).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    assert_eq!(api.logout(&token).await, 204);
    assert_eq!(on_first.closed_with().await, 4001);
    assert_eq!(on_second.closed_with().await, 4001);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    bystander.send(json!({"type": "ping"})).await;
    assert_eq!(bystander.next().await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_resumes_by_itself_after_redis_restarts() {
    let (api, mut redis) = (TestApp::spawn(Backend::Sqlite).await, redis().await);
    let relays = relays(&api, &redis, 2).await;
    let mut alice = relays[0].connect(&user(&api, "alice").await).await;
    let mut bob = relays[1].connect(&user(&api, "bob").await).await;
    alice.join("resilient").await;
    bob.join("resilient").await;

    redis.kill();
    // Sends during the outage fail at once, with an error frame, once the relay has noticed.
    let mut refused = false;
    for _ in 0..50 {
        let started = Instant::now();
        alice
            .send(json!({"type": "send", "room": "resilient", "body": "lost?", "ref": "o"}))
            .await;
        let reply = alice.next().await;
        if reply["type"] == "error" {
            assert_eq!(
                (&reply["code"], &reply["ref"]),
                (&json!("bus_unavailable"), &json!("o"))
            );
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "answered at once"
            );
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "a send during the outage is refused");
    let ready = reqwest::get(relays[0].http_url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["bus"], "down");

    let _redis = tokio::task::spawn_blocking(move || {
        redis.restart_after(Duration::from_millis(500));
        redis
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut resumed = false;
    while Instant::now() < deadline && !resumed {
        alice
            .send(json!({"type": "send", "room": "resilient", "body": "back"}))
            .await;
        resumed = tokio::time::timeout(Duration::from_millis(500), bob.next_of("message"))
            .await
            .is_ok();
        let _ = tokio::time::timeout(Duration::from_millis(100), alice.next()).await;
    }
    assert!(
        resumed,
        "bob hears alice again within 10 s, no relay restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_relay_closes_its_clients_with_1001_and_no_one_else_notices() {
    let (api, redis) = (TestApp::spawn(Backend::Sqlite).await, redis().await);
    let mut relays = relays(&api, &redis, 3).await;
    let mut leaving = relays[0].connect(&user(&api, "erin").await).await;
    let mut a = relays[1].connect(&user(&api, "frank").await).await;
    let mut b = relays[2].connect(&user(&api, "grace").await).await;
    for ws in [&mut leaving, &mut a, &mut b] {
        ws.join("stay").await;
    }
    let stopping = tokio::spawn(relays.remove(0).stop());
    assert_eq!(leaving.closed_with().await, 1001);
    stopping.await.unwrap();
    a.send(json!({"type": "send", "room": "stay", "body": "still here"}))
        .await;
    assert_eq!(b.next_of("message").await["body"], "still here");
}
