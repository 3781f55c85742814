//! The Redis bus: a channel per room (`potion:room:<room>`), subscribed while the room has a
//! member on this relay; one PUBLISH per message. Presence lives in a hash per room
//! (`potion:presence:<room>`) whose entries are leases: each relay refreshes its own, so the
//! entries of a relay that died unannounced stop counting when their lease runs out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
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
    client: redis::Client,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    /// The two connections while Redis answers; `None` while it is being reconnected.
    links: RwLock<Option<Links>>,
    up: Arc<AtomicBool>,
}

/// A command connection, and one that only subscribes and receives room messages.
#[derive(Clone)]
struct Links {
    commands: ConnectionManager,
    subscriptions: ConnectionManager,
}

#[derive(Serialize, Deserialize)]
struct Lease {
    user: String,
    public_key: String,
    /// Unix milliseconds after which the entry no longer counts.
    until: u64,
}

impl RedisBus {
    /// Connects in the background ([`RedisBus::maintain`]): a Redis that is down now is retried.
    pub fn new(
        url: &str,
        hub: Arc<Hub>,
        relay_id: String,
        lease: Duration,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Self>> {
        let separator = if url.contains('?') { '&' } else { '?' };
        let client = redis::Client::open(format!("{url}{separator}protocol=resp3"))?;
        Ok(Arc::new(Self {
            relay_id,
            lease,
            client,
            hub,
            metrics,
            links: RwLock::new(None),
            up: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// Until `stopping`, once a second: checks both connections; after two failed checks
    /// replaces them, with backoff, and resubscribes every room this relay has members in.
    /// Refreshes this relay's presence leases three times per lease.
    pub async fn maintain(self: Arc<Self>, mut stopping: watch::Receiver<bool>) {
        let mut last_refresh: Option<std::time::Instant> = None;
        let (mut failures, mut backoff) = (0u32, Duration::from_secs(1));
        loop {
            let alive = match self.links() {
                Some(links) => ping(&links).await,
                None => match self.connect().await {
                    Ok(()) => {
                        backoff = Duration::from_secs(1);
                        last_refresh = None;
                        true
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "Redis is still unreachable");
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        false
                    }
                },
            };
            failures = if alive { 0 } else { failures + 1 };
            if failures >= 2 {
                *self.links.write().unwrap_or_else(PoisonError::into_inner) = None;
            }
            let was_up = self.up.swap(alive, Ordering::Relaxed);
            if alive != was_up {
                tracing::info!(up = alive, "Redis bus");
            }
            if alive && last_refresh.is_none_or(|at| at.elapsed() >= self.lease / 3) {
                self.refresh_leases().await;
                last_refresh = Some(std::time::Instant::now());
            }
            let pause = if alive {
                Duration::from_secs(1)
            } else {
                backoff
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }

    /// Opens both connections and subscribes to every room with a local member.
    async fn connect(&self) -> anyhow::Result<()> {
        let base = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1);
        let deliver = Deliver {
            hub: self.hub.clone(),
            up: self.up.clone(),
        };
        let commands = ConnectionManager::new_with_config(self.client.clone(), base.clone());
        let subscriptions = ConnectionManager::new_with_config(
            self.client.clone(),
            base.set_push_sender(deliver).set_automatic_resubscription(),
        );
        let connecting = async { anyhow::Ok((commands.await?, subscriptions.await?)) };
        let (commands, mut subscriptions) =
            tokio::time::timeout(2 * COMMAND_TIMEOUT, connecting).await??;
        for room in self.hub.rooms() {
            subscriptions.subscribe(room_channel(&room)).await?;
        }
        *self.links.write().unwrap_or_else(PoisonError::into_inner) = Some(Links {
            commands,
            subscriptions,
        });
        self.metrics.bus_reconnects.inc();
        Ok(())
    }

    fn links(&self) -> Option<Links> {
        self.links
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn commands(&self) -> Result<ConnectionManager, BusDown> {
        self.links().map(|l| l.commands).ok_or(BusDown)
    }

    async fn refresh_leases(&self) {
        let entries = self.hub.presence();
        if entries.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (room, who) in &entries {
            self.add_lease(&mut pipe, room, who);
        }
        let Ok(mut commands) = self.commands() else {
            return;
        };
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
        pipe.hset(
            &key,
            self.field(who),
            serde_json::to_string(&lease).unwrap_or_default(),
        )
        .ignore()
        .pexpire(&key, (self.lease.as_millis() * 2) as i64)
        .ignore();
    }

    fn field(&self, who: &Identity) -> String {
        format!("{}|{}", self.relay_id, who.user_id)
    }

    /// The room's live leases: (relay id, user id, lease).
    async fn leases(&self, room: &str) -> Result<Vec<(String, String, Lease)>, BusDown> {
        let mut commands = self.commands()?;
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
    fn publish<'a>(
        &'a self,
        room: &'a str,
        envelope: ByteString,
    ) -> BoxFuture<'a, Result<(), BusDown>> {
        async move {
            if !self.is_up() {
                return Err(BusDown);
            }
            let mut commands = self.commands()?;
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
            let mut subscriptions = self.links().ok_or(BusDown)?.subscriptions;
            subscriptions
                .subscribe(room_channel(room))
                .await
                .map_err(|_| BusDown)
        }
        .boxed()
    }

    fn unsubscribe<'a>(&'a self, room: &'a str) -> BoxFuture<'a, ()> {
        async move {
            if let Some(mut links) = self.links() {
                let _ = links.subscriptions.unsubscribe(room_channel(room)).await;
            }
        }
        .boxed()
    }

    fn enter<'a>(
        &'a self,
        room: &'a str,
        who: &'a Identity,
    ) -> BoxFuture<'a, Result<Presence, BusDown>> {
        async move {
            let mut pipe = redis::pipe();
            self.add_lease(&mut pipe, room, who);
            let mut commands = self.commands()?;
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
            let Ok(mut commands) = self.commands() else {
                return false;
            };
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
}

impl redis::aio::AsyncPushSender for Deliver {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        match info.kind {
            PushKind::Message => {
                if let [Value::BulkString(channel), Value::BulkString(payload)] =
                    info.data.as_slice()
                    && let Some(room) = channel.strip_prefix(ROOM_PREFIX.as_bytes())
                    && let (Ok(room), Ok(envelope)) = (
                        std::str::from_utf8(room),
                        ByteString::try_from(payload.clone()),
                    )
                {
                    self.hub.deliver(room, &envelope);
                }
            }
            PushKind::Disconnection => {
                self.up.store(false, Ordering::Relaxed);
                tracing::warn!("Redis subscription connection lost; reconnecting");
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether both connections answer a PING in time.
async fn ping(links: &Links) -> bool {
    let (mut commands, mut subscriptions) = (links.commands.clone(), links.subscriptions.clone());
    let ping = redis::cmd("PING");
    let both = async {
        ping.query_async::<Value>(&mut commands).await?;
        ping.query_async::<Value>(&mut subscriptions).await
    };
    matches!(
        tokio::time::timeout(2 * COMMAND_TIMEOUT, both).await,
        Ok(Ok(_))
    )
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
