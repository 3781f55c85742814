//! What the Redis bus speaks to: one Redis, or a Redis Cluster. On one Redis a room's messages
//! use classic pub/sub (`PUBLISH`, `SUBSCRIBE`) and the relay keeps a command connection and a
//! subscribing one. On a cluster they use sharded pub/sub (`SPUBLISH`, `SSUBSCRIBE`), so a
//! room's messages touch only the shard that owns the room's slot, and one cluster connection
//! carries both: it follows `MOVED`/`ASK`, reconnects to a shard's new master and subscribes
//! each channel again on the node that owns it.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, ProtocolVersion, RedisFuture, Value};

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
        let seeds: Vec<String> = seeds
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
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
                let base = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1);
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

/// A connection to one Redis or to the cluster.
#[derive(Clone)]
pub(crate) enum Link {
    One(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Link {
    pub(crate) async fn subscribe(&mut self, channel: String) -> redis::RedisResult<()> {
        match self {
            Self::One(c) => c.subscribe(channel).await,
            Self::Cluster(c) => c.ssubscribe(channel).await,
        }
    }

    pub(crate) async fn unsubscribe(&mut self, channel: String) -> redis::RedisResult<()> {
        match self {
            Self::One(c) => c.unsubscribe(channel).await,
            Self::Cluster(c) => c.sunsubscribe(channel).await,
        }
    }

    /// Whether the connection answers: on a cluster, any one node (a shard failing over must
    /// not stop the others' rooms; the probe catches a shard that delivers nothing).
    pub(crate) async fn ping(&mut self) -> redis::RedisResult<Value> {
        match self {
            Self::One(c) => redis::cmd("PING").query_async(c).await,
            Self::Cluster(c) => {
                let anywhere = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                c.route_command(redis::cmd("PING"), anywhere).await
            }
        }
    }

    /// The command that publishes on a channel this link subscribes with.
    pub(crate) fn publish_command(&self) -> &'static str {
        match self {
            Self::One(_) => "PUBLISH",
            Self::Cluster(_) => "SPUBLISH",
        }
    }

    /// Whether a pipeline may hold commands for different rooms (on a cluster they live on
    /// different shards).
    pub(crate) fn pipelines_span_rooms(&self) -> bool {
        matches!(self, Self::One(_))
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::One(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::One(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::One(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
