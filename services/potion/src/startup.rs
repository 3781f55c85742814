//! Wires a relay together: binds first (tests use port 0), picks the bus (`REDIS_URL` or in
//! process), starts the revocation follower, and runs until one shutdown signal, which closes
//! every connection with 1001 before the server stops.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use tokio::sync::watch;

use crate::auth::Auth;
use crate::bus::Bus;
use crate::bus::local::LocalBus;
use crate::bus::redis::RedisBus;
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::{probes, upgrade};

/// How long shutdown waits for connections to take their close frames.
const DRAIN: Duration = Duration::from_secs(5);

pub struct Application {
    addr: SocketAddr,
    server: actix_web::dev::Server,
    relay: Arc<Relay>,
    stop: watch::Sender<bool>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(config.addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.addr))?;
        let addr = listener.local_addr()?;
        let metrics = Arc::new(Metrics::new());
        let hub = Arc::new(Hub::new(metrics.clone()));
        let relay_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let (bus, redis): (Arc<dyn Bus>, _) = match &config.redis_url {
            Some(url) => {
                let redis = RedisBus::new(
                    url,
                    hub.clone(),
                    relay_id.clone(),
                    config.lease(),
                    metrics.clone(),
                )?;
                (redis.clone(), Some(redis))
            }
            None => (Arc::new(LocalBus::new(hub.clone())), None),
        };
        let auth = Arc::new(Auth::new(&config.ilo_grpc_url, metrics.clone())?);
        let (stop, stopping) = watch::channel(false);
        let workers = config.workers();
        let relay = Arc::new(Relay::new(
            config, hub, bus, auth, metrics, relay_id, stopping,
        ));
        let data = web::Data::new(relay.clone());
        // The Redis connections live on the first HTTP worker's thread, so a message from Redis
        // is delivered to that worker's connections without waking another thread.
        let bus_driver = Arc::new(std::sync::Mutex::new(redis.clone()));
        let stopping_bus = relay.stopping.clone();
        let server = HttpServer::new(move || {
            let driver = bus_driver.lock().ok().and_then(|mut d| d.take());
            if let Some(redis) = driver {
                actix_web::rt::spawn(redis.maintain(stopping_bus.clone()));
            }
            App::new()
                .app_data(data.clone())
                .route("/ws", web::get().to(upgrade::ws))
                .route("/ws/{room}", web::get().to(upgrade::ws_room))
                .route("/health", web::get().to(probes::health))
                .route("/ready", web::get().to(probes::ready))
                .route("/metrics", web::get().to(probes::metrics))
        })
        // Nagle off: frames are small and latency matters more than packet count.
        .on_connect(|connection, _| {
            if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(DRAIN.as_secs())
        .listen(listener)?
        .run();
        Ok(Self {
            addr,
            server,
            relay,
            stop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let relay = self.relay;
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        let revocations = tokio::spawn(
            relay
                .auth
                .clone()
                .follow_revocations(relay.hub.clone(), relay.stopping.clone()),
        );
        tracing::info!(addr = %self.addr, relay = %relay.relay_id, "potion is listening");

        shutdown.await;
        tracing::info!(connections = relay.hub.connection_count(), "shutting down");
        let _ = self.stop.send(true);
        relay.hub.close_all(ilo_protocol::close::GOING_AWAY);
        let deadline = tokio::time::Instant::now() + DRAIN;
        while relay.hub.connection_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        handle.stop(true).await;
        let _ = revocations.await;
        server.await??;
        Ok(())
    }
}
