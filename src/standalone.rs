//! One HTTP server carrying both services. The relay validates tokens through ilo-api's gRPC
//! port like any other relay; that port listens on an ephemeral loopback address only.

use std::future::Future;
use std::net::SocketAddr;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer};

use crate::{probes, web};

pub struct Standalone {
    addr: SocketAddr,
    server: actix_web::dev::Server,
    api: ilo_api::Services,
    relay: potion::RelayService,
}

impl Standalone {
    /// Binds `api_config.http_addr` for everything; `relay_config`'s address and ilo-api URL
    /// are ignored (the relay is mounted on the same port and calls this process's gRPC).
    pub async fn build(
        mut api_config: ilo_api::Config,
        mut relay_config: potion::Config,
    ) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(api_config.http_addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", api_config.http_addr))?;
        let addr = listener.local_addr()?;
        api_config.grpc_addr = ([127, 0, 0, 1], 0).into();
        let api = ilo_api::Services::build(&api_config).await?;
        relay_config.ilo_grpc_url = format!("http://{}", api.grpc_addr());
        let relay = potion::RelayService::build(relay_config)?;

        let parts = probes::Parts::new(api.api(), relay.clone());
        let server = HttpServer::new(move || {
            // Order matters: the API mounts the 404 fallback, so it comes last.
            App::new()
                .wrap(from_fn(ilo_api::observe))
                .configure(|cfg| parts.mount(cfg))
                .configure(web::mount)
                .configure(|cfg| parts.relay.mount(cfg))
                .configure(|cfg| parts.api.mount(cfg))
        })
        .on_connect(potion::no_delay)
        .workers(api_config.http_workers())
        .disable_signals()
        .shutdown_timeout(potion::DRAIN.as_secs())
        .listen(listener)?
        .run();
        Ok(Self {
            addr,
            server,
            api,
            relay,
        })
    }

    /// The one address clients use: REST, `/ws` and the web client.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the data is: a SQLite file's absolute path, or the masked PostgreSQL URL.
    pub fn database(&self) -> &str {
        self.api.database()
    }

    /// Serves until `shutdown` completes; then the relay closes its connections with 1001,
    /// and ilo-api and the server stop.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        let running = self.api.start();
        let revocations = self.relay.start();
        tracing::info!(addr = %self.addr, "ilo is listening");

        shutdown.await;
        self.relay.shut_down().await;
        let (stopped, ()) = tokio::join!(running.stop(), handle.stop(true));
        let _ = revocations.await;
        server.await??;
        stopped
    }
}
