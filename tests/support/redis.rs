//! A private Redis server for one test, on its own port; killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PrivateRedis {
    child: Child,
    pub port: u16,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let port = super::postgres::free_port();
        Self {
            child: Self::spawn(port),
            port,
        }
    }

    /// Starts one off the async runtime's threads (it waits for the port).
    pub async fn start_async() -> Self {
        tokio::task::spawn_blocking(Self::start).await.unwrap()
    }

    /// Kills the server (as a crash would: nothing is kept) and starts a new one on its port.
    pub fn restart_after(&mut self, outage: Duration) {
        self.kill();
        std::thread::sleep(outage);
        self.child = Self::spawn(self.port);
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn spawn(port: u16) -> Child {
        let child = redis_server(port)
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-server` on loopback `port`, keeping nothing on disk; more arguments may follow.
pub fn redis_server(port: u16) -> Command {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null());
    command
}
