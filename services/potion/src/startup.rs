//! Wires a relay together. [`RelayService`] is a relay without an HTTP listener: it picks the
//! bus (`REDIS_URL` or in process), follows revocations, mounts `/ws` on any actix-web app and
//! shuts down by closing every connection with 1001. [`Application`] serves it on its own port
//! (bound first: tests use port 0); the standalone launcher mounts it next to ilo-api.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::Auth;
use crate::bus::Bus;
use crate::bus::link::Target;
use crate::bus::local::LocalBus;
use crate::bus::redis::{RedisBus, Retention};
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::{probes, upgrade};

/// How long shutdown waits for connections to take their close frames.
pub const DRAIN: Duration = Duration::from_secs(5);

/// A relay, ready to be mounted on the workers of an actix-web server.
#[derive(Clone)]
pub struct RelayService {
    relay: web::Data<Arc<Relay>>,
    stop: Arc<watch::Sender<bool>>,
    /// The Redis connections, until the first worker that mounts the relay takes them.
    bus_driver: Arc<Mutex<Option<Arc<RedisBus>>>>,
}

/// Whether a relay can serve: its bus and ilo-api reachable, not shutting down.
pub struct Readiness {
    pub bus: bool,
    pub auth: bool,
    pub stopping: bool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.bus && self.auth && !self.stopping
    }
}

impl RelayService {
    pub fn build(config: Config) -> anyhow::Result<Self> {
        // A replay goes into the joiner's outbox at once: it must fit there.
        anyhow::ensure!(
            config.history_size < config.queue,
            "POTION_HISTORY_SIZE ({}) must be below POTION_QUEUE ({}): a replay is queued at once",
            config.history_size,
            config.queue
        );
        let metrics = Arc::new(Metrics::new());
        let hub = Arc::new(Hub::new(metrics.clone()));
        let relay_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let target = match (&config.redis_cluster, &config.redis_url) {
            (Some(seeds), url) => {
                if url.is_some() {
                    tracing::warn!("REDIS_CLUSTER is set: REDIS_URL is not used");
                }
                Some(Target::cluster(seeds)?)
            }
            (None, Some(url)) => Some(Target::one(url)?),
            (None, None) => None,
        };
        let (bus, redis): (Arc<dyn Bus>, _) = match target {
            Some(target) => {
                let retention = Retention {
                    size: config.history_size,
                    ttl: config.history_ttl,
                };
                let redis = RedisBus::new(
                    target,
                    hub.clone(),
                    relay_id.clone(),
                    config.lease(),
                    retention,
                    metrics.clone(),
                )?;
                (redis.clone(), Some(redis))
            }
            None => {
                let local = LocalBus::new(hub.clone(), config.history_size, config.history_ttl);
                (Arc::new(local), None)
            }
        };
        let auth = Arc::new(Auth::new(&config.ilo_grpc_url, metrics.clone())?);
        let (stop, stopping) = watch::channel(false);
        let relay = Relay::new(config, hub, bus, auth, metrics, relay_id, stopping);
        Ok(Self {
            relay: web::Data::new(Arc::new(relay)),
            stop: Arc::new(stop),
            bus_driver: Arc::new(Mutex::new(redis)),
        })
    }

    /// Registers `/ws` and `/ws/{room}`. Call it from the server's app factory: the first worker
    /// to mount the relay also drives its Redis connections, so a message from Redis reaches that
    /// worker's connections without waking another thread.
    pub fn mount(&self, cfg: &mut web::ServiceConfig) {
        let driver = self.bus_driver.lock().ok().and_then(|mut d| d.take());
        if let Some(redis) = driver {
            actix_web::rt::spawn(redis.maintain(self.relay.stopping.clone()));
        }
        cfg.app_data(self.relay.clone())
            .route("/ws", web::get().to(upgrade::ws))
            .route("/ws/{room}", web::get().to(upgrade::ws_room));
    }

    /// Starts following ilo-api's revocations.
    pub fn start(&self) -> JoinHandle<()> {
        let relay = self.relay.get_ref();
        tracing::info!(relay = %relay.relay_id, "potion relay started");
        tokio::spawn(
            relay
                .auth
                .clone()
                .follow_revocations(relay.hub.clone(), relay.stopping.clone()),
        )
    }

    /// Refuses new connections, closes every open one with 1001 and waits (at most [`DRAIN`])
    /// until they are gone.
    pub async fn shut_down(&self) {
        let hub = &self.relay.hub;
        tracing::info!(connections = hub.connection_count(), "relay shutting down");
        let _ = self.stop.send(true);
        hub.close_all(ilo_protocol::close::GOING_AWAY);
        let deadline = tokio::time::Instant::now() + DRAIN;
        while hub.connection_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn readiness(&self) -> Readiness {
        probes::readiness(self.relay.get_ref()).await
    }

    /// The Prometheus text of the relay's metrics.
    pub fn metrics(&self) -> String {
        self.relay.metrics.encode()
    }

    pub fn workers(&self) -> usize {
        self.relay.config.workers()
    }
}

/// Nagle off: frames are small and latency matters more than packet count. For `on_connect`.
pub fn no_delay(connection: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        let _ = tcp.set_nodelay(true);
    }
}

/// One relay on its own port.
pub struct Application {
    addr: SocketAddr,
    server: actix_web::dev::Server,
    service: RelayService,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(config.addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.addr))?;
        let addr = listener.local_addr()?;
        let service = RelayService::build(config)?;
        let mounted = service.clone();
        let server = HttpServer::new(move || {
            App::new()
                .configure(|cfg| mounted.mount(cfg))
                .route("/health", web::get().to(probes::health))
                .route("/ready", web::get().to(probes::ready))
                .route("/metrics", web::get().to(probes::metrics))
        })
        .on_connect(no_delay)
        .workers(service.workers())
        .disable_signals()
        .shutdown_timeout(DRAIN.as_secs())
        .listen(listener)?
        .run();
        Ok(Self {
            addr,
            server,
            service,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        let revocations = self.service.start();
        tracing::info!(addr = %self.addr, "potion is listening");

        shutdown.await;
        self.service.shut_down().await;
        handle.stop(true).await;
        let _ = revocations.await;
        server.await??;
        Ok(())
    }
}
