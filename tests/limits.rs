//! The rate limits of `operations.md`: `429` with `Retry-After`, and `0` turns a limit off.
//! Limits live in the process, not the database, so SQLite is enough here.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::{Backend, PASSWORD, TestApp, error_of};

fn retry_after(reply: &reqwest::Response) -> u64 {
    reply.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_issuance_is_limited_per_address() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.key_rate = 3).await;
    for _ in 0..3 {
        app.new_api_key().await;
    }
    let reply = app.client.post(app.url("/key")).send().await.unwrap();
    let wait = retry_after(&reply);
    assert!((1..=60).contains(&wait), "{wait}");
    let (status, _, code) = error_of(reply).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_login_failures_lock_out_even_the_right_password() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.login_failures = 3).await;
    let key = app.create_user("target").await;
    let wrong = json!({"username": "target", "password": "Wrong-password1", "api_key": key});
    for _ in 0..3 {
        assert_eq!(app.put_user(&wrong).await.status(), 401);
    }
    let right = json!({"username": "TARGET", "password": PASSWORD, "api_key": key});
    let reply = app.put_user(&right).await;
    let wait = retry_after(&reply);
    assert!(wait > 14 * 60 && wait <= 15 * 60, "{wait}");
    let (status, _, code) = error_of(reply).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
}

/// A client whose requests come from `127.0.0.<n>`: another client address on loopback.
fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, n]))
        .build()
        .unwrap()
}

async fn login_status(app: &TestApp, from: u8, password: &str, key: &str) -> u16 {
    let body = json!({"username": "roamer", "password": password, "api_key": key});
    let reply = client_from(from)
        .put(app.url("/user"))
        .json(&body)
        .send()
        .await
        .unwrap();
    reply.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_for_a_username_across_addresses_delay_it_without_locking_it() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.login_failures = 2).await;
    let key = app.create_user("roamer").await;
    assert_eq!(login_status(&app, 2, "Wrong-password1", &key).await, 401);
    assert_eq!(login_status(&app, 3, "Wrong-password1", &key).await, 401);
    assert_eq!(
        login_status(&app, 4, PASSWORD, &key).await,
        429,
        "the username is delayed"
    );
    // For a second (the first of the growing delays), not for the window: the owner gets in.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(login_status(&app, 4, PASSWORD, &key).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_login_clears_that_usernames_failures() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.login_failures = 2).await;
    let key = app.create_user("roamer").await;
    assert_eq!(login_status(&app, 2, "Wrong-password1", &key).await, 401);
    assert_eq!(login_status(&app, 3, PASSWORD, &key).await, 200);
    assert_eq!(login_status(&app, 4, "Wrong-password1", &key).await, 401);
    // Without the reset this would be the username's third failure in the window.
    assert_eq!(login_status(&app, 5, PASSWORD, &key).await, 200);
    // The address keeps its own count.
    assert_eq!(login_status(&app, 4, "Wrong-password1", &key).await, 401);
    assert_eq!(
        login_status(&app, 4, PASSWORD, &key).await,
        429,
        "address 4 is locked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_key_lookups_are_limited_per_address() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.lookup_rate = 2).await;
    app.create_user("looked").await;
    assert_eq!(app.status_of_public_key("looked").await, 200);
    assert_eq!(app.status_of_public_key("other").await, 404);
    assert_eq!(app.status_of_public_key("looked").await, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_turns_every_limit_off() {
    let app = TestApp::spawn(Backend::Sqlite).await; // test defaults: all limits 0
    let key = app.create_user("unlimited").await;
    for _ in 0..30 {
        app.new_api_key().await;
        assert_eq!(app.status_of_public_key("unlimited").await, 200);
    }
    let wrong = json!({"username": "unlimited", "password": "Wrong-password1", "api_key": key});
    for _ in 0..12 {
        assert_eq!(app.put_user(&wrong).await.status(), 401);
    }
}

async fn key_status(app: &TestApp, forwarded_for: &str) -> u16 {
    let reply = app
        .client
        .post(app.url("/key"))
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await
        .unwrap();
    reply.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.key_rate = 1;
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    assert_eq!(key_status(&app, "203.0.113.1").await, 201);
    assert_eq!(key_status(&app, "203.0.113.1").await, 429);
    assert_eq!(key_status(&app, "203.0.113.2").await, 201);
    // A forged left-most entry changes nothing: the proxy's own entry (right-most) counts.
    assert_eq!(key_status(&app, "198.51.100.9, 203.0.113.1").await, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_the_header_is_ignored() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.key_rate = 1).await;
    assert_eq!(key_status(&app, "203.0.113.1").await, 201);
    assert_eq!(key_status(&app, "203.0.113.2").await, 429);
}

/// `PUT /user` as `name` from `client`.
async fn log_in(
    app: &TestApp,
    client: &reqwest::Client,
    name: &str,
    password: &str,
    key: &str,
) -> reqwest::Response {
    let body = json!({"username": name, "password": password, "api_key": key});
    client
        .put(app.url("/user"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A client whose requests come from `127.0.0.<n>` (all of 127/8 is loopback).
fn from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, n]))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_from_one_address_gets_429_while_another_address_logs_in() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.hash_per_client = 4;
        c.hash_threads = Some(1);
    })
    .await;
    let key = app.create_user("crowd").await;
    let victim_key = app.create_user("victim").await;
    let login = |client: reqwest::Client, name: &'static str, key: String| {
        let app = &app;
        async move {
            let reply = log_in(app, &client, name, PASSWORD, &key).await;
            reply.status().as_u16()
        }
    };
    // 300 correct-password logins at once from one address, and one from another.
    let flooder = from(7);
    let flood = futures_util::future::join_all(
        (0..300).map(|_| login(flooder.clone(), "crowd", key.clone())),
    );
    let victim = async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        login(from(8), "victim", victim_key.clone()).await
    };
    let (flood, victim) = tokio::join!(flood, victim);
    assert_eq!(victim, 200, "another address's login goes through");
    let refused = flood.iter().filter(|s| **s == 429).count();
    assert!(refused > 250, "the flood gets 429 itself: {refused} of 300");
    assert!(!flood.contains(&503), "nobody sees the pool saturated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_logins_and_registrations_are_limited_per_address() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.login_rate = 3;
        c.register_rate = 2;
    })
    .await;
    let key = app.new_api_key().await;
    let register = |client: reqwest::Client, name: String| {
        let (url, key) = (app.url("/user"), key.clone());
        async move {
            let body = support::new_user(&name, &key);
            client.post(url).json(&body).send().await.unwrap()
        }
    };
    for name in ["reg1", "reg2"] {
        assert_eq!(register(from(9), name.into()).await.status(), 201);
    }
    let reply = register(from(9), "reg3".into()).await;
    assert!(retry_after(&reply) > 0);
    assert_eq!(error_of(reply).await.0, 429);
    assert_eq!(
        register(from(10), "reg3".into()).await.status(),
        201,
        "another address"
    );

    let login = |client: reqwest::Client| {
        let (app, key) = (&app, key.clone());
        async move {
            log_in(app, &client, "reg1", PASSWORD, &key)
                .await
                .status()
                .as_u16()
        }
    };
    for _ in 0..3 {
        assert_eq!(login(from(9)).await, 200);
    }
    assert_eq!(login(from(9)).await, 429);
    assert_eq!(login(from(10)).await, 200, "another address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_username_guessed_from_many_addresses_slows_down_but_its_owner_gets_in() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.login_failures = 3).await;
    let key = app.create_user("owner").await;
    let attempt = |client: reqwest::Client, password: &'static str| {
        let (app, key) = (&app, key.clone());
        async move { log_in(app, &client, "owner", password, &key).await }
    };
    // The owner logs in from home once.
    assert_eq!(attempt(from(20), PASSWORD).await.status(), 200);
    // Eight addresses guess, two failures each: under every address's own limit.
    let mut delayed = 0;
    for n in 30..38 {
        for _ in 0..2 {
            match attempt(from(n), "Wrong-guess-1").await.status().as_u16() {
                401 => {}
                429 => delayed += 1,
                other => panic!("{other}"),
            }
        }
    }
    assert!(delayed > 0, "the guessing is slowed down");
    // From home, the owner gets in at once; from a new address, after a few seconds at most.
    assert_eq!(attempt(from(20), PASSWORD).await.status(), 200);
    for _ in 0..2 {
        assert_eq!(
            attempt(from(33), "Wrong-guess-1").await.status().as_u16() / 100,
            4
        );
    }
    let reply = attempt(from(40), PASSWORD).await;
    if reply.status() == 429 {
        let wait = retry_after(&reply);
        assert!((1..=8).contains(&wait), "a few seconds at most: {wait}");
        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
        assert_eq!(attempt(from(40), PASSWORD).await.status(), 200);
    } else {
        assert_eq!(reply.status(), 200);
    }
}
