//! The Redis bus. Each room has, all under one hash tag so that they share a Redis Cluster slot:
//! - `potion:{room}:live`, the channel this relay subscribes to while the room has a member here;
//! - `potion:{room}:meta` (epoch, last offset) and the stream `potion:{room}:log`, its history;
//! - `potion:{room}:presence` and `potion:{room}:leases`, each relay's presence leases.
//!
//! Every change goes through a script (`scripts/`) that makes it and publishes what it means in
//! one step: a message is stored and published together, a lease is set or swept and its
//! presence announced together. Leases expire by Redis's clock, and every relay sweeps them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use ilo_protocol::{Member, PresenceEvent};
use ilo_runtime::backoff::Backoff;
use ilo_runtime::redis::Link;
use redis::{PushInfo, PushKind, Script, Value};
use tokio::sync::watch;

use super::link::Target;
use super::{Bus, BusDown, History, Presence, Read};
use crate::hub::{Hub, Identity};
use crate::metrics::Metrics;
use crate::rooms::envelope::{self, Arrival, Place};

/// How long a Redis command may take before the bus counts as down.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// How often an idle subscription is probed, and how long its probe may take to come back.
const PROBE_EVERY: Duration = Duration::from_secs(3);

/// What the relay keeps of each room's history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    /// Messages per room; 0: no history.
    pub size: usize,
    pub ttl: Duration,
}

pub(crate) struct RedisBus {
    relay_id: String,
    lease: Duration,
    retention: Retention,
    target: Target,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    scripts: Scripts,
    /// The two connections while Redis answers; `None` while it is being reconnected.
    links: RwLock<Option<Links>>,
    up: Arc<AtomicBool>,
    /// Set when the subscription connection dropped: resubscribe and repair every room.
    resync: Arc<AtomicBool>,
    /// The last probe that came back on the subscription.
    probe_seen: Arc<AtomicU64>,
    myself: Weak<RedisBus>,
}

struct Scripts {
    publish: Script,
    read: Script,
    enter: Script,
    exit: Script,
    sweep: Script,
}

impl Scripts {
    /// The scripts; `sharded` (a cluster): they publish with `SPUBLISH`, on the room's channel,
    /// which shares the slot of the room's keys, and a room whose keys came by a failover starts
    /// a new epoch (`failover.lua`).
    fn new(sharded: bool) -> Self {
        let script = |text: &str| {
            Script::new(&if sharded {
                text.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
            } else {
                text.to_owned()
            })
        };
        let history = |text: &str| {
            if sharded {
                script(&format!("{}{text}", include_str!("scripts/failover.lua")))
            } else {
                script(text)
            }
        };
        Self {
            publish: history(include_str!("scripts/publish.lua")),
            read: history(include_str!("scripts/read.lua")),
            enter: script(include_str!("scripts/enter.lua")),
            exit: script(include_str!("scripts/exit.lua")),
            sweep: script(include_str!("scripts/sweep.lua")),
        }
    }

    fn all(&self) -> [&Script; 5] {
        [
            &self.publish,
            &self.read,
            &self.enter,
            &self.exit,
            &self.sweep,
        ]
    }
}

/// A command connection, and one that subscribes and receives room messages (on a cluster,
/// one connection does both).
#[derive(Clone)]
struct Links {
    commands: Link,
    subscriptions: Link,
}

/// A room's keys and channel, each formatted when a command needs it (a publish needs three).
struct Keys<'a>(&'a str);

impl Keys<'_> {
    fn meta(&self) -> String {
        format!("potion:{{{}}}:meta", self.0)
    }

    fn log(&self) -> String {
        format!("potion:{{{}}}:log", self.0)
    }

    fn presence(&self) -> String {
        format!("potion:{{{}}}:presence", self.0)
    }

    fn leases(&self) -> String {
        format!("potion:{{{}}}:leases", self.0)
    }

    fn channel(&self) -> String {
        channel(self.0)
    }
}

fn channel(room: &str) -> String {
    format!("potion:{{{room}}}:live")
}

/// The room a channel carries.
fn room_of(channel: &[u8]) -> Option<&str> {
    let channel = std::str::from_utf8(channel).ok()?;
    channel.strip_prefix("potion:{")?.strip_suffix("}:live")
}

impl RedisBus {
    /// Connects in the background ([`RedisBus::maintain`]): a Redis that is down now is retried.
    pub(crate) fn new(
        target: Target,
        hub: Arc<Hub>,
        relay_id: String,
        lease: Duration,
        retention: Retention,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new_cyclic(|myself| Self {
            relay_id,
            lease,
            retention,
            scripts: Scripts::new(target.sharded()),
            target,
            hub,
            metrics,
            links: RwLock::new(None),
            up: Arc::new(AtomicBool::new(false)),
            resync: Arc::new(AtomicBool::new(false)),
            probe_seen: Arc::new(AtomicU64::new(0)),
            myself: myself.clone(),
        }))
    }

    /// Until `stopping`, once a second: checks both connections (after two failed checks, or
    /// a probe that did not come back, replaces them, with backoff); resubscribes and repairs
    /// every room after the subscription dropped; renews this relay's presence leases three
    /// times per lease, and sweeps expired ones.
    pub(crate) async fn maintain(self: Arc<Self>, mut stopping: watch::Receiver<bool>) {
        let mut last_refresh: Option<Instant> = None;
        let mut probe = Probe::default();
        let mut failures = 0u32;
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        loop {
            let alive = match self.links() {
                Some(links) => ping(&links).await && self.probe(&mut probe, &links).await,
                None => match self.connect().await {
                    Ok(()) => {
                        backoff.reset();
                        last_refresh = None;
                        probe = Probe::default();
                        true
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "Redis is still unreachable");
                        false
                    }
                },
            };
            failures = if alive { 0 } else { failures + 1 };
            if failures >= 2 || probe.failed {
                *self.links.write().unwrap_or_else(PoisonError::into_inner) = None;
                probe = Probe::default();
            }
            let was_up = self.up.swap(alive, Ordering::Relaxed);
            if alive != was_up {
                tracing::info!(up = alive, "Redis bus");
            }
            if alive && self.resync.swap(false, Ordering::Relaxed) {
                self.resubscribe().await;
            }
            if alive && last_refresh.is_none_or(|at| at.elapsed() >= self.lease / 3) {
                self.refresh_leases().await;
                last_refresh = Some(Instant::now());
            }
            if alive {
                self.sweep().await;
            }
            let pause = if alive {
                Duration::from_secs(1)
            } else {
                backoff.next_delay()
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }

    /// Opens both connections, loads the scripts, subscribes to every room with a local member
    /// and repairs each from its history.
    async fn connect(&self) -> anyhow::Result<()> {
        let deliver = Deliver {
            hub: self.hub.clone(),
            bus: self.myself.clone(),
            resync: self.resync.clone(),
            probe_seen: self.probe_seen.clone(),
            probe_channel: self.probe_channel(),
        };
        let connecting = async {
            let (mut commands, mut subscriptions) =
                self.target.connect(COMMAND_TIMEOUT, deliver).await?;
            for script in self.scripts.all() {
                script.prepare_invoke().load_async(&mut commands).await?;
            }
            subscriptions.subscribe(self.probe_channel()).await?;
            for room in self.hub.rooms() {
                subscriptions.subscribe(channel(&room)).await?;
            }
            anyhow::Ok((commands, subscriptions))
        };
        let (commands, subscriptions) =
            tokio::time::timeout(4 * COMMAND_TIMEOUT, connecting).await??;
        *self.links.write().unwrap_or_else(PoisonError::into_inner) = Some(Links {
            commands,
            subscriptions,
        });
        self.resync.store(false, Ordering::Relaxed);
        self.repair_all();
        self.metrics.bus_reconnects.inc();
        Ok(())
    }

    /// After the subscription dropped: subscribes again to every room (the connection may
    /// have done it by itself already) and repairs each from its history.
    async fn resubscribe(&self) {
        let Some(mut links) = self.links() else {
            return;
        };
        for room in self.hub.rooms() {
            if links.subscriptions.subscribe(channel(&room)).await.is_err() {
                self.resync.store(true, Ordering::Relaxed);
                return;
            }
        }
        tracing::info!("Redis subscription restored; repairing rooms from their history");
        self.repair_all();
    }

    fn repair_all(&self) {
        for (room, from) in self.hub.start_repairs() {
            self.repair(room, from);
        }
    }

    /// Starts repairing `room` from `from` (the hub holds its frames until it ends).
    fn repair(&self, room: Arc<str>, from: Place) {
        if let Some(bus) = self.myself.upgrade() {
            tokio::spawn(crate::rooms::repair(self.hub.clone(), bus, room, from));
        }
    }

    fn probe_channel(&self) -> String {
        format!("potion:probe:{}", self.relay_id)
    }

    /// Publishes a probe on this relay's own channel every [`PROBE_EVERY`]; false when the
    /// previous one did not come back in time: a subscription that answers PING but receives
    /// nothing (seen after a Redis failover).
    async fn probe(&self, probe: &mut Probe, links: &Links) -> bool {
        let since_sent = probe.sent.map(|at| at.elapsed());
        if let Some(n) = probe.pending {
            if self.probe_seen.load(Ordering::Relaxed) >= n {
                probe.pending = None;
            } else if since_sent.is_some_and(|d| d >= PROBE_EVERY) {
                tracing::warn!("the Redis subscription delivers nothing; reconnecting");
                probe.failed = true;
                return false;
            }
        }
        if probe.pending.is_none() && since_sent.is_none_or(|d| d >= PROBE_EVERY) {
            probe.next += 1;
            let mut commands = links.commands.clone();
            let sent = redis::cmd(commands.publish_command())
                .arg(self.probe_channel())
                .arg(probe.next)
                .query_async::<i64>(&mut commands)
                .await;
            if sent.is_ok() {
                probe.pending = Some(probe.next);
                probe.sent = Some(Instant::now());
            }
        }
        true
    }

    fn links(&self) -> Option<Links> {
        self.links
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn commands(&self) -> Result<Link, BusDown> {
        self.links().map(|l| l.commands).ok_or(BusDown)
    }

    async fn refresh_leases(&self) {
        let entries = self.hub.presence();
        if entries.is_empty() {
            return;
        }
        let renewals = entries
            .iter()
            .map(|(room, who)| self.enter_invocation(room, who, false))
            .collect();
        self.run_chores(renewals, "renew presence leases").await;
    }

    /// Runs chores (lease renewals, sweeps): in one pipeline on one Redis, side by side on a
    /// cluster (each room on its own shard). A failure is only logged; the next round tries
    /// again.
    async fn run_chores(&self, chores: Vec<redis::ScriptInvocation<'_>>, what: &str) {
        let Ok(mut commands) = self.commands() else {
            return;
        };
        let failed = if commands.pipelines_span_slots() {
            let mut pipe = redis::pipe();
            for chore in &chores {
                pipe.invoke_script(chore).ignore();
            }
            pipe.query_async::<Value>(&mut commands).await.err()
        } else {
            let runs = chores.iter().map(|chore| {
                let mut commands = commands.clone();
                async move { chore.invoke_async::<Value>(&mut commands).await }
            });
            futures_util::future::join_all(runs)
                .await
                .into_iter()
                .find_map(Result::err)
        };
        if let Some(e) = failed {
            tracing::warn!(error = %e, "could not {what}");
        }
    }

    /// Sweeps the expired leases of every room with a member here (those whose leaves someone
    /// here must hear).
    async fn sweep(&self) {
        let rooms = self.hub.rooms();
        if rooms.is_empty() {
            return;
        }
        let sweeps = rooms
            .iter()
            .map(|room| {
                let keys = Keys(room);
                let mut sweep = self.scripts.sweep.prepare_invoke();
                sweep
                    .key(keys.presence())
                    .key(keys.leases())
                    .arg(keys.channel());
                sweep
            })
            .collect();
        self.run_chores(sweeps, "sweep presence leases").await;
    }

    fn enter_invocation<'a>(
        &'a self,
        room: &str,
        who: &Identity,
        members: bool,
    ) -> redis::ScriptInvocation<'a> {
        let keys = Keys(room);
        let member = serde_json::to_string(&Member {
            user: who.username.clone(),
            public_key: who.public_key.clone(),
        })
        .unwrap_or_default();
        let leave = envelope::presence(room, who, PresenceEvent::Leave);
        let join = envelope::presence(room, who, PresenceEvent::Join);
        let mut invocation = self.scripts.enter.prepare_invoke();
        invocation
            .key(keys.presence())
            .key(keys.leases())
            .arg(self.field(who))
            .arg(&who.user_id)
            .arg(format!("{member}\n{leave}"))
            .arg(self.lease.as_millis() as u64)
            .arg(keys.channel())
            .arg(join)
            .arg(if members { "1" } else { "0" });
        invocation
    }

    fn field(&self, who: &Identity) -> String {
        format!("{}|{}", self.relay_id, who.user_id)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, BusDown> {
        let mut commands = self.commands()?;
        invocation.invoke_async(&mut commands).await.map_err(|e| {
            tracing::debug!(error = %e, "Redis script failed");
            BusDown
        })
    }
}

#[derive(Default)]
struct Probe {
    next: u64,
    /// The probe not back yet.
    pending: Option<u64>,
    /// When the last probe was sent.
    sent: Option<Instant>,
    failed: bool,
}

impl Bus for RedisBus {
    fn publish<'a>(&'a self, room: &'a str, head: String) -> BoxFuture<'a, Result<(), BusDown>> {
        async move {
            if !self.is_up() {
                return Err(BusDown);
            }
            let keys = Keys(room);
            let published = if self.retention.size == 0 {
                let mut commands = self.commands()?;
                redis::cmd(commands.publish_command())
                    .arg(keys.channel())
                    .arg(envelope::plain_message(&format!("{head}}}")))
                    .query_async::<i64>(&mut commands)
                    .await
                    .map_err(|_| BusDown)
            } else {
                let mut invocation = self.scripts.publish.prepare_invoke();
                invocation
                    .key(keys.meta())
                    .key(keys.log())
                    .arg(keys.channel())
                    .arg(head)
                    .arg(envelope::new_epoch())
                    .arg(self.retention.size)
                    .arg(self.retention.ttl.as_millis() as u64);
                self.run::<i64>(&invocation).await
            };
            published.map(drop).inspect_err(|_| {
                // On a cluster one shard failing over is not the bus down: other rooms go on.
                if !self.target.sharded() {
                    self.up.store(false, Ordering::Relaxed);
                }
            })
        }
        .boxed()
    }

    fn read<'a>(&'a self, room: &'a str, read: Read) -> BoxFuture<'a, Result<History, BusDown>> {
        async move {
            let keys = Keys(room);
            let (epoch, after) = read
                .after
                .map_or((String::new(), 0), |p| (p.epoch.to_string(), p.offset));
            let mut invocation = self.scripts.read.prepare_invoke();
            invocation
                .key(keys.meta())
                .key(keys.log())
                .arg(envelope::new_epoch())
                .arg(self.retention.ttl.as_millis() as u64)
                .arg(epoch)
                .arg(after)
                .arg(read.last.min(self.retention.size));
            let values: Vec<Value> = self.run(&invocation).await?;
            history(values).ok_or(BusDown)
        }
        .boxed()
    }

    fn subscribe<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<(), BusDown>> {
        async move {
            let mut subscriptions = self.links().ok_or(BusDown)?.subscriptions;
            subscriptions
                .subscribe(channel(room))
                .await
                .map_err(|_| BusDown)
        }
        .boxed()
    }

    fn unsubscribe<'a>(&'a self, room: &'a str) -> BoxFuture<'a, ()> {
        async move {
            if let Some(mut links) = self.links() {
                let _ = links.subscriptions.unsubscribe(channel(room)).await;
            }
        }
        .boxed()
    }

    fn enter<'a>(
        &'a self,
        room: &'a str,
        who: &'a Identity,
        _arrived: bool,
    ) -> BoxFuture<'a, Result<Presence, BusDown>> {
        async move {
            let values: Vec<String> = self.run(&self.enter_invocation(room, who, true)).await?;
            let mut seen = std::collections::HashSet::new();
            let members = values
                .iter()
                .filter_map(|value| {
                    let (member, _) = value.split_once('\n')?;
                    serde_json::from_str::<Member>(member).ok()
                })
                .filter(|member| seen.insert(member.user.clone()))
                .collect();
            Ok(Presence {
                members: Some(members),
            })
        }
        .boxed()
    }

    fn exit<'a>(&'a self, room: &'a str, who: &'a Identity) -> BoxFuture<'a, ()> {
        async move {
            let keys = Keys(room);
            let mut invocation = self.scripts.exit.prepare_invoke();
            invocation
                .key(keys.presence())
                .key(keys.leases())
                .arg(self.field(who))
                .arg(&who.user_id)
                .arg(keys.channel());
            // Unreachable Redis: the lease runs out and a sweep announces the leave.
            let _ = self.run::<i64>(&invocation).await;
        }
        .boxed()
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// Reads the read script's answer: `{epoch, offset, id, frame, …}`.
fn history(values: Vec<Value>) -> Option<History> {
    let mut values = values.into_iter();
    let epoch: Arc<str> = string(values.next()?)?.into();
    let offset = match values.next()? {
        Value::Int(n) => u64::try_from(n).ok()?,
        _ => return None,
    };
    let mut messages = Vec::new();
    while let (Some(id), Some(frame)) = (values.next(), values.next()) {
        let id = string(id)?;
        let place = Place {
            epoch: epoch.clone(),
            offset: id.split_once('-')?.0.parse().ok()?,
        };
        messages.push(Arrival::message(Some(place), &string(frame)?));
    }
    Some(History {
        epoch,
        offset,
        messages,
    })
}

fn string(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

/// Receives pushes on the subscribing connection and hands them straight to the hub: no
/// queue in between, and `Hub::deliver` never waits. A hole in a room's offsets starts that
/// room's repair.
struct Deliver {
    hub: Arc<Hub>,
    bus: Weak<RedisBus>,
    resync: Arc<AtomicBool>,
    probe_seen: Arc<AtomicU64>,
    probe_channel: String,
}

impl redis::aio::AsyncPushSender for Deliver {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        match info.kind {
            // Classic pub/sub on one Redis, sharded on a cluster.
            PushKind::Message | PushKind::SMessage => {
                let [Value::BulkString(channel), Value::BulkString(payload)] = info.data.as_slice()
                else {
                    return Ok(());
                };
                if let Some(room) = room_of(channel)
                    && let Some(arrival) = envelope::open(payload)
                    && let Some(hole) = self.hub.deliver(room, arrival)
                    && let Some(bus) = self.bus.upgrade()
                {
                    bus.repair(room.into(), hole.0);
                } else if channel.as_slice() == self.probe_channel.as_bytes()
                    && let Some(n) = std::str::from_utf8(payload)
                        .ok()
                        .and_then(|n| n.parse().ok())
                {
                    self.probe_seen.fetch_max(n, Ordering::Relaxed);
                }
            }
            PushKind::Disconnection => {
                // Publishing goes on (on the command connection); what this relay misses
                // meanwhile is repaired from the history once it is subscribed again.
                self.resync.store(true, Ordering::Relaxed);
                tracing::warn!("Redis subscription connection lost; reconnecting");
            }
            // A cluster node drops a room's subscription when the room's slot moves to another
            // shard: subscribe again (on the new owner) and repair, as after a disconnection.
            // Ours, after the room's last member left, concern no room with members here.
            PushKind::SUnsubscribe => {
                if let Some(Value::BulkString(channel)) = info.data.first()
                    && room_of(channel).is_some_and(|room| self.hub.has_room(room))
                {
                    self.resync.store(true, Ordering::Relaxed);
                    tracing::info!("a room's slot moved to another shard; subscribing again");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether both connections answer a PING in time.
async fn ping(links: &Links) -> bool {
    let (mut commands, mut subscriptions) = (links.commands.clone(), links.subscriptions.clone());
    let both = async {
        commands.ping().await?;
        subscriptions.ping().await
    };
    matches!(
        tokio::time::timeout(2 * COMMAND_TIMEOUT, both).await,
        Ok(Ok(_))
    )
}
