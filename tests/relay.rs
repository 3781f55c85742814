//! One potion relay on the in-process bus, against a real ilo-api, over real WebSockets.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::relay::{TestRelay, user};
use support::ws::{self, Presented};
use support::{Backend, TestApp};
use tokio_tungstenite::tungstenite::Message;

async fn setup() -> (TestApp, TestRelay) {
    let api = TestApp::spawn(Backend::Sqlite).await;
    let relay = TestRelay::spawn(&api, None, |_| {}).await;
    (api, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_chat_and_see_each_other_come_and_go() {
    let (api, relay) = setup().await;
    let (alice_token, bob_token) = (user(&api, "alice").await, user(&api, "bob").await);
    let mut alice = ws::connect(&relay.ws_url("/ws"), &alice_token, Presented::Header)
        .await
        .unwrap();
    let welcome = alice.welcome().await;
    assert_eq!(welcome["user"], "alice");
    assert!(
        welcome["connection"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );

    let joined = alice.join("lobby").await;
    assert_eq!(joined["room"], "lobby");
    assert_eq!(
        joined["members"],
        json!([{"user": "alice", "public_key": support::public_key()}])
    );

    let mut bob = relay.connect(&bob_token).await;
    let joined = bob.join("lobby").await;
    let mut users: Vec<&str> = joined["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    users.sort_unstable();
    assert_eq!(users, ["alice", "bob"]);
    let presence = alice.next().await;
    assert_eq!(
        presence,
        json!({"type": "presence", "room": "lobby", "user": "bob", "event": "join", "public_key": support::public_key()})
    );

    bob.send(json!({"type": "send", "room": "lobby", "body": "hi", "ref": "c-17"}))
        .await;
    let (to_alice, to_bob) = (alice.next_text().await, bob.next_text().await);
    assert_eq!(
        to_alice, to_bob,
        "the same bytes for every recipient, the sender included"
    );
    let message: serde_json::Value = serde_json::from_str(&to_alice).unwrap();
    assert_eq!(message["type"], "message");
    assert_eq!(
        (
            &message["room"],
            &message["from"],
            &message["body"],
            &message["ref"]
        ),
        (&json!("lobby"), &json!("bob"), &json!("hi"), &json!("c-17"))
    );
    assert!(message["id"].as_str().is_some_and(|id| !id.is_empty()));
    let ts = message["ts"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(now - ts < 5_000, "ts is milliseconds since the epoch");

    bob.send(json!({"type": "leave", "room": "lobby"})).await;
    assert_eq!(bob.next().await, json!({"type": "left", "room": "lobby"}));
    assert_eq!(
        alice.next().await,
        json!({"type": "presence", "room": "lobby", "user": "bob", "event": "leave"})
    );
    alice.send(json!({"type": "ping"})).await;
    assert_eq!(alice.next().await, json!({"type": "pong"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_rooms_stops_messages_from_the_old_one() {
    let (api, relay) = setup().await;
    let (mut carol, mut dan) = (
        relay.connect(&user(&api, "carol").await).await,
        relay.connect(&user(&api, "dan").await).await,
    );
    carol.join("old").await;
    dan.join("old").await;
    carol.next_of("presence").await;
    dan.send(json!({"type": "leave", "room": "old"})).await;
    dan.next_of("left").await;
    dan.join("new").await;
    carol
        .send(json!({"type": "send", "room": "old", "body": "anyone?"}))
        .await;
    assert_eq!(carol.next_of("message").await["body"], "anyone?");
    dan.send(json!({"type": "ping"})).await;
    assert_eq!(
        dan.next().await["type"],
        "pong",
        "no message from the old room came first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_work_in_the_header_the_subprotocol_and_the_query() {
    let (api, relay) = setup().await;
    let token = user(&api, "erin").await;
    for how in [Presented::Header, Presented::Subprotocol, Presented::Query] {
        let mut ws = ws::connect(&relay.ws_url("/ws"), &token, how)
            .await
            .unwrap();
        assert_eq!(ws.welcome().await["user"], "erin", "{how:?}");
        if let Presented::Subprotocol = how {
            assert_eq!(
                ws.protocol.as_deref(),
                Some("potion.v1"),
                "the token is never echoed"
            );
        }
    }
    // The header wins over a bad query token.
    let url = relay.ws_url("/ws?token=nonsense");
    let mut ws = ws::connect(&url, &token, Presented::Header).await.unwrap();
    ws.welcome().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_in_the_path_or_query_is_joined_at_once() {
    let (api, relay) = setup().await;
    let token = user(&api, "frank").await;
    for path in ["/ws/lobby", "/ws?room=lobby"] {
        let mut ws = ws::connect(&relay.ws_url(path), &token, Presented::Header)
            .await
            .unwrap();
        ws.welcome().await;
        assert_eq!(ws.next().await["type"], "joined", "{path}");
    }
    for path in ["/ws/bad%20room", "/ws?room=a;b"] {
        let refused = ws::connect(&relay.ws_url(path), &token, Presented::Header)
            .await
            .err()
            .unwrap();
        assert_eq!(
            (refused.status, &refused.body["code"]),
            (400, &json!("bad_room")),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_401_and_foreign_origins_403() {
    let (api, relay) = setup().await;
    for token in ["", "not-a-token"] {
        let refused = ws::connect(&relay.ws_url("/ws"), token, Presented::Query)
            .await
            .err()
            .unwrap();
        assert_eq!(
            (refused.status, &refused.body["code"]),
            (401, &json!("invalid_token"))
        );
    }
    let token = user(&api, "grace").await;
    let refused = ws::connect_with(
        &relay.ws_url("/ws"),
        &token,
        Presented::Header,
        Some("http://evil.example"),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(refused.status, 403);
    let own = format!("http://{}", relay.addr);
    assert!(
        ws::connect_with(&relay.ws_url("/ws"), &token, Presented::Header, Some(&own))
            .await
            .is_ok()
    );

    let allowing = TestRelay::spawn(&api, None, |c| {
        c.allowed_origins = vec!["https://chat.example".into()]
    })
    .await;
    assert!(
        ws::connect_with(
            &allowing.ws_url("/ws"),
            &token,
            Presented::Header,
            Some("https://chat.example")
        )
        .await
        .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_error_is_reported_without_closing() {
    let api = TestApp::spawn(Backend::Sqlite).await;
    let relay = TestRelay::spawn(&api, None, |c| {
        c.max_rooms = 2;
        c.max_body = 16;
    })
    .await;
    let mut ws = relay.connect(&user(&api, "heidi").await).await;
    async fn expect(ws: &mut support::ws::Ws, frame: Message, code: &str, reference: Option<&str>) {
        ws.send_raw(frame).await;
        let error = ws.next().await;
        assert_eq!(
            (&error["type"], &error["code"]),
            (&json!("error"), &json!(code)),
            "{error}"
        );
        assert!(error["detail"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(error.get("ref").and_then(|r| r.as_str()), reference);
    }
    expect(&mut ws, Message::text("not json"), "bad_frame", None).await;
    expect(
        &mut ws,
        Message::text(r#"{"type":"dance","ref":"r1"}"#),
        "bad_frame",
        Some("r1"),
    )
    .await;
    expect(
        &mut ws,
        Message::text(r#"{"type":"send","room":"x","ref":"r2"}"#),
        "bad_frame",
        Some("r2"),
    )
    .await;
    expect(&mut ws, Message::binary(vec![1, 2, 3]), "bad_frame", None).await;
    expect(
        &mut ws,
        Message::text(r#"{"type":"join","room":"no spaces"}"#),
        "bad_room",
        None,
    )
    .await;
    expect(
        &mut ws,
        Message::text(r#"{"type":"send","room":"nowhere","body":"x","ref":"r3"}"#),
        "not_in_room",
        Some("r3"),
    )
    .await;
    expect(
        &mut ws,
        Message::text(r#"{"type":"leave","room":"nowhere"}"#),
        "not_in_room",
        None,
    )
    .await;
    let long_ref = "r".repeat(65);
    expect(
        &mut ws,
        Message::text(json!({"type":"send","room":"a","body":"x","ref": long_ref}).to_string()),
        "bad_frame",
        None,
    )
    .await;
    ws.join("a").await;
    ws.join("b").await;
    expect(
        &mut ws,
        Message::text(r#"{"type":"join","room":"c"}"#),
        "too_many_rooms",
        None,
    )
    .await;
    expect(
        &mut ws,
        Message::text(r#"{"type":"send","room":"a","body":"seventeen bytes!!","ref":"r4"}"#),
        "body_too_large",
        Some("r4"),
    )
    .await;
    // Still open and working.
    ws.send(json!({"type": "send", "room": "a", "body": "sixteen bytes!!!"}))
        .await;
    assert_eq!(ws.next().await["body"], "sixteen bytes!!!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_get_rate_limited_then_closed_with_4008() {
    let api = TestApp::spawn(Backend::Sqlite).await;
    let relay = TestRelay::spawn(&api, None, |c| {
        c.send_burst = 5;
        c.send_rate = 1;
    })
    .await;
    let mut ws = relay.connect(&user(&api, "ivan").await).await;
    ws.join("flood").await;
    for i in 0..5 {
        ws.send(json!({"type": "send", "room": "flood", "body": format!("{i}")}))
            .await;
        assert_eq!(ws.next().await["type"], "message");
    }
    ws.send(json!({"type": "send", "room": "flood", "body": "over", "ref": "o"}))
        .await;
    let error = ws.next().await;
    assert_eq!(
        (&error["code"], &error["ref"]),
        (&json!("rate_limited"), &json!("o"))
    );
    for _ in 0..10 {
        ws.send(json!({"type": "send", "room": "flood", "body": "more"}))
            .await;
    }
    assert_eq!(ws.closed_with().await, 4008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_64_kib_close_with_1009() {
    let (api, relay) = setup().await;
    let mut ws = relay.connect(&user(&api, "judy").await).await;
    ws.send_raw(Message::text("x".repeat(65 * 1024))).await;
    assert_eq!(ws.closed_with().await, 1009);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_adding_up_past_64_kib_close_with_1009() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let (api, relay) = setup().await;
    let mut ws = relay.connect(&user(&api, "jules").await).await;
    let first = Frame::message("x".repeat(40 * 1024), OpCode::Data(Data::Text), false);
    let last = Frame::message("x".repeat(30 * 1024), OpCode::Data(Data::Continue), true);
    ws.send_raw(Message::Frame(first)).await;
    ws.send_raw(Message::Frame(last)).await;
    assert_eq!(ws.closed_with().await, 1009);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_break_rfc_6455_close_with_1002_and_bad_utf8_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let (api, relay) = setup().await;
    let token = user(&api, "mallory").await;

    let mut ws = relay.connect(&token).await;
    let stray = Frame::message("x", OpCode::Data(Data::Continue), true);
    ws.send_raw(Message::Frame(stray)).await;
    assert_eq!(ws.closed_with().await, 1002);

    let mut ws = relay.connect(&token).await;
    let not_utf8 = Frame::message(vec![b'{', 0xff, 0xfe], OpCode::Data(Data::Text), true);
    ws.send_raw(Message::Frame(not_utf8)).await;
    assert_eq!(ws.closed_with().await, 1007);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_closed_with_4000() {
    let api = TestApp::spawn(Backend::Sqlite).await;
    // The first check comes after the idle time, so no ping is sent before the close.
    let relay = TestRelay::spawn(&api, None, |c| {
        c.ping_secs = 2;
        c.idle_secs = 1;
    })
    .await;
    let mut ws = relay.connect(&user(&api, "kim").await).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ws.closed_with().await, 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_answer_pings_stay_connected() {
    let api = TestApp::spawn(Backend::Sqlite).await;
    let relay = TestRelay::spawn(&api, None, |c| {
        c.ping_secs = 1;
        c.idle_secs = 2;
    })
    .await;
    let mut ws = relay.connect(&user(&api, "kip").await).await;
    // Reading lets the client answer the relay's pings; it sends nothing else for 4 s.
    let listening = tokio::time::timeout(Duration::from_secs(4), ws.next_text()).await;
    assert!(listening.is_err(), "no frame and no close: {listening:?}");
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next().await, json!({"type": "pong"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_sessions_close_with_4001() {
    let api = TestApp::spawn_with(Backend::Sqlite, |c| c.token_ttl = Duration::from_secs(3)).await;
    let relay = TestRelay::spawn(&api, None, |_| {}).await;
    let key = api.create_user("lena").await;
    let (revoked, expiring) = (api.login("lena", &key).await, api.login("lena", &key).await);
    let mut first = relay.connect(&revoked).await;
    let mut second = relay.connect(&expiring).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the relay is watching revocations
    let started = std::time::Instant::now();
    assert_eq!(api.logout(&revoked).await, 204);
    assert_eq!(first.closed_with().await, 4001);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let refused = ws::connect(&relay.ws_url("/ws"), &revoked, Presented::Header)
        .await
        .err()
        .unwrap();
    assert_eq!(
        refused.status, 401,
        "the relay's cache forgot the revoked token"
    );
    assert_eq!(
        second.closed_with().await,
        4001,
        "closed when the token expires"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_is_cut_with_4009_and_the_room_keeps_flowing() {
    let api = TestApp::spawn(Backend::Sqlite).await;
    let relay = TestRelay::spawn(&api, None, |c| {
        c.queue = 64;
        c.history_size = 16; // a replay must fit in the queue
    })
    .await;
    let (mut sender, mut steady, mut stuck) = (
        relay.connect(&user(&api, "mike").await).await,
        relay.connect(&user(&api, "nina").await).await,
        relay.connect(&user(&api, "oscar").await).await,
    );
    for ws in [&mut sender, &mut steady, &mut stuck] {
        ws.join("busy").await;
    }
    let body = "b".repeat(8 * 1024);
    let total = 2_000;
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < total {
            if steady.next().await["type"] == "message" {
                seen += 1;
            }
        }
        seen
    });
    for i in 0..total {
        sender
            .send(json!({"type": "send", "room": "busy", "body": body, "ref": i.to_string()}))
            .await;
        if i % 50 == 0 {
            // Let the sender drain its own copies so only the stuck reader falls behind.
            while sender.next().await["ref"] != json!(i.to_string()) {}
        }
    }
    assert_eq!(
        reader.await.unwrap(),
        total,
        "the steady reader got every message"
    );
    assert_eq!(stuck.closed_with().await, 4009);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_ilo_api_refuses_new_tokens_with_503_but_chat_goes_on() {
    let api = TestApp::spawn(Backend::Sqlite).await;
    let relay = TestRelay::spawn(&api, None, |_| {}).await;
    let (cached, fresh) = (user(&api, "pat").await, user(&api, "quinn").await);
    let mut pat = relay.connect(&cached).await;
    pat.join("on").await;
    api.stop().await;

    let refused = ws::connect(&relay.ws_url("/ws"), &fresh, Presented::Header)
        .await
        .err()
        .unwrap();
    assert_eq!(
        (refused.status, &refused.body["code"]),
        (503, &json!("auth_unavailable"))
    );
    let mut again = relay.connect(&cached).await; // known to be valid: cached
    again.join("on").await;
    pat.send(json!({"type": "send", "room": "on", "body": "still here"}))
        .await;
    assert_eq!(again.next_of("message").await["body"], "still here");
    let ready = reqwest::get(relay.http_url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_connection_with_1001() {
    let (api, relay) = setup().await;
    let mut ws = relay.connect(&user(&api, "rita").await).await;
    ws.join("lobby").await;
    let stopping = tokio::spawn(relay.stop());
    assert_eq!(ws.closed_with().await, 1001);
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics_answer() {
    let (api, relay) = setup().await;
    assert_eq!(
        reqwest::get(relay.http_url("/health"))
            .await
            .unwrap()
            .status(),
        200
    );
    relay.wait_ready().await;
    let mut ws = relay.connect(&user(&api, "sam").await).await;
    ws.join("m").await;
    ws.send(json!({"type": "send", "room": "m", "body": "count me"}))
        .await;
    ws.next_of("message").await;
    let metrics = support::text_of(&relay.http_url("/metrics")).await;
    for line in [
        "potion_connections 1",
        "potion_rooms 1",
        "potion_messages_in_total 1",
        "potion_deliveries_total 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}
