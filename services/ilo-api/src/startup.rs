//! Wires the pieces together: binds both listeners first (so tests can use port 0 and learn the
//! real port), opens the store, then runs HTTP and gRPC until one shutdown signal stops both.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tokio::sync::watch;

use crate::config::Config;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::passwords::Passwords;
use crate::state::AppState;
use crate::store::{self, Store};
use crate::tokens::{self, Tokens, unix_now};
use crate::{grpc, http};

/// How often expired sessions are removed from the database.
const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

pub struct Application {
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    http: actix_web::dev::Server,
    grpc_listener: tokio::net::TcpListener,
    state: AppState,
    redis_url: Option<String>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let http_listener = std::net::TcpListener::bind(config.http_addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.http_addr))?;
        let grpc_listener = tokio::net::TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.grpc_addr))?;
        let http_addr = http_listener.local_addr()?;
        let grpc_addr = grpc_listener.local_addr()?;

        let (url, pool) = (config.database_url.expose().to_owned(), config.db_pool);
        let hash_threads = config.hash_threads();
        let (store, passwords) = tokio::task::spawn_blocking(move || {
            anyhow::Ok((Store::open(&url, pool)?, Passwords::new(hash_threads)?))
        })
        .await??;

        let metrics = Arc::new(Metrics::new());
        let state = AppState {
            tokens: Arc::new(Tokens::new(store.clone())),
            store,
            passwords,
            limits: Arc::new(Limits::new(
                config.key_rate,
                config.login_failures,
                config.lookup_rate,
            )),
            metrics,
            token_ttl: config.token_ttl,
        };
        let data = web::Data::new(state.clone());
        let http = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .wrap(from_fn(http::observe))
                .configure(http::routes)
        })
        .workers(config.http_workers())
        .disable_signals()
        .listen(http_listener)?
        .run();

        Ok(Self {
            http_addr,
            grpc_addr,
            http,
            grpc_listener,
            state,
            redis_url: config.redis_url.map(|u| u.expose().to_owned()),
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Serves until `shutdown` completes, then stops HTTP (finishing requests in flight),
    /// ends the revocation streams and stops gRPC.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (stop, stopping) = watch::channel(false);
        let http_handle = self.http.handle();
        let http = tokio::spawn(self.http);
        let state = self.state;
        let grpc = tokio::spawn(grpc::serve(
            self.grpc_listener,
            state.tokens.clone(),
            state.store.clone(),
            state.metrics.clone(),
            stopping,
        ));
        let mut chores = vec![tokio::spawn(sweep_expired_sessions(state.store.clone()))];
        if let Some(url) = self.redis_url {
            chores.push(tokio::spawn(tokens::publish_to_redis(
                url,
                state.tokens.subscribe(),
            )));
        }
        tracing::info!(http = %self.http_addr, grpc = %self.grpc_addr, "ilo-api is listening");

        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
        http_handle.stop(true).await;
        for chore in chores {
            chore.abort();
        }
        http.await??;
        grpc.await??;
        Ok(())
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
