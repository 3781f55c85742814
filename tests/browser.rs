//! The web client in real Chromium against the standalone server: what a person does on the
//! page, checked by what the page shows. A failing test saves a screenshot of every browser
//! under `target/browser-failures/`.
#![allow(clippy::unwrap_used)]

mod support;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::process::Command;
use std::time::Duration;

use futures_util::FutureExt;
use ilo_e2e::safety;
use serde_json::{Value, json};
use support::browser::{Browser, Chromedriver};
use support::e2e::Member;
use support::ilo_chat::Following;
use support::process::Process;
use support::redis::PrivateRedis;
use support::standalone::TestStandalone;

/// Runs `steps`; if they panic, saves each browser's screenshot first.
async fn with_screenshots<F: Future<Output = ()>>(test: &str, browsers: &[&Browser], steps: F) {
    if let Err(panic) = AssertUnwindSafe(steps).catch_unwind().await {
        for browser in browsers {
            if let Some(path) = browser.screenshot(test).await {
                eprintln!("screenshot of {}: {}", browser.name, path.display());
            }
        }
        std::panic::resume_unwind(panic);
    }
}

async fn register(browser: &Browser, base: &str, name: &str, password: &str) {
    browser.open(base).await;
    browser.fill("#username", name).await;
    browser.fill("#password", password).await;
    browser.click("#register").await;
    browser.wait_for_text("#whoami", name).await;
    browser.wait_for_text("#status", "Connected").await;
}

async fn join(browser: &Browser, room: &str) {
    browser.fill("#room-name", room).await;
    browser.click("#join").await;
    browser.wait_for_text("#room-title", room).await;
}

async fn say(browser: &Browser, text: &str) {
    browser.fill("#message", text).await;
    browser.click("#send").await;
}

fn log(room: &str) -> String {
    format!(".log[data-room='{room}']")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_register_chat_and_change_rooms() {
    let ilo = TestStandalone::spawn().await;
    let driver = Chromedriver::start().await;
    let (alice, bob) = (driver.browser("alice").await, driver.browser("bob").await);
    let base = ilo.url("/");
    with_screenshots("chat", &[&alice, &bob], async {
        register(&alice, &base, "alice", "Alice-pass-1").await;
        alice
            .wait_for_text("#notice", "Account alice created")
            .await;
        register(&bob, &base, "bob", "Bob-pass-12").await;

        join(&alice, "garden").await;
        join(&bob, "garden").await;
        alice.wait_for_text("#member-list", "bob").await;
        alice.wait_for_text(&log("garden"), "bob joined").await;

        say(&alice, "hello bob").await;
        bob.wait_for_text(&log("garden"), "alice").await;
        bob.wait_for_text(&log("garden"), "hello bob").await;
        say(&bob, "<b>hi</b> alice").await;
        // Shown as text, never as markup.
        alice.wait_for_text(&log("garden"), "<b>hi</b> alice").await;

        // Bob changes rooms: joins the pond, then leaves the garden.
        join(&bob, "pond").await;
        bob.click("#room-list button[data-room='garden']").await;
        bob.click("#leave").await;
        alice.wait_for_text(&log("garden"), "bob left").await;
        assert!(!alice.text("#member-list").await.contains("bob"));

        say(&alice, "anyone there?").await;
        join(&alice, "pond").await;
        say(&alice, "found you").await;
        bob.wait_for_text(&log("pond"), "found you").await;
        // Alice's messages reach Bob in order: had the garden one reached him, it would be here.
        let everything = bob.text("body").await;
        assert!(!everything.contains("anyone there?"), "{everything}");
    })
    .await;
    alice.close().await;
    bob.close().await;
    ilo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_broken_rules_are_shown_on_the_form() {
    let ilo = TestStandalone::spawn().await;
    let driver = Chromedriver::start().await;
    let carol = driver.browser("carol").await;
    let base = ilo.url("/");
    with_screenshots("login-errors", &[&carol], async {
        register(&carol, &base, "carol", "Carol-pass-1").await;
        carol.click("#logout").await;
        carol.wait_for_text("#status", "Logged out").await;

        carol.fill("#username", "carol").await;
        carol.fill("#password", "Carol-pass-2").await;
        carol.click("#login").await;
        carol
            .wait_for_text("#auth-error", "wrong username or password")
            .await;
        assert!(carol.text("#whoami").await.is_empty());

        // A weak password: every unmet rule is marked beside the field, nothing is sent.
        carol.fill("#username", "dave").await;
        carol.fill("#password", "weakpass").await;
        carol.click("#register").await;
        carol.wait_for_text("#password-error", "every rule").await;
        for rule in ["upper", "digit", "symbol"] {
            carol
                .wait_for(&format!("#password-rules li[data-rule='{rule}'].unmet"))
                .await;
        }
        carol
            .wait_for("#password-rules li[data-rule='lower'].met")
            .await;

        // A rule only the server knows: its message appears beside the username.
        carol.fill("#username", "da ve").await;
        carol.fill("#password", "Dave-pass-1").await;
        carol.click("#register").await;
        carol.wait_for_text("#username-error", "whitespace").await;

        // A reply that is not Ilo's JSON (a proxy's 502 page) still says something useful.
        carol
            .client
            .execute(
                "window.fetch = async () => new Response('<html><body>502 Bad Gateway</body></html>', \
                 { status: 502, statusText: 'Bad Gateway', headers: { 'content-type': 'text/html' } });",
                vec![],
            )
            .await
            .unwrap();
        carol.fill("#username", "carol").await;
        carol.fill("#password", "Carol-pass-1").await;
        carol.click("#login").await;
        carol.wait_for_text("#auth-error", "The server answered 502 Bad Gateway").await;
    })
    .await;
    carol.close().await;
    ilo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_reconnects_and_rejoins_its_rooms_after_a_restart() {
    let ilo = TestStandalone::spawn().await;
    let driver = Chromedriver::start().await;
    let (erin, frank) = (driver.browser("erin").await, driver.browser("frank").await);
    let base = ilo.url("/");
    let mut ilo = Some(ilo);
    with_screenshots("reconnect", &[&erin, &frank], async {
        register(&erin, &base, "erin", "Erin-pass-1").await;
        register(&frank, &base, "frank", "Frank-pass-1").await;
        join(&erin, "attic").await;
        join(&frank, "attic").await;

        let restarted = ilo.take().unwrap().restart().await;
        ilo = Some(restarted);
        erin.wait_for_text(&log("attic"), "Connection lost").await;
        erin.wait_for_text("#status", "Connected").await;
        erin.wait_for_text(&log("attic"), "Back in attic").await;
        frank.wait_for_text(&log("attic"), "Back in attic").await;

        say(&erin, "still here").await;
        frank.wait_for_text(&log("attic"), "still here").await;
    })
    .await;
    erin.close().await;
    frank.close().await;
    if let Some(ilo) = ilo {
        ilo.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_returns_the_page_to_the_login_form() {
    let ilo = TestStandalone::spawn().await;
    let driver = Chromedriver::start().await;
    let gina = driver.browser("gina").await;
    let base = ilo.url("/");
    with_screenshots("revoked", &[&gina], async {
        register(&gina, &base, "gina", "Gina-pass-1").await;
        join(&gina, "porch").await;
        // Logged out elsewhere (another device, or an admin): the token is revoked.
        let session = gina
            .client
            .execute("return localStorage.getItem('ilo.session')", vec![])
            .await
            .unwrap();
        let session: serde_json::Value = serde_json::from_str(session.as_str().unwrap()).unwrap();
        let revoked = reqwest::Client::new()
            .delete(ilo.url("/session"))
            .bearer_auth(session["token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), 204);
        gina.wait_for_text("#status", "session has ended").await;
        gina.wait_for("#username").await;
        assert!(gina.text("#whoami").await.is_empty());
    })
    .await;
    gina.close().await;
    ilo.stop().await;
}

/// The page's own cryptography, run in Chromium: RFC 9180 A.1.1 through `hpke.js`, and every
/// vector of `e2e-vectors.json` through `e2e.js`, exactly as the Rust crate reads them. Then
/// sealing and opening are timed in the page, and the figures printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_cryptography_matches_rfc_9180_and_the_vectors() {
    let ilo = TestStandalone::spawn().await;
    let driver = Chromedriver::start().await;
    let page = driver.browser("vectors").await;
    let vectors: Value =
        serde_json::from_str(include_str!("../e2e/tests/e2e-vectors.json")).unwrap();
    with_screenshots("vectors", &[&page], async {
        page.open(&ilo.url("/")).await;
        let result = page
            .client
            .execute_async(VECTORS_IN_THE_PAGE, vec![vectors.clone()])
            .await
            .unwrap();
        assert!(result.get("failure").is_none(), "{result}");
        assert_eq!(result["a11"], true, "RFC 9180 A.1.1 through hpke.js");

        let mut opened = result["opened"].as_array().unwrap().iter();
        for message in vectors["messages"].as_array().unwrap() {
            for _reader in message["readable_by"].as_array().unwrap() {
                let got = opened.next().unwrap();
                assert_eq!(got["text"], message["text"], "{got}");
                assert_eq!(got["mid"], message["mid_hex"], "{got}");
                assert_eq!(got["ts"], message["ts"], "{got}");
            }
            for _reader in message["not_for"].as_array().unwrap() {
                assert_eq!(opened.next().unwrap()["error"], "not_for_you");
            }
        }
        let refused = result["refused"].as_array().unwrap();
        let expected: Vec<&str> = vectors["refused"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| match r["why"].as_str().unwrap() {
                "not encrypted for this reader" => "not_for_you",
                "the right bytes shown as sent by another user" => "unknown_key",
                _ => "signature",
            })
            .collect();
        let got: Vec<&str> = refused
            .iter()
            .map(|r| r["error"].as_str().unwrap())
            .collect();
        assert_eq!(got, expected);
        let fingerprints: Vec<&Value> = vectors["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| &u["fingerprint"])
            .collect();
        assert_eq!(
            result["fingerprints"]
                .as_array()
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            fingerprints
        );
        assert_eq!(result["safety"], vectors["safety_numbers"][0]["digits"]);
        assert_eq!(
            result["bundles"],
            json!(
                vectors["users"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|u| u["public_key"].clone())
                    .collect::<Vec<_>>()
            )
        );

        let bench = page
            .client
            .execute_async(BENCH_IN_THE_PAGE, vec![])
            .await
            .unwrap();
        assert!(bench.get("failure").is_none(), "{bench}");
        println!(
            "web page (Chromium, WebCrypto), median of {} runs:",
            bench["runs"]
        );
        for row in bench["seal"].as_array().unwrap() {
            println!(
                "  seal for {:>3} recipients: {:>7.2} ms",
                row["recipients"],
                row["ms"].as_f64().unwrap()
            );
        }
        println!(
            "  open (50 recipients):     {:>7.2} ms",
            bench["open_ms"].as_f64().unwrap()
        );
    })
    .await;
    page.close().await;
    ilo.stop().await;
}

/// Reads every vector as a reader of the page would; imports the vectors' secrets (test only:
/// the page itself never imports or exports a private key).
const VECTORS_IN_THE_PAGE: &str = r#"
const [vectors, done] = arguments;
(async () => {
  const hpke = await import("/hpke.js");
  const e2e = await import("/e2e.js");
  const ed25519 = (seed) => crypto.subtle.importKey("pkcs8",
    hpke.concat(hpke.hex.from("302e020100300506032b657004220420"), hpke.hex.from(seed)),
    { name: "Ed25519" }, true, ["sign"]);
  const user = (name) => vectors.users.find((u) => u.username === name);
  const keysOf = async (u) => ({ x: await hpke.importX25519Private(hpke.hex.from(u.x25519_secret_hex)), ed: await ed25519(u.ed25519_seed_hex), bundle: u.public_key });
  const read = async (reader, room, from, body) => {
    try {
      const parsed = e2e.parse(body);
      const opened = await e2e.open(await keysOf(user(reader)), room, from, parsed.envelope, e2e.parseBundle(user(from).public_key));
      return { text: opened.text, mid: opened.mid, ts: opened.ts };
    } catch (e) {
      return { error: e.kind || String(e) };
    }
  };
  const out = { a11: await hpke.selfTest(), opened: [], refused: [], fingerprints: [], bundles: [] };
  for (const m of vectors.messages) {
    for (const r of m.readable_by) out.opened.push(await read(r, m.room, m.from, m.body));
    for (const r of m.not_for) out.opened.push(await read(r, m.room, m.from, m.body));
  }
  for (const r of vectors.refused) out.refused.push(await read(r.reader, r.room, r.from, r.body));
  for (const u of vectors.users) {
    out.fingerprints.push(await e2e.fingerprint(u.username, e2e.parseBundle(u.public_key)));
    // The bundle the page would register for these secrets.
    const x = await crypto.subtle.importKey("pkcs8", hpke.concat(hpke.hex.from("302e020100300506032b656e04220420"), hpke.hex.from(u.x25519_secret_hex)), { name: "X25519" }, true, ["deriveBits"]);
    const xPub = await crypto.subtle.importKey("jwk", { ...(await crypto.subtle.exportKey("jwk", x)), d: undefined, key_ops: [] }, { name: "X25519" }, true, []);
    const ed = await ed25519(u.ed25519_seed_hex);
    const edPub = await crypto.subtle.importKey("jwk", { ...(await crypto.subtle.exportKey("jwk", ed)), d: undefined, key_ops: ["verify"] }, { name: "Ed25519" }, true, ["verify"]);
    out.bundles.push(e2e.base64url(hpke.concat(new Uint8Array([1]), new Uint8Array(await crypto.subtle.exportKey("raw", xPub)), new Uint8Array(await crypto.subtle.exportKey("raw", edPub)))));
  }
  const [a, b] = vectors.safety_numbers[0].users;
  out.safety = await e2e.safetyNumber(a, e2e.parseBundle(user(a).public_key), b, e2e.parseBundle(user(b).public_key));
  done(out);
})().catch((e) => done({ failure: String(e && e.stack || e) }));
"#;

/// Seals for 1, 10, 50 and 100 recipients and opens a 50-recipient message, with keys made as
/// the page makes them; median milliseconds.
const BENCH_IN_THE_PAGE: &str = r#"
const [done] = arguments;
(async () => {
  const e2e = await import("/e2e.js");
  const runs = 15;
  const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const me = await e2e.generateKeys();
  const others = [];
  for (let i = 0; i < 99; i++) others.push(e2e.parseBundle((await e2e.generateKeys()).bundle));
  const text = "x".repeat(100);
  const seal = [];
  for (const n of [1, 10, 50, 100]) {
    const recipients = [e2e.parseBundle(me.bundle), ...others.slice(0, n - 1)];
    const times = [];
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      await e2e.seal(me, "lobby", "me", text, recipients);
      times.push(performance.now() - t);
    }
    seal.push({ recipients: n, ms: median(times) });
  }
  const body = await e2e.seal(me, "lobby", "me", text, [e2e.parseBundle(me.bundle), ...others.slice(0, 49)]);
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await e2e.open(me, "lobby", "me", e2e.parse(body).envelope, e2e.parseBundle(me.bundle));
    times.push(performance.now() - t);
  }
  done({ runs, seal, open_ms: median(times) });
})().catch((e) => done({ failure: String(e && e.stack || e) }));
"#;

/// The launcher as its own process (`cargo run --release` does the same) on a private Redis,
/// with SQLite in a scratch directory and every log line at debug level kept in a file.
struct Launched {
    process: Process,
    dir: tempfile::TempDir,
    port: u16,
}

impl Launched {
    async fn start(redis: &PrivateRedis) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = support::postgres::free_port();
        let log = std::fs::File::create(dir.path().join("ilo.log")).unwrap();
        let process = Process::spawn(
            Command::new(env!("CARGO_BIN_EXE_ilo"))
                .current_dir(dir.path())
                .env_remove("DATABASE_URL")
                .env("REDIS_URL", redis.url())
                .env("ILO_HTTP_ADDR", format!("127.0.0.1:{port}"))
                .env("RUST_LOG", "debug")
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let launched = Self { process, dir, port };
        support::wait_until_ok(&launched.url("/ready"), Duration::from_secs(30)).await;
        launched
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// Every file the launcher wrote in `dir`: its log, the database and any journal.
fn written(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = vec![dir.join("ilo.log")];
    for entry in std::fs::read_dir(dir.join("data")).unwrap() {
        files.push(entry.unwrap().path());
    }
    files
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_ilo_chat_read_each_other_and_no_plaintext_leaves_them() {
    let redis = PrivateRedis::start_async().await;
    let monitor_file = tempfile::NamedTempFile::new().unwrap();
    let monitor = Process::spawn(
        Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "monitor"])
            .stdout(monitor_file.reopen().unwrap()),
    );
    let ilo = Launched::start(&redis).await;
    let config = tempfile::tempdir().unwrap();
    let driver = Chromedriver::start().await;
    let alice = driver.browser("alice").await;
    let from_page = format!("canary-page-{}", uuid::Uuid::new_v4());
    let from_chat = format!("canary-chat-{}", uuid::Uuid::new_v4());
    let mut eve = keyless(&ilo.url(""), "eve", "den").await;
    let mut bob = Following::start(
        &ilo.url(""),
        config.path(),
        &["--user", "bob", "--register", "--room", "den", "--json"],
    );
    with_screenshots("no-plaintext", &[&alice], async {
        register(&alice, &ilo.url("/"), "alice", "Alice-pass-1").await;
        join(&alice, "den").await;
        alice.wait_for_text("#member-list", "bob").await;
        alice
            .wait_for_text(
                "#member-list li[data-user='eve']",
                "cannot receive encrypted messages",
            )
            .await;

        say(&alice, &from_page).await;
        let got = bob.message_from("alice").await;
        assert_eq!(
            (&got["text"], &got["encrypted"]),
            (&json!(from_page), &json!(true))
        );
        bob.say(&from_chat);
        alice.wait_for_text(&log("den"), &from_chat).await;
        // Shown as encrypted, not as plaintext.
        let line = format!("{} li.message.encrypted:last-child", log("den"));
        alice.wait_for_text(&line, &from_chat).await;

        for _ in 0..2 {
            let frame = eve.next_of("message").await;
            let body = frame["body"].as_str().unwrap();
            assert!(body.starts_with("e2e1."), "{body}");
            assert!(!body.contains(&from_page) && !body.contains(&from_chat));
        }
    })
    .await;
    drop(bob);
    alice.close().await;
    let Launched { process, dir, .. } = ilo;
    assert!(process.terminate().await, "the launcher stops cleanly");
    drop(monitor);
    let files = written(dir.path());
    let log = std::fs::read(dir.path().join("ilo.log")).unwrap();
    assert!(contains(&log, "user created"), "the log was written");

    let traffic = std::fs::read(monitor_file.path()).unwrap();
    assert!(
        contains(&traffic, "e2e1."),
        "MONITOR saw the messages go by"
    );
    for (what, bytes) in std::iter::once(("Redis traffic".to_owned(), traffic)).chain(
        files
            .iter()
            .map(|f| (f.display().to_string(), std::fs::read(f).unwrap())),
    ) {
        for canary in [&from_page, &from_chat] {
            assert!(!contains(&bytes, canary), "{canary} found in {what}");
        }
    }
}

/// A member with no E2E key, on a raw WebSocket: what the server side sees.
async fn keyless(server: &str, name: &str, room: &str) -> support::ws::Ws {
    let api = ilo_client::rest::Api::new(server);
    let key = api.new_api_key().await.unwrap();
    api.register(name, "Listen-pass-1", &support::public_key(), &key)
        .await
        .unwrap();
    let token = api.login(name, "Listen-pass-1", &key).await.unwrap().token;
    let url = format!("{}/ws/{room}", server.replacen("http", "ws", 1));
    let mut ws = support::ws::connect(&url, &token, support::ws::Presented::Header)
        .await
        .unwrap();
    ws.welcome().await;
    ws.next_of("joined").await;
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_numbers_match_and_a_verified_users_new_key_holds_sending() {
    let ilo = TestStandalone::spawn().await;
    let driver = Chromedriver::start().await;
    let (alice, bob) = (driver.browser("alice").await, driver.browser("bob").await);
    let bob_elsewhere = driver.browser("bob-2").await;
    let base = ilo.url("/");
    with_screenshots("verify", &[&alice, &bob, &bob_elsewhere], async {
        register(&alice, &base, "alice", "Alice-pass-1").await;
        register(&bob, &base, "bob", "Bob-pass-12").await;
        join(&alice, "loft").await;
        join(&bob, "loft").await;

        // Both see the same safety number, and it is the one ilo-e2e computes.
        let seen_by_alice = safety_number_seen(&alice, "bob").await;
        let seen_by_bob = safety_number_seen(&bob, "alice").await;
        assert_eq!(seen_by_alice, seen_by_bob);
        let api = ilo_client::rest::Api::new(ilo.url(""));
        let bundle = |key: String| ilo_e2e::Bundle::parse(&key).unwrap();
        let (a, b) = (
            bundle(api.public_key("alice").await.unwrap()),
            bundle(api.public_key("bob").await.unwrap()),
        );
        let expected = safety::grouped(&safety::safety_number(("alice", &a), ("bob", &b)));
        assert_eq!(seen_by_alice, expected);
        alice.click("#verify-mark").await;
        alice
            .wait_for_text("#member-list li[data-user='bob']", "verified")
            .await;
        bob.click("#verify-close").await;

        // Bob logs in from a browser with no key: it offers a new one, and says what that means.
        bob_elsewhere.open(&base).await;
        bob_elsewhere.fill("#username", "bob").await;
        bob_elsewhere.fill("#password", "Bob-pass-12").await;
        bob_elsewhere.click("#login").await;
        bob_elsewhere
            .wait_for_text("#key-why", "no encryption key")
            .await;
        bob_elsewhere
            .wait_for_text("#key-setup", "will see that your key changed")
            .await;
        bob_elsewhere.fill("#key-password", "Bob-pass-12").await;
        bob_elsewhere.click("#new-key").await;
        bob_elsewhere.wait_for_text("#status", "Connected").await;
        // Every session of bob ended: his first browser is back at the login form.
        bob.wait_for_text("#status", "session has ended").await;
        join(&bob_elsewhere, "loft").await;

        alice
            .wait_for_text(&log("loft"), "bob's key changed, and you had verified bob")
            .await;
        say(&alice, "held back").await;
        alice.wait_for_text("#send-error", "Not sent").await;
        alice.click("#member-list button[data-verify='bob']").await;
        alice
            .wait_for_text("#verify-state", "changed since you verified")
            .await;
        alice.click("#verify-accept").await;
        say(&alice, "after accepting").await;
        bob_elsewhere
            .wait_for_text(&log("loft"), "after accepting")
            .await;
        assert!(!bob_elsewhere.text(&log("loft")).await.contains("held back"));
    })
    .await;
    for browser in [alice, bob, bob_elsewhere] {
        browser.close().await;
    }
    ilo.stop().await;
}

/// Opens the verify view for `other` from the member list; the safety number it shows.
async fn safety_number_seen(browser: &Browser, other: &str) -> String {
    browser
        .click(&format!("#member-list button[data-verify='{other}']"))
        .await;
    browser.wait_for_text("#safety-number", " ").await
}

/// Whether `css` (the last match) lies wholly inside the viewport.
async fn in_viewport(browser: &Browser, css: &str) -> bool {
    let script =
        "const all = document.querySelectorAll(arguments[0]); const el = all[all.length - 1];
        if (!el) return false; const r = el.getBoundingClientRect();
        return r.top >= 0 && r.bottom <= window.innerHeight + 1 && r.height > 0;";
    browser
        .client
        .execute(script, vec![json!(css)])
        .await
        .unwrap()
        .as_bool()
        .unwrap()
}

/// A screenshot kept as a test artifact (`target/browser-screenshots/`), to look at.
async fn keep_screenshot(browser: &Browser, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.png")),
        browser.client.screenshot().await.unwrap(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_fits_the_screen_follows_the_talk_and_survives_a_reload() {
    let ilo = TestStandalone::spawn().await;
    let driver = Chromedriver::start().await;
    let alice = driver.browser("alice").await;
    let base = ilo.url("/");
    with_screenshots("daily", &[&alice], async {
        alice.client.set_window_size(1280, 900).await.unwrap();
        alice.open(&base).await;
        alice.wait_for("#username").await;
        for hidden in ["#chat", "#room-name", "#message", "#member-list"] {
            let element = alice.client.find(fantoccini::Locator::Css(hidden)).await.unwrap();
            assert!(!element.is_displayed().await.unwrap(), "{hidden} is shown while logged out");
        }
        register(&alice, &base, "alice", "Alice-pass-1").await;
        join(&alice, "long").await;
        let mut bob = Member::join(&ilo.url(""), &ilo.ws_url("/ws"), "bob", "long").await;
        alice.wait_for_text("#member-list", "bob").await;
        for i in 1..=60 {
            bob.say("long", &format!("message {i} of 60")).await;
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(300)).await; // under the send limit
            }
        }
        alice.wait_for_text(&log("long"), "message 60 of 60").await;
        for (width, height, name) in [(1280, 900, "desktop"), (390, 844, "phone")] {
            alice.client.set_window_size(width, height).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(in_viewport(&alice, "#message").await, "{name}: the message box is on screen");
            assert!(in_viewport(&alice, "#send").await, "{name}: the send button is on screen");
            let last = format!("{} li.message", log("long"));
            assert!(in_viewport(&alice, &last).await, "{name}: the newest message is on screen");
            keep_screenshot(&alice, &format!("chat-{name}")).await;
            let whole = alice
                .client
                .execute("const m = document.querySelector('main'); return m.scrollHeight <= m.clientHeight;", vec![])
                .await
                .unwrap();
            assert_eq!(whole, json!(true), "{name}: the page itself does not scroll, only the log");
        }
        // On a phone the member list is one tap away.
        assert!(!alice.client.find(fantoccini::Locator::Css("#member-list")).await.unwrap().is_displayed().await.unwrap());
        alice.click("#show-members").await;
        alice.wait_for_text("#member-list", "bob").await;
        keep_screenshot(&alice, "members-phone").await;
        alice.click("#show-members").await;
        alice.client.set_window_size(1280, 900).await.unwrap();

        // Scrolled up, the view stays put and offers the new messages.
        alice.client.execute("document.getElementById('logs').scrollTop = 0", vec![]).await.unwrap();
        bob.say("long", "while you were reading").await;
        alice.wait_for_text("#new-messages", "1 new message").await;
        assert!(!in_viewport(&alice, &format!("{} li.message", log("long"))).await);
        alice.click("#new-messages").await;
        assert!(in_viewport(&alice, &format!("{} li.message", log("long"))).await);

        // Shift+Enter adds a line, Enter sends.
        alice.fill("#message", "line one\u{E008}\u{E007}\u{E008}line two\u{E007}").await;
        let got = bob.reads("alice").await;
        assert_eq!(got, "line one\nline two");
        // Links: http and https only, as elements that open without a referrer.
        bob.say("long", "javascript:alert(1) or https://example.com/a?b=1.").await;
        alice.wait_for_text(&log("long"), "example.com/a").await;
        let links = alice
            .client
            .execute(
                "return [...document.querySelectorAll('.log li.message:last-child a')].map(a => [a.href, a.rel]);",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(links, json!([["https://example.com/a?b=1", "noopener noreferrer"]]));

        // Unread counts: on the room, and in the tab's title; cleared on reading.
        join(&alice, "other").await;
        bob.say("long", "over here").await;
        alice.wait_for_text("#room-list button[data-room='long'] .count", "1").await;
        let title = alice.client.title().await.unwrap();
        assert_eq!(title, "(1) Ilo");
        alice.click("#room-list button[data-room='long']").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alice.client.title().await.unwrap() != "Ilo" {
            assert!(std::time::Instant::now() < deadline, "the count clears");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A reload keeps the session and the rooms, and shows each room's recent messages
        // again (from the relay's history, opened with the key kept in the browser), in
        // order and not counted as unread.
        alice.client.refresh().await.unwrap();
        alice.wait_for_text("#whoami", "alice").await;
        alice.wait_for_text("#room-list", "long").await;
        alice.wait_for_text("#room-list", "other").await;
        alice.click("#room-list button[data-room='long']").await;
        let shown = alice.wait_for_text(&log("long"), "over here").await;
        let (reading, here) = (shown.find("while you were reading").unwrap(), shown.find("over here").unwrap());
        assert!(reading < here, "replayed in their order: {shown}");
        assert!(shown.contains("Recent messages in long"), "{shown}");
        assert_eq!(alice.client.title().await.unwrap(), "Ilo", "history is not unread");
        keep_screenshot(&alice, "after-reload").await;
        bob.say("long", "after the reload").await;
        alice.click("#room-list button[data-room='long']").await;
        alice.wait_for_text(&log("long"), "after the reload").await;
    })
    .await;
    alice.close().await;
    ilo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_rules_show_when_creating_and_a_password_can_be_changed_and_an_account_deleted() {
    let ilo = TestStandalone::spawn().await;
    let driver = Chromedriver::start().await;
    let hana = driver.browser("hana").await;
    let base = ilo.url("/");
    with_screenshots("account", &[&hana], async {
        hana.open(&base).await;
        hana.wait_for("#username").await;
        let rules = hana
            .client
            .find(fantoccini::Locator::Css("#password-rules"))
            .await
            .unwrap();
        assert!(
            !rules.is_displayed().await.unwrap(),
            "no rules while logging in"
        );
        register(&hana, &base, "hana", "Hana-pass-12").await;

        // A new password: checked against the rules first, then changed on the server.
        hana.click("#account").await;
        hana.fill("#account-password", "Hana-pass-12").await;
        hana.fill("#account-new-password", "weak").await;
        hana.click("#account-change-password").await;
        hana.wait_for_text("#account-error", "needs 8 or more characters")
            .await;
        hana.fill("#account-new-password", "Better-pass-34").await;
        assert_eq!(
            hana.text("#account-error").await,
            "",
            "the error goes once the field changes"
        );
        hana.click("#account-change-password").await;
        hana.wait_for_text("#account-done", "Password changed")
            .await;
        keep_screenshot(&hana, "account-dialog").await;
        let api = ilo_client::rest::Api::new(ilo.url(""));
        let key = api.new_api_key().await.unwrap();
        assert!(
            api.login("hana", "Hana-pass-12", &key).await.is_err(),
            "the old password is refused"
        );
        api.login("hana", "Better-pass-34", &key)
            .await
            .expect("the new password logs in");

        hana.fill("#account-password", "Better-pass-34").await;
        hana.click("#account-delete").await;
        hana.client.accept_alert().await.unwrap();
        hana.wait_for_text("#status", "was deleted").await;
        hana.wait_for("#username").await;
        assert!(api.public_key("hana").await.is_err(), "the account is gone");
    })
    .await;
    hana.close().await;
    ilo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_create_account_keeps_the_keys_of_the_account_of_that_name() {
    let ilo = TestStandalone::spawn().await;
    let driver = Chromedriver::start().await;
    let jo = driver.browser("joan").await;
    let base = ilo.url("/");
    with_screenshots("taken", &[&jo], async {
        register(&jo, &base, "joan", "Jo-pass-1234").await;
        jo.click("#logout").await;
        jo.wait_for("#username").await;
        // The same name again, from the same browser: refused, and joan's keys stay as they are.
        jo.fill("#username", "joan").await;
        jo.fill("#password", "Other-pass-99").await;
        jo.click("#register").await;
        jo.wait_for_text("#username-error", "taken").await;
        jo.fill("#password", "Jo-pass-1234").await;
        jo.click("#login").await;
        jo.wait_for_text("#status", "Connected").await;
        let setup = jo
            .client
            .find(fantoccini::Locator::Css("#key-setup"))
            .await
            .unwrap();
        assert!(
            !setup.is_displayed().await.unwrap(),
            "no new key asked for: the stored one still matches"
        );
    })
    .await;
    jo.close().await;
    ilo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_says_where_messages_may_be_missing() {
    let redis = PrivateRedis::start_async().await;
    let ilo = TestStandalone::spawn_on_postgres_and_redis(&redis.url()).await;
    let driver = Chromedriver::start().await;
    let alice = driver.browser("alice").await;
    with_screenshots("missing", &[&alice], async {
        register(&alice, &ilo.url("/"), "alice", "Alice-pass-1").await;
        join(&alice, "fragile").await;
        let mut bob = Member::join(&ilo.url(""), &ilo.ws_url("/ws"), "bob", "fragile").await;
        alice.wait_for_text("#member-list", "bob").await;
        bob.say("fragile", "before the outage").await;
        alice
            .wait_for_text(&log("fragile"), "before the outage")
            .await;

        // Redis restarts empty: the room's history is gone, and the open page says so in the
        // room's log, then goes on with the messages that follow.
        let _redis = tokio::task::spawn_blocking(move || {
            let mut redis = redis;
            redis.restart_after(Duration::from_millis(300));
            redis
        })
        .await
        .unwrap();
        alice
            .wait_for_text(&log("fragile"), "Some messages may be missing here")
            .await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !alice
            .text(&log("fragile"))
            .await
            .contains("after the outage")
        {
            assert!(std::time::Instant::now() < deadline, "messages flow again");
            bob.say("fragile", "after the outage").await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let shown = alice.text(&log("fragile")).await;
        assert_eq!(
            shown.matches("bob joined").count(),
            1,
            "bob, still here, is not announced again: {shown}"
        );
        keep_screenshot(&alice, "messages-may-be-missing").await;
    })
    .await;
    alice.close().await;
    ilo.stop().await;
}
