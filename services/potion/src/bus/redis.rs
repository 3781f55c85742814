//! The Redis bus: a channel per room (`potion:room:<room>`), subscribed while the room has a
//! member on this relay; one PUBLISH per message. Presence lives in a hash per room
//! (`potion:presence:<room>`) whose entries are leases: each relay refreshes its own, so the
//! entries of a relay that died unannounced stop counting when their lease runs out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytestring::ByteString;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use ilo_protocol::Member;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{PushInfo, PushKind, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Bus, BusDown, Presence};
use crate::hub::{Hub, Identity};
use crate::metrics::Metrics;

const ROOM_PREFIX: &str = "potion:room:";
const PRESENCE_PREFIX: &str = "potion:presence:";
/// How long a Redis command may take before the bus counts as down.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

pub struct RedisBus {
    relay_id: String,
    lease: Duration,
    commands: ConnectionManager,
    subscriptions: ConnectionManager,
    up: Arc<AtomicBool>,
}

#[derive(Serialize, Deserialize)]
struct Lease {
    user: String,
    public_key: String,
    /// Unix milliseconds after which the entry no longer counts.
    until: u64,
}

impl RedisBus {
    /// Connects lazily: a Redis that is down now is retried in the background.
    pub fn new(
        url: &str,
        hub: Arc<Hub>,
        relay_id: String,
        lease: Duration,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Self>> {
        let separator = if url.contains('?') { '&' } else { '?' };
        let client = redis::Client::open(format!("{url}{separator}protocol=resp3"))?;
        let up = Arc::new(AtomicBool::new(false));
        let base = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_max_delay(Duration::from_secs(2));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), base.clone())?;
        let deliver = Deliver {
            hub,
            up: up.clone(),
            metrics,
        };
        let subscriptions = ConnectionManager::new_lazy_with_config(
            client,
            base.set_push_sender(deliver).set_automatic_resubscription(),
        )?;
        Ok(Arc::new(Self {
            relay_id,
            lease,
            commands,
            subscriptions,
            up,
        }))
    }

    /// Until `stopping`: checks Redis every second while it is down (publishing fails fast
    /// meanwhile), and refreshes this relay's presence leases three times per lease.
    pub async fn maintain(self: Arc<Self>, hub: Arc<Hub>, mut stopping: watch::Receiver<bool>) {
        let mut last_refresh = std::time::Instant::now() - self.lease;
        loop {
            let alive = self.ping().await;
            let was_up = self.up.swap(alive, Ordering::Relaxed);
            if alive != was_up {
                tracing::info!(up = alive, "Redis bus");
            }
            if alive && (last_refresh.elapsed() >= self.lease / 3 || !was_up) {
                self.refresh_leases(&hub).await;
                last_refresh = std::time::Instant::now();
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }

    async fn ping(&self) -> bool {
        // Both connections: the subscriber reconnects (and resubscribes) when a command fails.
        let mut commands = self.commands.clone();
        let mut subscriptions = self.subscriptions.clone();
        let a = redis::cmd("PING").query_async::<Value>(&mut commands).await;
        let b = redis::cmd("PING").query_async::<Value>(&mut subscriptions).await;
        a.is_ok() && b.is_ok()
    }

    async fn refresh_leases(&self, hub: &Hub) {
        let entries = hub.presence();
        if entries.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (room, who) in &entries {
            self.add_lease(&mut pipe, room, who);
        }
        let mut commands = self.commands.clone();
        if let Err(e) = pipe.query_async::<Value>(&mut commands).await {
            tracing::warn!(error = %e, "could not refresh presence leases");
        }
    }

    fn add_lease(&self, pipe: &mut redis::Pipeline, room: &str, who: &Identity) {
        let lease = Lease {
            user: who.username.clone(),
            public_key: who.public_key.clone(),
            until: unix_ms() + self.lease.as_millis() as u64,
        };
        let key = presence_key(room);
        pipe.hset(&key, self.field(who), serde_json::to_string(&lease).unwrap_or_default())
            .ignore()
            .pexpire(&key, (self.lease.as_millis() * 2) as i64)
            .ignore();
    }

    fn field(&self, who: &Identity) -> String {
        format!("{}|{}", self.relay_id, who.user_id)
    }

    /// The room's live leases: (relay id, user id, lease).
    async fn leases(&self, room: &str) -> Result<Vec<(String, String, Lease)>, BusDown> {
        let mut commands = self.commands.clone();
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(presence_key(room))
            .query_async(&mut commands)
            .await
            .map_err(|_| BusDown)?;
        let now = unix_ms();
        Ok(all
            .into_iter()
            .filter_map(|(field, value)| {
                let (relay, user_id) = field.split_once('|')?;
                let lease: Lease = serde_json::from_str(&value).ok()?;
                (lease.until > now).then(|| (relay.to_owned(), user_id.to_owned(), lease))
            })
            .collect())
    }
}

impl Bus for RedisBus {
    fn publish<'a>(&'a self, room: &'a str, envelope: ByteString) -> BoxFuture<'a, Result<(), BusDown>> {
        async move {
            if !self.is_up() {
                return Err(BusDown);
            }
            let mut commands = self.commands.clone();
            redis::cmd("PUBLISH")
                .arg(room_channel(room))
                .arg(envelope.as_bytes().as_ref())
                .query_async::<i64>(&mut commands)
                .await
                .map(drop)
                .map_err(|_| {
                    self.up.store(false, Ordering::Relaxed);
                    BusDown
                })
        }
        .boxed()
    }

    fn subscribe<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<(), BusDown>> {
        async move {
            let mut subscriptions = self.subscriptions.clone();
            subscriptions
                .subscribe(room_channel(room))
                .await
                .map_err(|_| BusDown)
        }
        .boxed()
    }

    fn unsubscribe<'a>(&'a self, room: &'a str) -> BoxFuture<'a, ()> {
        async move {
            let mut subscriptions = self.subscriptions.clone();
            let _ = subscriptions.unsubscribe(room_channel(room)).await;
        }
        .boxed()
    }

    fn enter<'a>(&'a self, room: &'a str, who: &'a Identity) -> BoxFuture<'a, Result<Presence, BusDown>> {
        async move {
            let mut pipe = redis::pipe();
            self.add_lease(&mut pipe, room, who);
            let mut commands = self.commands.clone();
            pipe.query_async::<Value>(&mut commands)
                .await
                .map_err(|_| BusDown)?;
            let leases = self.leases(room).await?;
            let present_elsewhere = leases
                .iter()
                .any(|(relay, user, _)| *user == who.user_id && *relay != self.relay_id);
            let mut seen = std::collections::HashSet::new();
            let members = leases
                .into_iter()
                .filter(|(_, user, _)| seen.insert(user.clone()))
                .map(|(_, _, lease)| Member {
                    user: lease.user,
                    public_key: lease.public_key,
                })
                .collect();
            Ok(Presence {
                members: Some(members),
                present_elsewhere,
            })
        }
        .boxed()
    }

    fn exit<'a>(&'a self, room: &'a str, who: &'a Identity) -> BoxFuture<'a, bool> {
        async move {
            let mut commands = self.commands.clone();
            let _ = redis::cmd("HDEL")
                .arg(presence_key(room))
                .arg(self.field(who))
                .query_async::<i64>(&mut commands)
                .await;
            self.leases(room)
                .await
                .is_ok_and(|leases| leases.iter().any(|(_, user, _)| *user == who.user_id))
        }
        .boxed()
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// Receives pushes on the subscribing connection and hands messages straight to the hub: no
/// queue in between, and `Hub::deliver` never waits.
struct Deliver {
    hub: Arc<Hub>,
    up: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl redis::aio::AsyncPushSender for Deliver {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        match info.kind {
            PushKind::Message => {
                if let [Value::BulkString(channel), Value::BulkString(payload)] = info.data.as_slice()
                    && let Some(room) = channel.strip_prefix(ROOM_PREFIX.as_bytes())
                    && let (Ok(room), Ok(envelope)) =
                        (std::str::from_utf8(room), ByteString::try_from(payload.clone()))
                {
                    self.hub.deliver(room, &envelope);
                }
            }
            PushKind::Disconnection => {
                self.up.store(false, Ordering::Relaxed);
                self.metrics.bus_reconnects.inc();
                tracing::warn!("Redis subscription connection lost; reconnecting");
            }
            _ => {}
        }
        Ok(())
    }
}

fn room_channel(room: &str) -> String {
    format!("{ROOM_PREFIX}{room}")
}

fn presence_key(room: &str) -> String {
    format!("{PRESENCE_PREFIX}{room}")
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
