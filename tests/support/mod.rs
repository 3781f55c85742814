//! What every end-to-end test needs: real databases, the real service on loopback, and the few
//! REST calls most tests begin with.
#![allow(dead_code, clippy::unwrap_used)]

pub mod browser;
pub mod bus;
pub mod cluster;
pub mod dns;
pub mod e2e;
pub mod ilo_chat;
pub mod instances;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod relay;
pub mod standalone;
pub mod ws;

use std::net::SocketAddr;

use base64::Engine as _;
use diesel::{Connection, PgConnection, RunQueryDsl};
use ilo_api::{Application, Config};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// A binary of the workspace (`target/<profile>/<name>`), built first if `cargo test` did not.
pub fn binary(package: &str, name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let binary = dir.join(name);
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", package, "--bin", name])
            .status()
            .unwrap();
        assert!(status.success(), "cannot build {name}");
    }
    binary
}

/// The body of `GET url` (metrics, probes), whatever the status.
pub async fn text_of(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Polls `url` until it answers 200, as an orchestrator polls a readiness probe; panics after
/// `patience`.
pub async fn wait_until_ok(url: &str, patience: std::time::Duration) {
    let deadline = std::time::Instant::now() + patience;
    loop {
        if let Ok(reply) = reqwest::get(url).await
            && reply.status() == 200
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} never answered 200"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The PostgreSQL server tests make their databases on (trust auth).
pub fn postgres_admin_url() -> String {
    std::env::var("ILO_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of its own for one test, removed when dropped.
pub enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    pub fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::Sqlite(tempfile::tempdir().unwrap()),
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let name = format!("ilo_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::establish(&admin_url)
                    .expect("PostgreSQL must be reachable: run the tests with scripts/test");
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .unwrap();
                Self::Postgres { admin_url, name }
            }
        }
    }

    pub fn url(&self) -> String {
        match self {
            Self::Sqlite(dir) => format!("sqlite://{}", dir.path().join("ilo.db").display()),
            Self::Postgres { admin_url, name } => {
                let base = admin_url.rsplit_once('/').unwrap().0;
                format!("{base}/{name}")
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Self::Postgres { admin_url, name } = self
            && let Ok(mut admin) = PgConnection::establish(admin_url)
        {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin);
        }
    }
}

/// ilo-api running in this process on ephemeral loopback ports; stopped when dropped.
pub struct TestApp {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub db: TestDb,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts the service with test defaults (limits off) adjusted by `adjust`.
    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new(backend);
        Self::spawn_on(db, adjust).await
    }

    pub async fn spawn_on(db: TestDb, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::for_tests(&db.url());
        config.hash_threads = Some(2);
        adjust(&mut config);
        let app = Application::build(config).await.expect("ilo-api starts");
        let (http, grpc) = (app.http_addr(), app.grpc_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            http,
            grpc,
            client: reqwest::Client::new(),
            stop: Some(stop),
            stopped: Some(stopped),
            db,
        }
    }

    /// Stops the service and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            stopped.await.unwrap().unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub async fn new_api_key(&self) -> String {
        let reply = self.client.post(self.url("/key")).send().await.unwrap();
        assert_eq!(reply.status(), 201);
        detail(reply).await
    }

    pub async fn post_user(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/user"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn put_user(&self, body: &Value) -> reqwest::Response {
        self.client
            .put(self.url("/user"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Creates `username` with [`PASSWORD`] and a fresh key; returns the key.
    pub async fn create_user(&self, username: &str) -> String {
        let api_key = self.new_api_key().await;
        let reply = self.post_user(&new_user(username, &api_key)).await;
        assert_eq!(reply.status(), 201, "{}", reply.text().await.unwrap());
        api_key
    }

    /// Logs `username` in with [`PASSWORD`]; returns the token.
    pub async fn login(&self, username: &str, api_key: &str) -> String {
        let reply = self
            .put_user(&json!({"username": username, "password": PASSWORD, "api_key": api_key}))
            .await;
        assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
        let body: Value = reply.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// `DELETE /session` with `token`; the status.
    pub async fn logout(&self, token: &str) -> u16 {
        let reply = self
            .client
            .delete(self.url("/session"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        reply.status().as_u16()
    }

    /// `GET /user/{username}` (the name already URL-encoded where it needs to be).
    pub async fn public_key_reply(&self, username: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/user/{username}")))
            .send()
            .await
            .unwrap()
    }

    pub async fn status_of_public_key(&self, username: &str) -> u16 {
        self.public_key_reply(username).await.status().as_u16()
    }

    /// `DELETE /key/{key}`.
    pub async fn revoke_key(&self, key: &str) -> reqwest::Response {
        self.client
            .delete(self.url(&format!("/key/{key}")))
            .send()
            .await
            .unwrap()
    }

    pub async fn tokens_client(
        &self,
    ) -> ilo_proto::v1::tokens_client::TokensClient<tonic::transport::Channel> {
        ilo_proto::v1::tokens_client::TokensClient::connect(self.grpc_url())
            .await
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub const PASSWORD: &str = "MySuperSecurePassword57!";

pub fn public_key() -> String {
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

pub fn new_user(username: &str, api_key: &str) -> Value {
    json!({"username": username, "password": PASSWORD, "public_key": public_key(), "api_key": api_key})
}

pub async fn detail(reply: reqwest::Response) -> String {
    let body: Value = reply.json().await.unwrap();
    body["detail"].as_str().unwrap().to_owned()
}

/// Status and `{detail, code}` of an error reply, asserting the shape.
pub async fn error_of(reply: reqwest::Response) -> (u16, String, String) {
    let status = reply.status().as_u16();
    let body: Value = reply.json().await.expect("error bodies are JSON");
    let detail = body["detail"]
        .as_str()
        .expect("detail is a string")
        .to_owned();
    let code = body["code"].as_str().expect("code is a string").to_owned();
    (status, detail, code)
}

/// Declares `async fn $name(backend: Backend)` as one test per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::support::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::support::Backend::Postgres).await })*
        }
    };
}
