//! The standalone launcher: ilo-api, a relay and the web client on one port, in-process and as
//! the real `ilo` binary that `cargo run --release` starts.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use diesel::{Connection, RunQueryDsl};
use ilo_client::rest::Api;
use serde_json::json;
use support::process::Process;
use support::standalone::TestStandalone;
use support::ws::{self, Presented};

const PASSWORD: &str = "Secret-pass-1";

async fn login(api: &Api, name: &str) -> String {
    let key = api.new_api_key().await.unwrap();
    api.register(name, PASSWORD, &support::public_key(), &key)
        .await
        .unwrap();
    api.login(name, PASSWORD, &key).await.unwrap().token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_port_serves_rest_the_relay_and_the_web_client() {
    let ilo = TestStandalone::spawn().await;
    let api = Api::new(ilo.url(""));
    let (alice, bob) = (login(&api, "alice").await, login(&api, "bob").await);

    let mut a = ws::connect(&ilo.ws_url("/ws/lobby"), &alice, Presented::Subprotocol)
        .await
        .unwrap();
    assert_eq!(a.protocol.as_deref(), Some("potion.v1"));
    a.welcome().await;
    a.next_of("joined").await;
    let mut b = ws::connect(&ilo.ws_url("/ws"), &bob, Presented::Subprotocol)
        .await
        .unwrap();
    b.welcome().await;
    let joined = b.join("lobby").await;
    assert_eq!(joined["members"].as_array().unwrap().len(), 2);
    a.send(json!({"type": "send", "room": "lobby", "body": "one port"}))
        .await;
    assert_eq!(b.next_of("message").await["body"], "one port");

    let page = reqwest::get(ilo.url("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        page.text()
            .await
            .unwrap()
            .contains(r#"<script type="module" src="/app.js""#)
    );
    for asset in [
        "/app.js",
        "/e2e.js",
        "/hpke.js",
        "/keystore.js",
        "/style.css",
    ] {
        let reply = reqwest::get(ilo.url(asset)).await.unwrap();
        assert_eq!(reply.status(), 200, "{asset}");
        // The SVG namespace is a name, not a server.
        let text = reply
            .text()
            .await
            .unwrap()
            .replace("http://www.w3.org/2000/svg", "");
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{asset} names no other server"
        );
    }
    ilo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_url_and_redis_url_are_honoured() {
    let redis = support::redis::PrivateRedis::start();
    let ilo = TestStandalone::spawn_on_postgres_and_redis(&redis.url()).await;
    let api = Api::new(ilo.url(""));
    let token = login(&api, "dora").await;
    let mut dora = ws::connect(&ilo.ws_url("/ws/deck"), &token, Presented::Header)
        .await
        .unwrap();
    dora.welcome().await;
    dora.next_of("joined").await;
    // The room's channel exists in this Redis: the relay fans out through it.
    let mut redis_conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    assert!(
        channels.contains(&"potion:{deck}:live".to_owned()),
        "{channels:?}"
    );
    dora.send(json!({"type": "send", "room": "deck", "body": "via redis"}))
        .await;
    assert_eq!(dora.next_of("message").await["body"], "via redis");
    // The user is in PostgreSQL.
    let mut pg = diesel::PgConnection::establish(&ilo.db.url()).unwrap();
    let users = diesel::sql_query("SELECT COUNT(*) AS n FROM users")
        .get_result::<Count>(&mut pg)
        .unwrap();
    assert_eq!(users.n, 1);
    ilo.stop().await;
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics_cover_both_services() {
    let ilo = TestStandalone::spawn().await;
    // The gRPC health status the relay asks about is set by ilo-api's first database check
    // after start, so the first answers may be 503.
    support::wait_until_ok(&ilo.url("/ready"), Duration::from_secs(10)).await;
    let ready = reqwest::get(ilo.url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        ready,
        json!({"status": "ready", "database": "up", "bus": "up", "auth": "up"})
    );
    let metrics = support::text_of(&ilo.url("/metrics")).await;
    assert!(
        metrics.contains("# TYPE ilo_api_http_requests counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE potion_connections gauge"),
        "{metrics}"
    );
    assert_eq!(metrics.matches("# EOF").count(), 1);
    assert!(metrics.ends_with("# EOF\n"));

    let missing = reqwest::get(ilo.url("/no/such/page")).await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    ilo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launcher_creates_its_data_directory_prints_the_address_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::postgres::free_port();
    // The real binary: what a newcomer's `cargo run --release` does, in a scratch directory.
    let mut launcher = Process::spawn(
        Command::new(env!("CARGO_BIN_EXE_ilo"))
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env("ILO_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped()),
    );
    // Read what it prints, and keep reading until it exits (its stdout stays open).
    let stdout = launcher.child().stdout.take().unwrap();
    let (lines, mut printed_lines) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.blocking_send(line);
        }
    });
    let mut printed = Vec::new();
    while printed.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(30), printed_lines.recv())
            .await
            .expect("the launcher prints its address");
        printed.push(line.expect("the launcher keeps running"));
    }
    let url = format!("http://127.0.0.1:{port}/");
    assert!(printed[0].contains(&url), "{printed:?}");
    let database = dir.path().join("data").join("ilo.db");
    assert!(
        printed[1].contains(database.to_str().unwrap()),
        "{printed:?}"
    );
    assert!(database.exists());

    let api = Api::new(format!("http://127.0.0.1:{port}"));
    let token = login(&api, "carol").await;
    let mut carol = ws::connect(
        &format!("ws://127.0.0.1:{port}/ws"),
        &token,
        Presented::Subprotocol,
    )
    .await
    .unwrap();
    carol.welcome().await;
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);

    assert!(
        launcher.terminate().await,
        "the launcher exits cleanly on SIGTERM"
    );
    assert_eq!(carol.closed_with().await, 1001);
}
