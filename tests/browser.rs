//! The web client in real Chromium against the standalone server: what a person does on the
//! page, checked by what the page shows. A failing test saves a screenshot of every browser
//! under `target/browser-failures/`.
#![allow(clippy::unwrap_used)]

mod support;

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use support::browser::{Browser, Chromedriver};
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
        alice.wait_for_text("#notice", "API key").await;
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
            .execute("return sessionStorage.getItem('ilo.session')", vec![])
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
