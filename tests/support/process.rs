//! A service started as its own process, in a process group of its own: dropping it kills the
//! whole group (nginx's workers, Chromium's renderers outlive a killed parent otherwise).

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

pub struct Process(Option<Child>);

impl Process {
    pub fn spawn(command: &mut Command) -> Self {
        Self(Some(command.process_group(0).spawn().unwrap_or_else(|e| {
            panic!("cannot start {:?}: {e}", command.get_program())
        })))
    }

    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }

    /// SIGTERM, as an operator or `docker stop` sends, then waits: whether it exited cleanly.
    pub async fn terminate(mut self) -> bool {
        let mut child = self.0.take().expect("running");
        signal(child.id(), "-TERM");
        let status = tokio::task::spawn_blocking(move || child.wait()).await;
        status.unwrap().unwrap().success()
    }

    /// SIGKILL, as a crash: no goodbye, no cleanup.
    pub fn kill(mut self) {
        if let Some(mut child) = self.0.take() {
            signal(child.id(), "-KILL");
            let _ = child.wait();
        }
    }
}

/// A service binary of the workspace as a process, with `env` set, logging warnings only.
pub fn service(package: &str, env: &[(&str, String)]) -> Process {
    let mut command = Command::new(super::binary(package, package));
    command.env("RUST_LOG", "warn").stdout(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    Process::spawn(&mut command)
}

fn signal(pid: u32, which: &str) {
    let sent = Command::new("kill")
        .args([which, &pid.to_string()])
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "kill {which} {pid}");
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
        }
    }
}
