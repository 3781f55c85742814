//! A connection to one Redis or to a Redis Cluster, usable wherever a redis-rs connection is.
//! On one Redis, pub/sub is classic (`PUBLISH`, `SUBSCRIBE`); on a cluster it is sharded
//! (`SPUBLISH`, `SSUBSCRIBE`): a channel lives on the shard that owns its slot. The cluster
//! connection follows `MOVED`/`ASK`, reconnects to a shard's new master and subscribes each
//! channel again on the node that owns it.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// `REDIS_CLUSTER`'s comma-separated seed nodes.
pub fn seeds(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// How the services' connections to one Redis behave: each connection attempt and each answer
/// may take `timeout`, and a failed command is tried once more on a new connection.
pub fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
}

#[derive(Clone)]
pub enum Link {
    One(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Link {
    /// Subscribes to `channel`, sharded on a cluster; messages arrive as pushes.
    pub async fn subscribe(&mut self, channel: String) -> RedisResult<()> {
        match self {
            Self::One(c) => c.subscribe(channel).await,
            Self::Cluster(c) => c.ssubscribe(channel).await,
        }
    }

    pub async fn unsubscribe(&mut self, channel: String) -> RedisResult<()> {
        match self {
            Self::One(c) => c.unsubscribe(channel).await,
            Self::Cluster(c) => c.sunsubscribe(channel).await,
        }
    }

    /// The command that publishes where [`Link::subscribe`] listens.
    pub fn publish_command(&self) -> &'static str {
        match self {
            Self::One(_) => "PUBLISH",
            Self::Cluster(_) => "SPUBLISH",
        }
    }

    /// Whether one pipeline may hold commands for keys in different slots (not on a cluster,
    /// where they live on different shards).
    pub fn pipelines_span_slots(&self) -> bool {
        matches!(self, Self::One(_))
    }

    /// Whether the connection answers: on a cluster, any one node (a shard failing over must
    /// not count as everything down).
    pub async fn ping(&mut self) -> RedisResult<Value> {
        match self {
            Self::One(c) => redis::cmd("PING").query_async(c).await,
            Self::Cluster(c) => {
                let anywhere = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                c.route_command(redis::cmd("PING"), anywhere).await
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_split_on_commas_and_trimmed() {
        assert_eq!(
            seeds(" redis://a:7000, redis://b:7000 ,,"),
            ["redis://a:7000", "redis://b:7000"]
        );
    }
}
