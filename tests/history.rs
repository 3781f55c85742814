//! History and recovery (`potion-protocol.md`, "History and recovery"): what a client missed
//! while away is replayed on any relay, the seam between replay and live messages holds under
//! load, relays repair themselves after losing their subscription, a Redis that lost its data
//! says so, and a crashed relay's users leave once each. Real Redis (the replay, the seam and
//! the history's bound also on a Redis Cluster), relays in this process or as processes where
//! the fault needs it.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::bus::{BusKind, SharedBus};
use support::process::Process;
use support::redis::PrivateRedis;
use support::relay::{TestRelay, user};
use support::ws::Ws;
use support::{Backend, TestApp};

async fn redis() -> PrivateRedis {
    PrivateRedis::start_async().await
}

/// `n` relays on `redis`, keeping 1,000 messages per room.
async fn relays(api: &TestApp, redis: &PrivateRedis, n: usize) -> Vec<TestRelay> {
    TestRelay::several(api, &redis.url(), n, |c| c.history_size = 1_000).await
}

on_one_redis_and_a_cluster!(
    a_member_back_on_another_relay_gets_exactly_what_it_missed_then_the_live_messages,
    members_joining_during_a_full_rate_stream_see_contiguous_offsets,
    a_member_that_missed_more_than_the_history_keeps_gets_too_old_and_the_last_ones,
);

/// A test app and `n` relays on a new bus of `kind`, keeping `history` messages per room.
async fn setup(kind: BusKind, n: usize, history: usize) -> (TestApp, SharedBus, Vec<TestRelay>) {
    let (api, bus) = (
        TestApp::spawn(Backend::Sqlite).await,
        SharedBus::start(kind).await,
    );
    let relays = TestRelay::several_on(&api, &bus, n, |c| c.history_size = history).await;
    (api, bus, relays)
}

fn offset(frame: &Value) -> u64 {
    frame["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("no offset: {frame}"))
}

fn since(frame: &Value) -> Value {
    json!({"since": {"epoch": frame["epoch"], "offset": frame["offset"]}})
}

/// Sends `range` as bodies to `room`, each accepted before the next (its echo read back).
async fn send_all(ws: &mut Ws, room: &str, range: std::ops::Range<usize>) {
    for n in range {
        let body = n.to_string();
        ws.send(json!({"type": "send", "room": room, "body": body, "ref": body}))
            .await;
        while ws.next_of("message").await["ref"] != json!(body) {}
    }
}

/// Asserts that `messages` carry bodies `first..` and offsets `offset..`, one after another.
fn assert_contiguous(messages: &[Value], first_body: usize, first_offset: u64) {
    for (i, message) in messages.iter().enumerate() {
        assert_eq!(
            (message["body"].as_str().unwrap(), offset(message)),
            (
                (first_body + i).to_string().as_str(),
                first_offset + i as u64
            ),
            "message {i} of {}",
            messages.len()
        );
    }
}

async fn a_member_back_on_another_relay_gets_exactly_what_it_missed_then_the_live_messages(
    kind: BusKind,
) {
    let (api, _bus, relays) = setup(kind, 2, 1_000).await;
    let mut sender = relays[0].connect(&user(&api, "sender").await).await;
    let member_token = user(&api, "member").await;
    let mut member = relays[1].connect(&member_token).await;
    sender.join("river").await;
    let joined = member.join("river").await;
    assert_eq!(
        (joined["offset"].as_u64(), &joined["missed"]),
        (Some(0), &json!(0))
    );

    send_all(&mut sender, "river", 0..100).await;
    let seen = member.messages(100).await;
    assert_contiguous(&seen, 0, 1);
    let last = seen.last().unwrap().clone();
    drop(member);

    // 200 messages while it is away, then it comes back on the other relay while 200 more
    // are being sent.
    send_all(&mut sender, "river", 100..300).await;
    let still_sending = tokio::spawn(async move {
        send_all(&mut sender, "river", 300..500).await;
        sender
    });
    let mut member = relays[0].connect(&member_token).await;
    let joined = member.join_with("river", since(&last)).await;
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(joined["epoch"], last["epoch"]);
    let missed = joined["missed"].as_u64().unwrap();
    assert!(missed >= 200, "{joined}");
    assert_eq!(offset(&joined), offset(&last) + missed);
    let rest = member.messages(400).await;
    assert_contiguous(&rest, 100, 101);
    let _sender = still_sending.await.unwrap();
    member.send(json!({"type": "ping"})).await;
    assert_eq!(
        member.next().await["type"],
        "pong",
        "nothing comes twice after the last one"
    );
}

async fn members_joining_during_a_full_rate_stream_see_contiguous_offsets(kind: BusKind) {
    let (api, _bus, relays) = setup(kind, 2, 1_000).await;
    let mut sender = relays[0].connect(&user(&api, "torrent").await).await;
    sender.join("flood").await;
    let (stop, mut stopping) = tokio::sync::watch::channel(false);
    let streaming = tokio::spawn(async move {
        let mut n = 0;
        while !*stopping.borrow_and_update() {
            send_all(&mut sender, "flood", n..n + 10).await;
            n += 10;
        }
        n
    });
    let token = user(&api, "joiner").await;
    for round in 0..20 {
        let mut joiner = relays[round % 2].connect(&token).await;
        let ask = if round % 4 < 2 {
            json!({"history": 5})
        } else {
            json!({})
        };
        let joined = joiner.join_with("flood", ask).await;
        let (at, missed) = (offset(&joined), joined["missed"].as_u64().unwrap());
        let frames = joiner.messages(missed as usize + 20).await;
        let offsets: Vec<u64> = frames.iter().map(offset).collect();
        let expected: Vec<u64> = (at + 1 - missed..at + 21).collect();
        assert_eq!(offsets, expected, "round {round}: {joined}");
        assert!(round % 4 >= 2 || missed == 5.min(at), "{joined}");
    }
    stop.send(true).unwrap();
    assert!(streaming.await.unwrap() > 400, "the stream kept flowing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_whose_subscription_is_killed_repairs_itself_from_the_history() {
    let (api, redis) = (TestApp::spawn(Backend::Sqlite).await, redis().await);
    let relays = relays(&api, &redis, 2).await;
    let mut sender = relays[0].connect(&user(&api, "talker").await).await;
    let mut reader = relays[1].connect(&user(&api, "listener").await).await;
    sender.join("cut").await;
    reader.join("cut").await;
    let reading = tokio::spawn(async move { reader.messages(300).await });
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for chunk in 0..3 {
        let start = chunk * 100;
        // The sender's own echo travels through its relay's subscription too: send without
        // waiting for it, at a steady pace, while both subscriptions are cut.
        for n in start..start + 100 {
            let body = n.to_string();
            sender
                .send(json!({"type": "send", "room": "cut", "body": body}))
                .await;
            if n == start + 30 {
                let killed: i64 = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("pubsub")
                    .query_async(&mut admin)
                    .await
                    .unwrap();
                assert!(killed >= 2, "both relays' subscriptions were cut");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let received = tokio::time::timeout(Duration::from_secs(20), reading)
        .await
        .expect("every message arrives")
        .unwrap();
    assert_contiguous(&received, 0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_gives_a_gap_and_a_new_epoch() {
    let (api, mut redis) = (TestApp::spawn(Backend::Sqlite).await, redis().await);
    let relays = relays(&api, &redis, 2).await;
    let mut alice = relays[0].connect(&user(&api, "alice").await).await;
    let bob_token = user(&api, "bob").await;
    let mut bob = relays[1].connect(&bob_token).await;
    alice.join("fragile").await;
    bob.join("fragile").await;
    send_all(&mut alice, "fragile", 0..3).await;
    let before = bob.messages(3).await.pop().unwrap();

    let _redis = tokio::task::spawn_blocking(move || {
        redis.restart_after(Duration::from_millis(300));
        redis
    })
    .await
    .unwrap();
    // Bob, still connected, is told that messages may be missing, and where the room stands.
    let gap = bob.next_of_within("gap", Duration::from_secs(15)).await;
    assert_eq!(
        (&gap["room"], &gap["offset"]),
        (&json!("fragile"), &json!(0))
    );
    assert_ne!(gap["epoch"], before["epoch"]);

    // Messages after it carry the new epoch, from offset 1.
    let deadline = Instant::now() + Duration::from_secs(10);
    let message = loop {
        alice
            .send(json!({"type": "send", "room": "fragile", "body": "after"}))
            .await;
        if let Ok(frame) =
            tokio::time::timeout(Duration::from_millis(500), bob.next_of("message")).await
        {
            break frame;
        }
        assert!(Instant::now() < deadline, "messages flow again");
    };
    assert_eq!(
        (&message["epoch"], message["offset"].as_u64()),
        (&gap["epoch"], Some(1))
    );

    // A member rejoining with where it stood before is told the history was lost.
    let mut again = relays[0].connect(&bob_token).await;
    let joined = again.join_with("fragile", since(&before)).await;
    assert_eq!(
        (&joined["recovered"], &joined["reason"], &joined["epoch"]),
        (&json!(false), &json!("epoch_changed"), &gap["epoch"])
    );
}

async fn a_member_that_missed_more_than_the_history_keeps_gets_too_old_and_the_last_ones(
    kind: BusKind,
) {
    let (api, _bus, relays) = setup(kind, 1, 10).await;
    let relay = &relays[0];
    let mut sender = relay.connect(&user(&api, "chatty").await).await;
    let token = user(&api, "away").await;
    let mut away = relay.connect(&token).await;
    sender.join("short").await;
    away.join("short").await;
    send_all(&mut sender, "short", 0..1).await;
    let last = away.messages(1).await.pop().unwrap();
    drop(away);
    send_all(&mut sender, "short", 1..51).await;

    let mut away = relay.connect(&token).await;
    let joined = away.join_with("short", since(&last)).await;
    assert_eq!(
        (
            &joined["recovered"],
            &joined["reason"],
            &joined["missed"],
            &joined["offset"]
        ),
        (&json!(false), &json!("too_old"), &json!(10), &json!(51))
    );
    assert_contiguous(&away.messages(10).await, 41, 42);
}

/// A relay as a process on `redis`, with a 3 s lease; its WebSocket address.
async fn relay_process(api: &TestApp, redis: &PrivateRedis) -> (Process, String) {
    let addr = support::postgres::free_port();
    let process = Process::spawn(
        Command::new(support::binary("potion", "potion"))
            .env("POTION_ADDR", format!("127.0.0.1:{addr}"))
            .env("ILO_GRPC_URL", api.grpc_url())
            .env("REDIS_URL", redis.url())
            .env("POTION_LEASE_SECS", "3")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null()),
    );
    let url = format!("ws://127.0.0.1:{addr}/ws");
    support::wait_until_ok(
        &format!("http://127.0.0.1:{addr}/ready"),
        Duration::from_secs(10),
    )
    .await;
    (process, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_relays_users_leave_once_each_within_the_lease_unless_they_came_back() {
    let (api, redis) = (TestApp::spawn(Backend::Sqlite).await, redis().await);
    let survivor = TestRelay::spawn(&api, Some(&redis.url()), |c| c.lease_secs = 3).await;
    let (doomed, url) = relay_process(&api, &redis).await;
    let mut watcher = survivor.connect(&user(&api, "watcher").await).await;
    watcher.join("haunted").await;
    let (ghost, mover) = (user(&api, "ghost").await, user(&api, "mover").await);
    let mut on_doomed = Vec::new();
    for token in [&ghost, &mover] {
        let mut ws = support::ws::connect(&url, token, support::ws::Presented::Header)
            .await
            .unwrap();
        ws.welcome().await;
        ws.join("haunted").await;
        on_doomed.push(ws);
    }
    for _ in 0..2 {
        assert_eq!(watcher.next_of("presence").await["event"], "join");
    }

    doomed.kill(); // SIGKILL: no goodbye, its leases stay in Redis
    let killed = Instant::now();
    // The mover reconnects elsewhere before its lease runs out.
    let mut mover_again = survivor.connect(&mover).await;
    mover_again.join("haunted").await;

    let mut presence = Vec::new();
    let watch_for = Duration::from_secs(3 + 5);
    while let Some(left) = watch_for.checked_sub(killed.elapsed()) {
        if let Ok(frame) = tokio::time::timeout(left, watcher.next()).await
            && frame["type"] == "presence"
        {
            presence.push((
                frame["user"].clone(),
                frame["event"].clone(),
                killed.elapsed(),
            ));
        }
    }
    let events: Vec<_> = presence
        .iter()
        .map(|(u, e, _)| (u.clone(), e.clone()))
        .collect();
    assert_eq!(
        events,
        [(json!("ghost"), json!("leave"))],
        "one leave for the ghost, nothing for the mover: {presence:?}"
    );
    let mut newcomer = survivor.connect(&user(&api, "newcomer").await).await;
    let mut listed: Vec<_> = newcomer.join("haunted").await["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, ["mover", "newcomer", "watcher"]);
    drop(on_doomed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_relay_replays_from_memory_and_refuses_bad_positions_clearly() {
    let api = TestApp::spawn(Backend::Sqlite).await;
    let relay = TestRelay::spawn(&api, None, |_| {}).await;
    let mut sender = relay.connect(&user(&api, "solo").await).await;
    let token = user(&api, "roamer").await;
    let mut roamer = relay.connect(&token).await;
    sender.join("home").await;
    sender.join("elsewhere").await;
    roamer.join("home").await;
    send_all(&mut sender, "elsewhere", 0..3).await;
    send_all(&mut sender, "home", 0..5).await;
    let last = roamer.messages(5).await.pop().unwrap();
    drop(roamer);
    send_all(&mut sender, "home", 5..25).await;

    let mut roamer = relay.connect(&token).await;
    let joined = roamer.join_with("home", since(&last)).await;
    assert_eq!(
        (&joined["recovered"], &joined["missed"]),
        (&json!(true), &json!(20))
    );
    assert_contiguous(&roamer.messages(20).await, 5, 6);
    roamer.send(json!({"type": "leave", "room": "home"})).await;
    roamer.next_of("left").await;

    // An offset from the future, and another room's epoch: no replay of anything else.
    let mut ahead = since(&last);
    ahead["since"]["offset"] = json!(10_000);
    let joined = roamer.join_with("home", ahead).await;
    assert_eq!(
        (&joined["recovered"], &joined["reason"], &joined["missed"]),
        (&json!(false), &json!("epoch_changed"), &json!(0))
    );
    roamer.send(json!({"type": "leave", "room": "home"})).await;
    roamer.next_of("left").await;
    let mut other = roamer.join("elsewhere").await;
    other["offset"] = json!(1);
    let joined = roamer.join_with("home", since(&other)).await;
    assert_eq!(
        (&joined["recovered"], &joined["reason"]),
        (&json!(false), &json!("epoch_changed"))
    );
    for message in roamer
        .messages(joined["missed"].as_u64().unwrap() as usize)
        .await
    {
        assert_eq!(message["room"], "home", "never another room's messages");
    }

    // A first join asking for history gets at most what is kept; malformed asks are refused.
    let mut fresh = relay.connect(&user(&api, "fresh").await).await;
    let joined = fresh.join_with("home", json!({"history": 1_000_000})).await;
    assert_eq!(
        (&joined["missed"], &joined["offset"]),
        (&json!(25), &json!(25))
    );
    assert_contiguous(&fresh.messages(25).await, 0, 1);
    for bad in [
        json!({"type": "join", "room": "home", "history": -1, "ref": "h"}),
        json!({"type": "join", "room": "home", "history": 1e40, "ref": "h"}),
        json!({"type": "join", "room": "home", "since": {"epoch": "x"}, "ref": "s"}),
        json!({"type": "join", "room": "home", "since": "yesterday", "ref": "s"}),
        json!({"type": "join", "room": "home", "since": {"epoch": "x", "offset": -4}, "ref": "s"}),
    ] {
        fresh.send(bad.clone()).await;
        let error = fresh.next_of("error").await;
        assert_eq!(
            (&error["code"], &error["ref"]),
            (&json!("bad_frame"), &bad["ref"]),
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_history_messages_carry_no_place() {
    let api = TestApp::spawn(Backend::Sqlite).await;
    let relay = TestRelay::spawn(&api, None, |c| c.history_size = 0).await;
    let mut ws = relay.connect(&user(&api, "plain").await).await;
    let joined = ws.join("bare").await;
    assert!(
        joined.get("epoch").is_none() && joined.get("offset").is_none(),
        "{joined}"
    );
    send_all(&mut ws, "bare", 0..1).await;
    let joined = ws.join_with("bare", json!({"history": 5})).await;
    assert_eq!(joined["missed"], 0);
    ws.send(json!({"type": "send", "room": "bare", "body": "x"}))
        .await;
    let message = ws.next_of("message").await;
    assert!(
        message.get("epoch").is_none() && message.get("offset").is_none(),
        "{message}"
    );
}
