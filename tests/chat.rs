//! `ilo-chat`, the terminal client, driven as a script (stdin from a pipe) against the
//! standalone server, with a second member listening over a WebSocket.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::standalone::TestStandalone;
use support::ws::{self, Presented};

/// Runs ilo-chat with `args`, `lines` on its stdin, and waits (bounded) for it to exit.
async fn ilo_chat(ilo: &TestStandalone, args: &[&str], lines: &str) -> Output {
    let mut child = Command::new(support::binary("ilo-chat", "ilo-chat"))
        .args(["--server", &ilo.url("")])
        .args(args)
        .env("ILO_PASSWORD", "Script-pass-1")
        .env_remove("ILO_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap(); // stdin is closed when dropped here: the script ends
    let output = tokio::task::spawn_blocking(move || child.wait_with_output());
    tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("ilo-chat exits by itself")
        .unwrap()
        .unwrap()
}

async fn listener(ilo: &TestStandalone, name: &str, room: &str) -> support::ws::Ws {
    let api = ilo_client::rest::Api::new(ilo.url(""));
    let key = api.new_api_key().await.unwrap();
    api.register(name, "Listen-pass-1", &support::public_key(), &key)
        .await
        .unwrap();
    let token = api.login(name, "Listen-pass-1", &key).await.unwrap().token;
    let mut ws = ws::connect(
        &ilo.ws_url(&format!("/ws/{room}")),
        &token,
        Presented::Header,
    )
    .await
    .unwrap();
    ws.welcome().await;
    ws.next_of("joined").await;
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_registers_sends_each_line_and_prints_messages_as_json() {
    let ilo = TestStandalone::spawn().await;
    let mut bob = listener(&ilo, "bob", "porch").await;

    let out = ilo_chat(
        &ilo,
        &["--user", "alice", "--register", "--room", "porch", "--json"],
        "hello\nworld, with \"quotes\"\n",
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("obtained an API key"), "{stderr}");

    let printed: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let bodies: Vec<&str> = printed
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["hello", "world, with \"quotes\""]);
    assert!(
        printed
            .iter()
            .all(|m| m["type"] == "message" && m["from"] == "alice")
    );

    for expected in ["hello", "world, with \"quotes\""] {
        let message = bob.next_of("message").await;
        assert_eq!(
            (&message["from"], &message["body"]),
            (&json!("alice"), &json!(expected))
        );
    }

    // Logging in again (no --register) works the same, and prints what others say meanwhile.
    let out = ilo_chat(&ilo, &["--user", "alice", "--room", "porch"], "again\n").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("[porch] alice: again"));
    assert_eq!(bob.next_of("message").await["body"], "again");
    ilo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_whose_lines_are_refused_exits_with_an_error() {
    let ilo = TestStandalone::spawn().await;
    let out = ilo_chat(
        &ilo,
        &[
            "--user",
            "carol",
            "--register",
            "--room",
            "no spaces allowed",
        ],
        "lost\n",
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused 1 of 1"), "{stderr}");

    let wrong = ilo_chat(&ilo, &["--user", "nobody"], "").await;
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("cannot log in as nobody"), "{stderr}");
    ilo.stop().await;
}
