//! Revocations between ilo-api instances, through Redis: each instance publishes the sessions
//! it ends on [`CHANNEL`] and listens to it, so a session ended through any instance ends on
//! every instance and on every relay, whichever instance the relay watches.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use ilo_runtime::backoff::Backoff;
use redis::aio::{PubSubSink, PubSubStream};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::sessions::Sessions;
use crate::shared::Shared;

/// The Redis channel; each message is `{"origin": "<instance>", "session_ids": [...]}`.
pub const CHANNEL: &str = "ilo:revocations";
/// How long a request that ends sessions waits for Redis to take the revocation.
const PUBLISH_WITHIN: Duration = Duration::from_secs(1);
/// How often the subscription is pinged, and how long an answer may take: a subscription that
/// stopped answering is dropped, and the cache with it.
const PING_EVERY: Duration = Duration::from_secs(2);
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

#[derive(Serialize, Deserialize)]
struct Message {
    /// The instance that ended the sessions, which revoked them itself already.
    origin: String,
    session_ids: Vec<String>,
}

/// Publishes this instance's revocations.
pub(crate) struct Publisher {
    redis: Shared,
}

impl Publisher {
    pub(crate) fn new(redis: Shared) -> Self {
        Self { redis }
    }

    /// Publishes `session_ids`, waiting at most [`PUBLISH_WITHIN`]. A revocation Redis does
    /// not take is logged: the sessions are gone from the database already, and an instance
    /// that cannot hear Redis does not trust its cache.
    pub(crate) async fn publish(&self, session_ids: &[String]) {
        let message = Message {
            origin: self.redis.instance.clone(),
            session_ids: session_ids.to_vec(),
        };
        let payload = serde_json::to_string(&message).unwrap_or_default();
        let published = async {
            // Classic PUBLISH: on a cluster it reaches every node, whichever one takes it.
            let mut connection = self.redis.commands().await?;
            redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(payload)
                .query_async::<i64>(&mut connection)
                .await
        };
        match tokio::time::timeout(PUBLISH_WITHIN, published).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not publish a revocation on Redis"),
            Err(_) => tracing::warn!("Redis did not take a revocation in time"),
        }
    }
}

/// Listens to the other instances' revocations until `stopping`, telling `sessions` whether
/// it hears them; reconnects with backoff (on a cluster, to the next node each time).
pub(crate) async fn listen(
    redis: Shared,
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
    mut stopping: watch::Receiver<bool>,
) {
    metrics.hearing_revocations.set(0);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    for client in redis.listen_on.iter().cycle() {
        match subscribe(client).await {
            Ok((sink, stream)) => {
                backoff.reset();
                sessions.hearing(true);
                metrics.hearing_revocations.set(1);
                tracing::info!("hearing other instances' revocations");
                let stopped = hear(sink, stream, &redis.instance, &sessions, &mut stopping).await;
                sessions.hearing(false);
                metrics.hearing_revocations.set(0);
                if stopped {
                    return;
                }
                tracing::warn!(
                    "revocation subscription lost; tokens are checked in the database until it is back"
                );
            }
            Err(e) => tracing::debug!(error = %e, "cannot subscribe to revocations yet"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = stopped(&mut stopping) => return,
        }
    }
}

async fn subscribe(client: &redis::Client) -> anyhow::Result<(PubSubSink, PubSubStream)> {
    let subscribing = async {
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(CHANNEL).await?;
        anyhow::Ok((sink, stream))
    };
    tokio::time::timeout(ANSWER_WITHIN, subscribing).await?
}

/// Hands revocations from other instances to `sessions` until the subscription drops or stops
/// answering (false), or `stopping` (true).
async fn hear(
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    origin: &str,
    sessions: &Sessions,
    stopping: &mut watch::Receiver<bool>,
) -> bool {
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return false };
                match serde_json::from_slice::<Message>(message.get_payload_bytes()) {
                    Ok(heard) if heard.origin != origin => sessions.heard(heard.session_ids),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "an unreadable revocation message"),
                }
            }
            _ = ping.tick() => {
                let answer = tokio::time::timeout(ANSWER_WITHIN, sink.ping::<redis::Value>()).await;
                if !matches!(answer, Ok(Ok(_))) {
                    return false;
                }
            }
            () = stopped(stopping) => return true,
        }
    }
}

async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}
