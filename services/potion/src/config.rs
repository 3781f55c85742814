//! potion's settings: every one a flag and an environment variable (the flag wins).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Ilo's WebSocket relay.
#[derive(Debug, Clone, Parser)]
#[command(name = "potion", version, about)]
pub struct Config {
    /// Listen address.
    #[arg(long, env = "POTION_ADDR", default_value = "127.0.0.1:8081")]
    pub addr: SocketAddr,

    /// Where tokens are validated (ilo-api's gRPC address).
    #[arg(long, env = "ILO_GRPC_URL", default_value = "http://127.0.0.1:50051")]
    pub ilo_grpc_url: String,

    /// Redis for fan-out across relays; unset: the in-process bus (one relay only).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Redis Cluster instead of one Redis: comma-separated seed nodes
    /// (`redis://10.0.0.5:7000,redis://10.0.0.6:7000`). Rooms' messages use sharded pub/sub, so
    /// each touches only the shard that owns the room. Used instead of `REDIS_URL` when set.
    #[arg(long, env = "REDIS_CLUSTER")]
    pub redis_cluster: Option<String>,

    /// Allowed WebSocket origins, comma-separated (`*`: any). Requests without an Origin header
    /// (non-browser clients) and from the relay's own origin are always allowed.
    #[arg(long, env = "POTION_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Rooms per connection.
    #[arg(long, env = "POTION_MAX_ROOMS", default_value_t = 32)]
    pub max_rooms: usize,

    /// Largest `body`, in UTF-8 bytes.
    #[arg(long, env = "POTION_MAX_BODY", default_value_t = ilo_protocol::MAX_BODY_BYTES)]
    pub max_body: usize,

    /// Sends per connection allowed in a burst.
    #[arg(long, env = "POTION_SEND_BURST", default_value_t = 50)]
    pub send_burst: u32,

    /// Sends per connection per second after the burst (0: unlimited).
    #[arg(long, env = "POTION_SEND_RATE", default_value_t = 20)]
    pub send_rate: u32,

    /// Joins and leaves per connection allowed in a burst.
    #[arg(long, env = "POTION_JOIN_BURST", default_value_t = 20)]
    pub join_burst: u32,

    /// Joins and leaves per connection per second after the burst (0: unlimited).
    #[arg(long, env = "POTION_JOIN_RATE", default_value_t = 5)]
    pub join_rate: u32,

    /// Open connections per user on this relay; past it, upgrades get 429.
    #[arg(long, env = "POTION_MAX_CONNECTIONS_PER_USER", default_value_t = 32)]
    pub max_connections_per_user: usize,

    /// Open connections per client address on this relay; past it, upgrades get 429.
    #[arg(
        long,
        env = "POTION_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 256
    )]
    pub max_connections_per_address: usize,

    /// Load balancers whose `X-Forwarded-For` names the client, for the per-address cap
    /// (comma-separated addresses or blocks such as `10.0.0.0/8`); empty: the TCP peer is the
    /// client. Trust only your own load balancer.
    #[arg(
        long,
        env = "POTION_TRUSTED_PROXIES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub trusted_proxies: Vec<ilo_runtime::proxies::TrustedProxy>,

    /// Outbound frames queued per connection before it is closed with 4009.
    #[arg(long, env = "POTION_QUEUE", default_value_t = 1024)]
    pub queue: usize,

    /// Longest, in milliseconds, that frames for a busy connection (at least 4 frames per this
    /// on average) wait to share one write; quieter connections are written at once.
    /// 0: every frame is written as soon as it is queued.
    #[arg(long, env = "POTION_COALESCE_MS", default_value_t = 16)]
    pub coalesce_ms: u64,

    /// Seconds between pings.
    #[arg(long, env = "POTION_PING_SECS", default_value_t = 20)]
    pub ping_secs: u64,

    /// Seconds of silence from a client before it is closed with 4000.
    #[arg(long, env = "POTION_IDLE_SECS", default_value_t = 60)]
    pub idle_secs: u64,

    /// Messages kept per room, for clients that reconnect or open a room (0: no history, and
    /// messages carry no epoch or offset).
    #[arg(long, env = "POTION_HISTORY_SIZE", default_value_t = 100)]
    pub history_size: usize,

    /// How long a room's history is kept after its last message (a number and a unit: `s`,
    /// `m`, `h`, `d`).
    #[arg(long, env = "POTION_HISTORY_TTL", default_value = "24h", value_parser = ilo_runtime::parse_duration)]
    pub history_ttl: Duration,

    /// Seconds a relay's presence entries live in Redis without being refreshed.
    #[arg(long, env = "POTION_LEASE_SECS", default_value_t = 15)]
    pub lease_secs: u64,

    /// HTTP worker threads (default: the number of CPUs).
    #[arg(long, env = "POTION_WORKERS")]
    pub workers: Option<usize>,
}

impl Config {
    /// Defaults for tests, whatever the environment holds: an ephemeral port, limits as
    /// documented.
    pub fn for_tests(ilo_grpc_url: &str) -> Self {
        let mut config: Self = ilo_runtime::defaults();
        config.addr = ([127, 0, 0, 1], 0).into();
        config.ilo_grpc_url = ilo_grpc_url.to_owned();
        config.workers = Some(1);
        config
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_secs.max(1))
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_secs.max(1))
    }

    pub fn coalesce(&self) -> Duration {
        Duration::from_millis(self.coalesce_ms)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs.max(3))
    }

    pub fn workers(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
    }
}
