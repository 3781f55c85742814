//! `ilo-chat` as a process: run once with lines on its stdin, or kept running (`--follow`)
//! with its printed messages read as they come.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

/// `ilo-chat --server <ilo>` with its config directory in `config`.
fn command(server: &str, config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(super::binary("ilo-chat", "ilo-chat"));
    command
        .args(["--server", server])
        .args(args)
        .env("ILO_PASSWORD", "Script-pass-1")
        .env("XDG_CONFIG_HOME", config)
        .env_remove("ILO_API_KEY")
        .env_remove("ILO_KEY_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs ilo-chat with `args`, `lines` on its stdin, and waits (bounded) for it to exit.
pub async fn ilo_chat(server: &str, config: &Path, args: &[&str], lines: &str) -> Output {
    let mut child = command(server, config, args).spawn().unwrap();
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

/// ilo-chat with `--follow`: its stdout lines as they come; killed when dropped.
pub struct Following {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Following {
    pub fn start(server: &str, config: &Path, args: &[&str]) -> Self {
        let mut child = command(server, config, args)
            .arg("--follow")
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// Types `line` (a message to the first `--room`).
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next printed message from `from`, as JSON.
    pub async fn message_from(&mut self, from: &str) -> Value {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let line = self.lines.recv().await.expect("ilo-chat is running");
                let value: Value = serde_json::from_str(&line).unwrap();
                if value["from"] == from {
                    return value;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("ilo-chat printed no message from {from}"))
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
