//! The Redis every instance shares (`REDIS_URL`, or a cluster's seed nodes in `REDIS_CLUSTER`):
//! commands (publishing revocations, counting limits) on a connection made on first use and
//! again after a failure, so an instance starts and serves while Redis is down; and the nodes
//! its revocation listener can subscribe on.

use std::sync::Arc;
use std::time::Duration;

use ilo_runtime::redis::Link;
use redis::aio::ConnectionManager;
use redis::cluster::{ClusterClient, ClusterClientBuilder};

/// How long a Redis command may take before Redis counts as unreachable for it.
const TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub(crate) struct Shared {
    commands: Commands,
    /// Where revocations can be heard: the one Redis, or any node of the cluster (classic
    /// pub/sub reaches every node of a cluster).
    pub(crate) listen_on: Arc<[redis::Client]>,
    /// This instance's name in the revocations it publishes.
    pub(crate) instance: String,
}

#[derive(Clone)]
enum Commands {
    One(ConnectionManager),
    Cluster(Arc<LazyCluster>),
}

struct LazyCluster {
    client: ClusterClient,
    /// Made by the first command that finds the cluster; it then follows the cluster by itself.
    connection: tokio::sync::OnceCell<Link>,
}

impl Shared {
    pub(crate) fn one(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("REDIS_URL is not a Redis URL: {e}"))?;
        let config = ilo_runtime::redis::manager_config(TIMEOUT);
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self::new(Commands::One(commands), vec![client]))
    }

    pub(crate) fn cluster(seeds: &str) -> anyhow::Result<Self> {
        let seeds = ilo_runtime::redis::seeds(seeds);
        anyhow::ensure!(!seeds.is_empty(), "REDIS_CLUSTER names no node");
        let listen_on = seeds
            .iter()
            .map(|seed| redis::Client::open(seed.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("REDIS_CLUSTER holds a bad address: {e}"))?;
        let client = ClusterClientBuilder::new(seeds)
            .connection_timeout(TIMEOUT)
            .response_timeout(TIMEOUT)
            .retries(2)
            .build()?;
        let lazy = LazyCluster {
            client,
            connection: tokio::sync::OnceCell::new(),
        };
        Ok(Self::new(Commands::Cluster(Arc::new(lazy)), listen_on))
    }

    fn new(commands: Commands, listen_on: Vec<redis::Client>) -> Self {
        Self {
            commands,
            listen_on: listen_on.into(),
            instance: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// A connection for commands; on a cluster, commands with keys go to their slot's shard.
    pub(crate) async fn commands(&self) -> redis::RedisResult<Link> {
        match &self.commands {
            Commands::One(manager) => Ok(Link::One(manager.clone())),
            Commands::Cluster(lazy) => {
                let connect = || async {
                    let connecting = lazy.client.get_async_connection();
                    match tokio::time::timeout(TIMEOUT, connecting).await {
                        Ok(connected) => Ok(Link::Cluster(connected?)),
                        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
                    }
                };
                lazy.connection.get_or_try_init(connect).await.cloned()
            }
        }
    }
}
