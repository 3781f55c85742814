//! What relays share in a test: one private Redis (`REDIS_URL`) or a private Redis Cluster
//! (`REDIS_CLUSTER`), so a test of fan-out, history or presence runs on both.

use potion::Config;

use super::cluster::PrivateCluster;
use super::redis::PrivateRedis;

#[derive(Debug, Clone, Copy)]
pub enum BusKind {
    OneRedis,
    Cluster,
}

pub enum SharedBus {
    OneRedis(PrivateRedis),
    Cluster(PrivateCluster),
}

impl SharedBus {
    pub async fn start(kind: BusKind) -> Self {
        match kind {
            BusKind::OneRedis => Self::OneRedis(PrivateRedis::start_async().await),
            BusKind::Cluster => Self::Cluster(PrivateCluster::start().await),
        }
    }

    /// Points a relay's configuration at this bus.
    pub fn configure(&self, config: &mut Config) {
        match self {
            Self::OneRedis(redis) => config.redis_url = Some(redis.url()),
            Self::Cluster(cluster) => config.redis_cluster = Some(cluster.seeds()),
        }
    }
}

/// Runs each named `async fn name(bus: BusKind)` on one Redis and on a Redis Cluster.
#[macro_export]
macro_rules! on_one_redis_and_a_cluster {
    ($($name:ident),* $(,)?) => {
        mod one_redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::support::bus::BusKind::OneRedis).await })*
        }
        mod cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::support::bus::BusKind::Cluster).await })*
        }
    };
}
