//! Where the Redis bus connects: one Redis, where the relay keeps a command connection and a
//! subscribing one, or a Redis Cluster, where one cluster connection carries both and a room's
//! messages use sharded pub/sub, touching only the shard that owns the room's slot.

use std::time::Duration;

use ilo_runtime::redis::Link;
use redis::ProtocolVersion;
use redis::aio::ConnectionManager;
use redis::cluster::ClusterClientBuilder;

/// Where the bus connects.
#[derive(Clone)]
pub(crate) enum Target {
    One(redis::Client),
    /// Seed nodes.
    Cluster(Vec<String>),
}

impl Target {
    /// One Redis at `url`, spoken to in RESP3 (pushes arrive on the connection itself).
    pub(crate) fn one(url: &str) -> anyhow::Result<Self> {
        let separator = if url.contains('?') { '&' } else { '?' };
        Ok(Self::One(redis::Client::open(format!(
            "{url}{separator}protocol=resp3"
        ))?))
    }

    /// A cluster from its comma-separated seed nodes.
    pub(crate) fn cluster(seeds: &str) -> anyhow::Result<Self> {
        let seeds = ilo_runtime::redis::seeds(seeds);
        anyhow::ensure!(!seeds.is_empty(), "REDIS_CLUSTER names no node");
        // Fails now on a malformed address rather than at every reconnection.
        ClusterClientBuilder::new(seeds.clone()).build()?;
        Ok(Self::Cluster(seeds))
    }

    /// Whether messages use sharded pub/sub.
    pub(crate) fn sharded(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// A command connection and a subscribing one whose pushes go to `pushes`.
    pub(crate) async fn connect(
        &self,
        timeout: Duration,
        pushes: impl redis::aio::AsyncPushSender,
    ) -> redis::RedisResult<(Link, Link)> {
        match self {
            Self::One(client) => {
                let base = ilo_runtime::redis::manager_config(timeout);
                let commands = ConnectionManager::new_with_config(client.clone(), base.clone());
                let subscriptions = ConnectionManager::new_with_config(
                    client.clone(),
                    base.set_push_sender(pushes).set_automatic_resubscription(),
                );
                let (commands, subscriptions) = tokio::try_join!(commands, subscriptions)?;
                Ok((Link::One(commands), Link::One(subscriptions)))
            }
            Self::Cluster(seeds) => {
                let connection = ClusterClientBuilder::new(seeds.clone())
                    .use_protocol(ProtocolVersion::RESP3)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(3)
                    .push_sender(pushes)
                    .build()?
                    .get_async_connection()
                    .await?;
                Ok((Link::Cluster(connection.clone()), Link::Cluster(connection)))
            }
        }
    }
}
