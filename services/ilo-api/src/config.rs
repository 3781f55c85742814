//! ilo-api's settings: every one a flag and an environment variable (the flag wins).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Ilo's REST API and gRPC token service.
#[derive(Debug, Clone, Parser)]
#[command(name = "ilo-api", version, about)]
pub struct Config {
    /// REST listen address.
    #[arg(long, env = "ILO_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// gRPC listen address (token service for relays).
    #[arg(long, env = "ILO_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Database: `sqlite://<path>` (`sqlite:///abs/path.db`, `sqlite://relative.db`) or `postgres://...`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/ilo.db")]
    pub database_url: Secret,

    /// Session lifetime: a number and a unit (`s`, `m`, `h`, `d`).
    #[arg(long, env = "ILO_TOKEN_TTL", default_value = "24h", value_parser = ilo_runtime::parse_duration)]
    pub token_ttl: Duration,

    /// Redis, shared by every ilo-api instance: revocations (channel `ilo:revocations`) and
    /// rate limits. Unset: one instance per database, limits counted in memory.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<Secret>,

    /// A Redis Cluster instead of one Redis: comma-separated seed nodes
    /// (`redis://10.0.0.5:7000,redis://10.0.0.6:7000`), for the same revocations and limits.
    /// Used instead of `REDIS_URL` when set.
    #[arg(long, env = "REDIS_CLUSTER")]
    pub redis_cluster: Option<Secret>,

    /// `POST /key` per client address per minute (0: unlimited).
    #[arg(long, env = "ILO_KEY_RATE", default_value_t = 10)]
    pub key_rate: u32,

    /// Failed logins per 15 minutes per client address (in all, and for one username) before 429;
    /// past this many for one username from anywhere, its logins are slowed by growing delays
    /// of at most 8 s (0: unlimited).
    #[arg(long, env = "ILO_LOGIN_FAILURES", default_value_t = 10)]
    pub login_failures: u32,

    /// Successful logins per client address per minute, and ten times as many per API key
    /// (0: unlimited).
    #[arg(long, env = "ILO_LOGIN_RATE", default_value_t = 60)]
    pub login_rate: u32,

    /// Registrations per client address per hour, and ten times as many per API key
    /// (0: unlimited).
    #[arg(long, env = "ILO_REGISTER_RATE", default_value_t = 30)]
    pub register_rate: u32,

    /// `GET /user/{username}` per client address per minute (0: unlimited).
    #[arg(long, env = "ILO_LOOKUP_RATE", default_value_t = 120)]
    pub lookup_rate: u32,

    /// Load balancers whose `X-Forwarded-For` names the client for rate limits (comma-separated
    /// addresses or blocks such as `10.0.0.0/8`); empty: the TCP peer is the client.
    #[arg(
        long,
        env = "ILO_TRUSTED_PROXIES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub trusted_proxies: Vec<ilo_runtime::proxies::TrustedProxy>,

    /// Threads hashing passwords at once (default: the number of CPUs).
    #[arg(long, env = "ILO_HASH_THREADS")]
    pub hash_threads: Option<usize>,

    /// Password hashes one client address may have running or waiting at once; past it, 429
    /// (0: no cap). Keeps one client from filling the hashing queue for everyone.
    #[arg(long, env = "ILO_HASH_PER_CLIENT", default_value_t = 4)]
    pub hash_per_client: usize,

    /// HTTP worker threads (default: the number of CPUs).
    #[arg(long, env = "ILO_HTTP_WORKERS")]
    pub http_workers: Option<usize>,

    /// Database connections in the pool.
    #[arg(long, env = "ILO_DB_POOL", default_value_t = 10)]
    pub db_pool: u32,
}

impl Config {
    /// Settings for tests, whatever the environment holds: defaults, ephemeral ports, the given
    /// database.
    pub fn for_tests(database_url: &str) -> Self {
        let mut config: Self = ilo_runtime::defaults();
        config.http_addr = ([127, 0, 0, 1], 0).into();
        config.grpc_addr = ([127, 0, 0, 1], 0).into();
        config.database_url = Secret(database_url.to_owned());
        config.http_workers = Some(1);
        config.key_rate = 0;
        config.login_failures = 0;
        config.lookup_rate = 0;
        config.login_rate = 0;
        config.register_rate = 0;
        config.hash_per_client = 0;
        config
    }

    pub fn hash_threads(&self) -> usize {
        self.hash_threads.unwrap_or_else(cpus)
    }

    pub fn trusted_proxies(&self) -> Vec<ilo_runtime::proxies::IpNet> {
        ilo_runtime::proxies::blocks(&self.trusted_proxies)
    }

    pub fn http_workers(&self) -> usize {
        self.http_workers.unwrap_or_else(cpus)
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// A URL that may hold a password: printed with the password masked.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.masked())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Secret {
    /// Each URL of a list (`REDIS_CLUSTER`'s seeds) masked.
    fn masked(&self) -> String {
        self.0
            .split(',')
            .map(mask_url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `scheme://user:password@host` → `scheme://user:***@host`; a query (which may hold a password) is masked too.
pub(crate) fn mask_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, _)) => (base, "?***"),
        None => (url, ""),
    };
    let Some((scheme, rest)) = base.split_once("://") else {
        return format!("{base}{query}");
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let masked = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{masked}@{host}{query}")
        }
        None => format!("{base}{query}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            mask_url("postgres://ilo:hunter2@db:5432/ilo"),
            "postgres://ilo:***@db:5432/ilo"
        );
        assert_eq!(
            mask_url("postgres://db/ilo?password=hunter2"),
            "postgres://db/ilo?***"
        );
        assert_eq!(mask_url("sqlite://data/ilo.db"), "sqlite://data/ilo.db");
        assert_eq!(
            mask_url("redis://:pw@127.0.0.1/"),
            "redis://:***@127.0.0.1/"
        );
        assert_eq!(
            Secret("redis://:pw@a:7000,redis://:pw@b:7000".into()).to_string(),
            "redis://:***@a:7000,redis://:***@b:7000"
        );
    }
}
