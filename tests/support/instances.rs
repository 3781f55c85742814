//! ilo-api instances as processes, several on one database and one Redis, as operators run them.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::postgres::free_port;
use super::process::{Process, service};

/// The Redis the instances share.
#[derive(Clone, Copy)]
pub enum SharedRedis<'a> {
    /// `REDIS_URL`.
    One(&'a str),
    /// `REDIS_CLUSTER`'s seeds.
    Cluster(&'a str),
}

pub struct Instance {
    pub ip: Ipv4Addr,
    pub http: u16,
    pub grpc: u16,
    process: Option<Process>,
}

impl Instance {
    /// An instance on `ip` (free ports) with every rate limit off unless `env` sets one; waits
    /// until it is ready and hears the other instances.
    pub async fn start(
        ip: Ipv4Addr,
        database: &str,
        redis: SharedRedis<'_>,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_on(ip, free_port(), free_port(), database, redis, env).await
    }

    pub async fn start_on(
        ip: Ipv4Addr,
        http: u16,
        grpc: u16,
        database: &str,
        redis: SharedRedis<'_>,
        env: &[(&str, &str)],
    ) -> Self {
        let mut settings: Vec<(&str, String)> = vec![
            ("ILO_HTTP_ADDR", format!("{ip}:{http}")),
            ("ILO_GRPC_ADDR", format!("{ip}:{grpc}")),
            ("DATABASE_URL", database.to_owned()),
            ("ILO_TRUSTED_PROXIES", "127.0.0.1".into()),
        ];
        settings.push(match redis {
            SharedRedis::One(url) => ("REDIS_URL", url.to_owned()),
            SharedRedis::Cluster(seeds) => ("REDIS_CLUSTER", seeds.to_owned()),
        });
        for limit in [
            "ILO_KEY_RATE",
            "ILO_LOGIN_FAILURES",
            "ILO_LOOKUP_RATE",
            "ILO_LOGIN_RATE",
            "ILO_REGISTER_RATE",
            "ILO_HASH_PER_CLIENT",
        ] {
            settings.push((limit, "0".into()));
        }
        settings.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let instance = Self {
            ip,
            http,
            grpc,
            process: Some(service("ilo-api", &settings)),
        };
        super::wait_until_ok(&instance.url("/ready"), Duration::from_secs(15)).await;
        instance.wait_hearing(true).await;
        instance
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.ip, self.http)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.grpc)
    }

    /// Whether its `/metrics` says it hears the other instances' revocations.
    pub async fn hearing(&self) -> bool {
        super::text_of(&self.url("/metrics"))
            .await
            .lines()
            .any(|line| line == "ilo_api_hearing_revocations 1")
    }

    pub async fn wait_hearing(&self, up: bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.hearing().await != up {
            assert!(
                tokio::time::Instant::now() < deadline,
                "hearing revocations never became {up}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many `ValidateToken` calls it answered from its cache.
    pub async fn cached_validations(&self) -> u64 {
        self.counter("ilo_api_token_validations_total{outcome=\"cached\"}")
            .await
    }

    /// How many logins succeeded through it.
    pub async fn logins(&self) -> u64 {
        self.counter("ilo_api_logins_total{outcome=\"success\"}")
            .await
    }

    async fn counter(&self, name: &str) -> u64 {
        let metrics = super::text_of(&self.url("/metrics")).await;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map_or(0, |n| n.parse().unwrap())
    }

    /// SIGTERM, and waits until it has stopped.
    pub async fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.terminate().await;
        }
    }
}
