//! Wires the pieces together. [`Services`] is ilo-api without an HTTP listener: the state, the
//! gRPC listener and the background chores. [`Application`] serves it on its own port; the
//! standalone launcher mounts the same [`Api`] next to a relay on one shared port.
//! Listeners are bound first, so tests can use port 0 and learn the real port.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::limits::{self, Limits, Settings};
use crate::metrics::Metrics;
use crate::passwords::Passwords;
use crate::revocations::{self, Publisher};
use crate::sessions::{Sessions, unix_now};
use crate::shared::Shared;
use crate::state::AppState;
use crate::store::{self, Database, Store};
use crate::{grpc, http};

/// How often expired sessions are removed from the database.
const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// The REST API, ready to be mounted on an actix-web `App` (wrap the app in [`observe`]).
#[derive(Clone)]
pub struct Api {
    state: web::Data<AppState>,
}

pub use http::observe;

impl Api {
    /// Registers the shared state and every route of `api.md`, including the 404 fallback.
    pub fn mount(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(self.state.clone()).configure(http::routes);
    }

    /// Whether the database answers.
    pub async fn ready(&self) -> bool {
        self.state.store.ping(http::READY_TIMEOUT).await.is_ok()
    }

    /// The Prometheus text of ilo-api's metrics.
    pub fn metrics(&self) -> String {
        self.state.metrics.encode()
    }
}

/// ilo-api without its HTTP server.
pub struct Services {
    api: Api,
    grpc_addr: SocketAddr,
    grpc_listener: tokio::net::TcpListener,
    /// With Redis: what the revocation listener subscribes with.
    redis: Option<Shared>,
    database: String,
}

impl Services {
    /// Binds the gRPC listener and opens (and migrates) the database.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let grpc_listener = tokio::net::TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.grpc_addr))?;
        let grpc_addr = grpc_listener.local_addr()?;

        let (url, pool) = (config.database_url.expose().to_owned(), config.db_pool);
        let (hash_threads, per_client) = (config.hash_threads(), config.hash_per_client);
        let (store, passwords) = tokio::task::spawn_blocking(move || {
            let passwords = Passwords::new(hash_threads, per_client)?;
            anyhow::Ok((Store::open(&url, pool)?, passwords))
        })
        .await??;

        let redis = match (&config.redis_cluster, &config.redis_url) {
            (Some(seeds), url) => {
                if url.is_some() {
                    tracing::warn!("REDIS_CLUSTER is set: REDIS_URL is not used");
                }
                Some(Shared::cluster(seeds.expose())?)
            }
            (None, Some(url)) => Some(Shared::one(url.expose())?),
            (None, None) => None,
        };
        let publisher = redis.clone().map(Publisher::new);
        let metrics = Metrics::new();
        metrics.hearing_revocations.set(1);
        let state = AppState {
            sessions: Arc::new(Sessions::new(store.clone(), config.token_ttl, publisher)),
            store,
            passwords,
            limits: Arc::new(Limits::new(
                &Settings {
                    key_rate: config.key_rate,
                    login_failures: config.login_failures,
                    lookup_rate: config.lookup_rate,
                    login_rate: config.login_rate,
                    register_rate: config.register_rate,
                },
                redis.clone().map(limits::SharedCounts::new),
            )),
            metrics: Arc::new(metrics),
            trusted_proxies: config.trusted_proxies().into(),
        };
        Ok(Self {
            api: Api {
                state: web::Data::new(state),
            },
            grpc_addr,
            grpc_listener,
            redis,
            database: Database::from_url(config.database_url.expose())?.location(),
        })
    }

    pub fn api(&self) -> Api {
        self.api.clone()
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Where the data is: a SQLite file's absolute path, or the masked PostgreSQL URL.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Starts gRPC, the session sweeper and (with Redis) the revocation listener.
    pub fn start(self) -> Running {
        let (stop, stopping) = watch::channel(false);
        let state = self.api.state.get_ref().clone();
        let grpc = tokio::spawn(grpc::serve(
            self.grpc_listener,
            state.sessions.clone(),
            state.store.clone(),
            state.metrics.clone(),
            stopping.clone(),
        ));
        let mut chores = vec![tokio::spawn(sweep_expired_sessions(state.store.clone()))];
        if let Some(shared) = self.redis {
            chores.push(tokio::spawn(revocations::listen(
                shared,
                state.sessions.clone(),
                state.metrics.clone(),
                stopping,
            )));
        }
        Running { stop, grpc, chores }
    }
}

/// ilo-api's tasks besides HTTP, while they run.
pub struct Running {
    stop: watch::Sender<bool>,
    grpc: JoinHandle<anyhow::Result<()>>,
    chores: Vec<JoinHandle<()>>,
}

impl Running {
    /// Ends the revocation streams, stops gRPC and the chores.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for chore in self.chores {
            chore.abort();
        }
        self.grpc.await?
    }
}

/// ilo-api on its own HTTP port.
pub struct Application {
    http_addr: SocketAddr,
    http: actix_web::dev::Server,
    services: Services,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let http_listener = std::net::TcpListener::bind(config.http_addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.http_addr))?;
        let http_addr = http_listener.local_addr()?;
        let services = Services::build(&config).await?;
        let api = services.api();
        let http = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(observe))
                .configure(|cfg| api.mount(cfg))
        })
        .workers(config.http_workers())
        .disable_signals()
        .listen(http_listener)?
        .run();
        Ok(Self {
            http_addr,
            http,
            services,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.services.grpc_addr()
    }

    /// Serves until `shutdown` completes, then ends the revocation streams, stops HTTP
    /// (finishing requests in flight) and gRPC.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let http_handle = self.http.handle();
        let http = tokio::spawn(self.http);
        let grpc_addr = self.services.grpc_addr();
        let running = self.services.start();
        tracing::info!(http = %self.http_addr, grpc = %grpc_addr, "ilo-api is listening");

        shutdown.await;
        tracing::info!("shutting down");
        let (stopped, ()) = tokio::join!(running.stop(), http_handle.stop(true));
        http.await??;
        stopped
    }
}

async fn sweep_expired_sessions(store: Store) {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        match store
            .run(|conn| store::delete_expired_sessions(conn, unix_now()))
            .await
        {
            Ok(removed) => tracing::info!(removed, "expired sessions removed"),
            Err(e) => tracing::warn!(error = %e, "could not remove expired sessions"),
        }
    }
}
