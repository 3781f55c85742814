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
async fn failures_count_per_username_across_addresses() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.login_failures = 2).await;
    let key = app.create_user("roamer").await;
    assert_eq!(login_status(&app, 2, "Wrong-password1", &key).await, 401);
    assert_eq!(login_status(&app, 3, "Wrong-password1", &key).await, 401);
    assert_eq!(
        login_status(&app, 4, PASSWORD, &key).await,
        429,
        "the username is locked"
    );
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
