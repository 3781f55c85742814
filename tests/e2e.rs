//! End-to-end encryption across relays (ilo-client members on two relays over a private Redis):
//! who a message is sealed for, and what readers make of replays, forgeries and moved bodies.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;

use ilo_client::ServerFrame;
use ilo_client::chat::Event;
use ilo_client::e2e::Content;
use ilo_client::rest::Api;
use ilo_e2e::{Body, Bundle, E2eError, Kid};
use serde_json::json;
use support::e2e::{Member, PASSWORD};
use support::redis::PrivateRedis;
use support::relay::{TestRelay, user};
use support::ws::Ws;
use support::{Backend, TestApp};

/// The recipients an envelope names, as anyone relaying it can see.
fn recipients(body: &str) -> BTreeSet<Kid> {
    match Body::parse(body).unwrap() {
        Body::Sealed(envelope) => envelope.recipients().collect(),
        Body::Plain(_) => panic!("a plaintext body: {body}"),
    }
}

async fn kid_of(api: &TestApp, user: &str) -> Kid {
    let key = Api::new(api.url("")).public_key(user).await.unwrap();
    Bundle::parse(&key).unwrap().kid()
}

/// The next `message` body `ws` receives from `from`.
async fn body_from(ws: &mut Ws, from: &str) -> String {
    loop {
        let frame = ws.next_of("message").await;
        if frame["from"] == from {
            return frame["body"].as_str().unwrap().to_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_sealed_for_the_members_of_the_moment_on_every_relay() {
    let (api, _redis, relays) = two_relays().await;
    let (server, ws) = (api.url(""), |i: usize| relays[i].ws_url("/ws"));
    let mut alice = Member::join(&server, &ws(0), "alice", "lobby").await;
    let mut bob = Member::join(&server, &ws(1), "bob", "lobby").await;
    alice.sees_join("bob").await;
    let mut eve = relays[1].connect(&user(&api, "eve").await).await;
    eve.join("lobby").await;
    let (alice_kid, bob_kid) = (kid_of(&api, "alice").await, kid_of(&api, "bob").await);

    alice.say("lobby", "one").await;
    assert_eq!(bob.reads("alice").await, "one");
    assert_eq!(
        alice.reads("alice").await,
        "one",
        "the sender reads its own echo"
    );
    let one = body_from(&mut eve, "alice").await;
    assert!(!one.contains("one"));
    // Eve registered no E2E key: she is not a recipient, and says so to no one.
    assert_eq!(recipients(&one), BTreeSet::from([alice_kid, bob_kid]));

    // Bob leaves: the next message is not sealed for him.
    bob.chat.leave("lobby").await.unwrap();
    alice
        .until(|e| match e {
            Event::Frame(ServerFrame::Presence { user, .. }) if user == "bob" => Some(()),
            _ => None,
        })
        .await;
    alice.say("lobby", "two").await;
    assert_eq!(
        recipients(&body_from(&mut eve, "alice").await),
        BTreeSet::from([alice_kid])
    );
    assert_eq!(alice.reads("alice").await, "two");

    // Carol joins later: she reads from the next message on, and an earlier one is not for her.
    let mut carol = Member::join(&server, &ws(0), "carol", "lobby").await;
    alice.sees_join("carol").await;
    alice.say("lobby", "three").await;
    assert_eq!(carol.reads("alice").await, "three");
    let mut alice_raw = relays[0].connect(&log_in(&api, "alice").await).await;
    alice_raw.join("lobby").await;
    alice_raw
        .send(json!({"type": "send", "room": "lobby", "body": one}))
        .await;
    let earlier = carol.message_from("alice").await;
    assert_eq!(earlier.content, Content::Unreadable(E2eError::NotForYou));
    // Alice had read it: the same message again is a replay, dropped; the next one shows.
    alice.say("lobby", "four").await;
    assert_eq!(alice.reads("alice").await, "three");
    assert_eq!(alice.reads("alice").await, "four");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_moved_to_another_room_or_sender_is_refused_by_every_reader() {
    let (api, _redis, relays) = two_relays().await;
    let server = api.url("");
    let mut alice = Member::join(&server, &relays[0].ws_url("/ws"), "alice", "lobby").await;
    let mut bob = Member::join(&server, &relays[1].ws_url("/ws"), "bob", "lobby").await;
    alice.sees_join("bob").await;
    for member in [&mut alice, &mut bob] {
        member.chat.join("kitchen").await.unwrap();
        member
            .until(|e| match e {
                Event::Frame(ServerFrame::Joined { room, .. }) if room == "kitchen" => Some(()),
                _ => None,
            })
            .await;
    }
    alice.sees_join("bob").await;
    let mut eve = relays[1].connect(&user(&api, "eve").await).await;
    eve.join("lobby").await;
    eve.join("kitchen").await;

    alice.say("lobby", "for the lobby only").await;
    let body = body_from(&mut eve, "alice").await;
    assert_eq!(bob.reads("alice").await, "for the lobby only");
    assert_eq!(alice.reads("alice").await, "for the lobby only");

    // Alice's own second connection (a raw client) moves the body to the kitchen.
    let mut alice_raw = relays[0].connect(&log_in(&api, "alice").await).await;
    alice_raw.join("kitchen").await;
    alice_raw
        .send(json!({"type": "send", "room": "kitchen", "body": body}))
        .await;
    for reader in [&mut alice, &mut bob] {
        let moved = reader.message_from("alice").await;
        assert_eq!(moved.room, "kitchen");
        assert_eq!(
            moved.content,
            Content::Unreadable(E2eError::Signature),
            "{}",
            reader.name
        );
    }
    // Eve sends it on under her own name.
    eve.send(json!({"type": "send", "room": "lobby", "body": body}))
        .await;
    for reader in [&mut alice, &mut bob] {
        let forged = reader.message_from("eve").await;
        assert_eq!(
            forged.content,
            Content::Unreadable(E2eError::UnknownSenderKey),
            "{}",
            reader.name
        );
    }
    api.stop().await;
}

/// A second session of a member, for a raw connection.
async fn log_in(api: &TestApp, name: &str) -> String {
    let client = Api::new(api.url(""));
    let key = client.new_api_key().await.unwrap();
    client.login(name, PASSWORD, &key).await.unwrap().token
}

/// ilo-api and two relays sharing a private Redis (kept running while the result is held).
async fn two_relays() -> (TestApp, PrivateRedis, [TestRelay; 2]) {
    let api = TestApp::spawn(Backend::Sqlite).await;
    let redis = PrivateRedis::start_async().await;
    let relays = [
        TestRelay::spawn(&api, Some(&redis.url()), |_| {}).await,
        TestRelay::spawn(&api, Some(&redis.url()), |_| {}).await,
    ];
    (api, redis, relays)
}
