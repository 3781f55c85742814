//! potion relays started in this process against a real ilo-api, and users to connect with.

use std::net::SocketAddr;

use potion::{Application, Config};
use tokio::sync::oneshot;

use super::TestApp;
use super::ws::{self, Presented, Ws};

pub struct TestRelay {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestRelay {
    /// A relay on an ephemeral port, send and join limits off unless `adjust` sets them.
    pub async fn spawn(
        api: &TestApp,
        redis: Option<&str>,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        Self::spawn_on(&api.grpc_url(), redis, adjust).await
    }

    /// Like [`TestRelay::spawn`], validating through the ilo-api at `grpc_url`.
    pub async fn spawn_on(
        grpc_url: &str,
        redis: Option<&str>,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config::for_tests(grpc_url);
        config.redis_url = redis.map(str::to_owned);
        config.send_rate = 0;
        config.join_rate = 0;
        adjust(&mut config);
        let app = Application::build(config).await.expect("potion starts");
        let addr = app.addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let relay = Self {
            addr,
            stop: Some(stop),
            stopped: Some(stopped),
        };
        if redis.is_some() {
            relay.wait_ready().await;
        }
        relay
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn connect(&self, token: &str) -> Ws {
        let mut ws = ws::connect(&self.ws_url("/ws"), token, Presented::Header)
            .await
            .expect("upgrade accepted");
        ws.welcome().await;
        ws
    }

    /// `n` relays sharing the Redis at `redis`, each configured by `adjust`.
    pub async fn several(
        api: &TestApp,
        redis: &str,
        n: usize,
        adjust: impl Fn(&mut Config),
    ) -> Vec<Self> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(Self::spawn(api, Some(redis), &adjust).await);
        }
        out
    }

    /// `n` relays sharing `bus` (one Redis or a cluster), each configured by `adjust`.
    pub async fn several_on(
        api: &TestApp,
        bus: &super::bus::SharedBus,
        n: usize,
        adjust: impl Fn(&mut Config),
    ) -> Vec<Self> {
        let mut out = Vec::new();
        for _ in 0..n {
            let relay = Self::spawn(api, None, |c| {
                bus.configure(c);
                adjust(c);
            })
            .await;
            relay.wait_ready().await;
            out.push(relay);
        }
        out
    }

    /// Waits until `/ready` says the bus and ilo-api are reachable.
    pub async fn wait_ready(&self) {
        super::wait_until_ok(&self.http_url("/ready"), std::time::Duration::from_secs(10)).await;
    }

    /// Stops the relay as SIGTERM would, and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            stopped.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Creates `name` and logs it in; the token.
pub async fn user(api: &TestApp, name: &str) -> String {
    let key = api.create_user(name).await;
    api.login(name, &key).await
}
