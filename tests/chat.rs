//! `ilo-chat`, the terminal client, driven as a script (stdin from a pipe) against the
//! standalone server, beside an encrypting member (`ilo-client`) and a raw WebSocket member
//! that holds no key, as anyone on the server side would see the traffic.
#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use ilo_client::e2e::Content;
use serde_json::{Value, json};
use support::e2e::Member;
use support::ilo_chat::{Following, ilo_chat};
use support::standalone::TestStandalone;
use support::ws::{self, Presented};

/// A member with no key: it sees what the server side sees.
async fn keyless(ilo: &TestStandalone, name: &str, room: &str) -> ws::Ws {
    let api = ilo_client::rest::Api::new(ilo.url(""));
    let key = api.new_api_key().await.unwrap();
    api.register(name, "Listen-pass-1", &support::public_key(), &key)
        .await
        .unwrap();
    let token = api.login(name, "Listen-pass-1", &key).await.unwrap().token;
    raw(ilo, &token, room).await
}

async fn raw(ilo: &TestStandalone, token: &str, room: &str) -> ws::Ws {
    let mut ws = ws::connect(
        &ilo.ws_url(&format!("/ws/{room}")),
        token,
        Presented::Header,
    )
    .await
    .unwrap();
    ws.welcome().await;
    ws.next_of("joined").await;
    ws
}

fn key_file(config: &Path, ilo: &TestStandalone, user: &str) -> PathBuf {
    let server = ilo
        .url("")
        .trim_start_matches("http://")
        .replace(':', "%3A");
    config
        .join("ilo/keys")
        .join(server)
        .join(format!("{user}.key"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_registers_with_a_private_key_file_and_its_lines_are_encrypted() {
    let ilo = TestStandalone::spawn().await;
    let config = tempfile::tempdir().unwrap();
    let mut bob = Member::join(&ilo.url(""), &ilo.ws_url("/ws"), "bob", "porch").await;
    let mut eve = keyless(&ilo, "eve", "porch").await;
    let canary = format!("canary-{}", uuid::Uuid::new_v4());

    let out = ilo_chat(
        &ilo.url(""),
        config.path(),
        &["--user", "alice", "--register", "--room", "porch", "--json"],
        &format!("hello\n{canary}\n"),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("obtained an API key"), "{stderr}");
    assert!(
        !stderr.contains(&canary) && !stderr.contains("Script-pass-1"),
        "{stderr}"
    );

    // Its own lines come back opened, marked encrypted.
    let printed = json_lines(&out);
    let texts: Vec<&str> = printed
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hello", canary.as_str()]);
    for message in &printed {
        assert_eq!(
            (&message["room"], &message["from"]),
            (&json!("porch"), &json!("alice"))
        );
        assert_eq!(message["encrypted"], true);
        assert!(
            message["id"].is_string() && message["ts"].is_u64(),
            "{message}"
        );
    }
    // The member with a key reads them; the one without sees only envelopes.
    assert_eq!(bob.reads("alice").await, "hello");
    assert_eq!(bob.reads("alice").await, canary);
    for _ in 0..2 {
        let frame = eve.next_of("message").await;
        let body = frame["body"].as_str().unwrap();
        assert!(
            body.starts_with("e2e1.") && !body.contains(&canary),
            "{body}"
        );
    }

    // The key file is the owner's alone.
    let file = key_file(config.path(), &ilo, "alice");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);

    // Logging in again (no --register) uses the same keys; a readable key file is refused.
    let out = ilo_chat(
        &ilo.url(""),
        config.path(),
        &["--user", "alice", "--room", "porch"],
        "again\n",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("[porch] alice: again"));
    assert_eq!(bob.reads("alice").await, "again");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = ilo_chat(
        &ilo.url(""),
        config.path(),
        &["--user", "alice", "--room", "porch"],
        "x\n",
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("can be read by others"), "{stderr}");
    ilo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ilo_chat_prints_what_it_could_not_open_and_why() {
    let ilo = TestStandalone::spawn().await;
    let config = tempfile::tempdir().unwrap();
    let register = ilo_chat(
        &ilo.url(""),
        config.path(),
        &["--user", "alice", "--register", "--room", "yard"],
        "",
    )
    .await;
    assert!(
        register.status.success(),
        "{}",
        String::from_utf8_lossy(&register.stderr)
    );
    let mut bob = Member::join(&ilo.url(""), &ilo.ws_url("/ws"), "bob", "yard").await;
    let mut eve = keyless(&ilo, "eve", "yard").await;
    let mut alice = Following::start(
        &ilo.url(""),
        config.path(),
        &["--user", "alice", "--room", "yard", "--json"],
    );
    bob.sees_join("alice").await;

    bob.say("yard", "from bob").await;
    let got = alice.message_from("bob").await;
    assert_eq!(
        (&got["text"], &got["encrypted"]),
        (&json!("from bob"), &json!(true))
    );
    assert!(got.get("error").is_none(), "{got}");

    // What eve sees of bob's message, she sends on under her own name: refused by every reader.
    let envelope = loop {
        let frame = eve.next_of("message").await;
        if frame["from"] == "bob" {
            break frame["body"].as_str().unwrap().to_owned();
        }
    };
    eve.send(json!({"type": "send", "room": "yard", "body": envelope}))
        .await;
    let got = alice.message_from("eve").await;
    assert_eq!(
        (&got["text"], &got["error"]),
        (&Value::Null, &json!("unknown_key"))
    );
    let forged = bob.message_from("eve").await;
    assert!(
        matches!(forged.content, Content::Unreadable(_)),
        "{forged:?}"
    );

    eve.send(json!({"type": "send", "room": "yard", "body": "plain words"}))
        .await;
    let got = alice.message_from("eve").await;
    assert_eq!(
        (&got["text"], &got["encrypted"]),
        (&json!("plain words"), &json!(false))
    );
    ilo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_bots_and_refused_lines() {
    let ilo = TestStandalone::spawn().await;
    let config = tempfile::tempdir().unwrap();
    let mut eve = keyless(&ilo, "eve", "porch").await;
    let out = ilo_chat(
        &ilo.url(""),
        config.path(),
        &[
            "--user",
            "bot",
            "--register",
            "--plaintext",
            "--room",
            "porch",
        ],
        "beep\n",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("[porch] bot (not encrypted): beep"));
    assert_eq!(eve.next_of("message").await["body"], "beep");

    let out = ilo_chat(
        &ilo.url(""),
        config.path(),
        &[
            "--user",
            "carol",
            "--register",
            "--plaintext",
            "--room",
            "no spaces allowed",
        ],
        "lost\n",
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 of 1 message(s) were not sent or were refused"),
        "{stderr}"
    );

    // Encrypted (the default) with no key file: said plainly, before anything is sent.
    let out = ilo_chat(
        &ilo.url(""),
        tempfile::tempdir().unwrap().path(),
        &["--user", "carol", "--room", "porch"],
        "x\n",
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key file for carol"));

    let wrong = ilo_chat(&ilo.url(""), config.path(), &["--user", "nobody"], "").await;
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("cannot log in as nobody"), "{stderr}");
    ilo.stop().await;
}
