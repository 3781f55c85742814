//! The standalone launcher's server (ilo-api + relay on one port) in this process.

use std::net::SocketAddr;

use tokio::sync::oneshot;

use super::{Backend, TestDb};

pub struct TestStandalone {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub db: TestDb,
}

impl TestStandalone {
    /// On an ephemeral port with a fresh SQLite database, rate limits off.
    pub async fn spawn() -> Self {
        Self::spawn_on(
            ([127, 0, 0, 1], 0).into(),
            TestDb::new(Backend::Sqlite),
            None,
        )
        .await
    }

    /// With `DATABASE_URL` and `REDIS_URL` set: a fresh PostgreSQL database and this Redis.
    pub async fn spawn_on_postgres_and_redis(redis_url: &str) -> Self {
        let db = TestDb::new(Backend::Postgres);
        Self::spawn_on(([127, 0, 0, 1], 0).into(), db, Some(redis_url)).await
    }

    /// Stops it as SIGTERM would (clients get 1001), then starts it again on the same port and
    /// database, the way an operator restarts it.
    pub async fn restart(mut self) -> Self {
        let addr = self.addr;
        let db = std::mem::replace(&mut self.db, TestDb::new(Backend::Sqlite));
        self.stop().await;
        Self::spawn_on(addr, db, None).await
    }

    async fn spawn_on(addr: SocketAddr, db: TestDb, redis: Option<&str>) -> Self {
        let mut api = ilo_api::Config::for_tests(&db.url());
        api.http_addr = addr;
        api.hash_threads = Some(2);
        let mut relay = potion::Config::for_tests("http://unused");
        relay.send_rate = 0;
        relay.redis_url = redis.map(str::to_owned);
        let ilo = ilo::Standalone::build(api, relay)
            .await
            .expect("ilo starts");
        let addr = ilo.addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = tokio::spawn(ilo.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            stopped: Some(stopped),
            db,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Stops the server and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            stopped.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestStandalone {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
