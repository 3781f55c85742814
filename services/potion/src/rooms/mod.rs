//! A room's whole life on this relay, over the hub (local members) and the bus (other relays,
//! history, presence): subscribing when its first local member joins and unsubscribing after
//! the last one leaves; presence; the seam between a joiner's replay and the live messages;
//! repairs from the history when this relay missed messages; the message envelope both ways
//! ([`envelope`]). It answers with outcomes; the connection turns them into frames.

pub(crate) mod envelope;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ilo_protocol::{Member, Position, ServerFrame, Unrecovered};

use crate::bus::{Bus, History, Read};
use crate::hub::{ConnId, Hub, Identity, JoinError, Left};
use crate::metrics::Metrics;
use envelope::{Arrival, Place};

/// How long a repair waits before reading an unreachable history again.
const REPAIR_RETRY: Duration = Duration::from_millis(500);

pub(crate) struct Rooms {
    hub: Arc<Hub>,
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
    max_rooms: usize,
    /// Messages kept per room (`POTION_HISTORY_SIZE`); 0: no history.
    history: usize,
}

/// What a `join` asks to receive of the past.
#[derive(Debug, Default)]
pub(crate) struct Ask {
    pub since: Option<Position>,
    pub history: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    TooManyRooms(usize),
    NotInRoom,
    BusDown,
}

/// A join that went through, before the connection is admitted ([`Rooms::admit`]).
pub(crate) struct Entry {
    /// Every member on every relay, the joiner included.
    pub members: Vec<Member>,
    /// Where the room stands: the place of its latest message, when it keeps history.
    pub at: Option<Place>,
    /// Only in answer to `since`: whether everything after it is replayed, and if not why.
    pub recovered: Option<Result<(), Unrecovered>>,
    /// The messages to replay, in order.
    replay: Vec<Arrival>,
}

impl Entry {
    pub(crate) fn missed(&self) -> u64 {
        self.replay.len() as u64
    }
}

impl Rooms {
    pub(crate) fn new(
        hub: Arc<Hub>,
        bus: Arc<dyn Bus>,
        metrics: Arc<Metrics>,
        max_rooms: usize,
        history: usize,
    ) -> Self {
        Self {
            hub,
            bus,
            metrics,
            max_rooms,
            history,
        }
    }

    /// Joins `room`: the connection waits (pending) while presence is recorded and the history
    /// read; the room's live frames are kept for it meanwhile.
    pub(crate) async fn join(
        &self,
        id: ConnId,
        who: &Identity,
        room: &str,
        ask: Ask,
    ) -> Result<Entry, Refused> {
        let joined = match self.hub.join(id, room, self.max_rooms) {
            Ok(joined) => joined,
            Err(JoinError::TooManyRooms) => return Err(Refused::TooManyRooms(self.max_rooms)),
            Err(JoinError::UnknownConnection) => return Err(Refused::NotInRoom),
        };
        if joined.room_was_empty && self.bus.subscribe(room).await.is_err() {
            return Err(self.undo_join(id, who, room).await);
        }
        let presence = self.bus.enter(room, who, joined.user_arrived).await;
        let members = match presence {
            Ok(presence) => presence
                .members
                .unwrap_or_else(|| self.hub.local_members(room)),
            Err(_) if joined.already_member => return Err(Refused::BusDown),
            Err(_) => return Err(self.undo_join(id, who, room).await),
        };
        if joined.already_member {
            // Joined already: the current list, and no replay (it has been receiving).
            return Ok(Entry {
                members,
                at: self.hub.position(room),
                recovered: None,
                replay: Vec::new(),
            });
        }
        if self.history == 0 {
            return Ok(Entry {
                members,
                at: None,
                recovered: ask.since.map(|_| Err(Unrecovered::Unavailable)),
                replay: Vec::new(),
            });
        }
        let read = match (&ask.since, ask.history) {
            (Some(since), _) => Read {
                after: Some(Place {
                    epoch: since.epoch.as_str().into(),
                    offset: since.offset,
                }),
                last: self.history,
            },
            (None, Some(last)) => Read {
                after: None,
                last: usize::try_from(last)
                    .unwrap_or(usize::MAX)
                    .min(self.history),
            },
            (None, None) => Read::default(),
        };
        Ok(match self.bus.read(room, read).await {
            Ok(history) => Entry {
                members,
                recovered: ask.since.map(|since| recovery(&since, &history)),
                at: Some(Place {
                    epoch: history.epoch,
                    offset: history.offset,
                }),
                replay: history.messages,
            },
            Err(_) => Entry {
                members,
                at: self.hub.position(room),
                recovered: ask.since.map(|_| Err(Unrecovered::Unavailable)),
                replay: Vec::new(),
            },
        })
    }

    /// Ends a join: queues `joined` (encoded by the connection), then the replay, then the
    /// live frames that came meanwhile after the replay's end. Nothing missing at the seam,
    /// nothing twice.
    pub(crate) fn admit(&self, id: ConnId, room: &str, entry: Entry, joined: Bytes) {
        self.hub.admit(id, room, joined, &entry.replay, entry.at);
    }

    async fn undo_join(&self, id: ConnId, who: &Identity, room: &str) -> Refused {
        if let Some(left) = self.hub.leave(id, room) {
            self.after_leave(who, left).await;
        }
        Refused::BusDown
    }

    pub(crate) async fn leave(
        &self,
        id: ConnId,
        who: &Identity,
        room: &str,
    ) -> Result<(), Refused> {
        let left = self.hub.leave(id, room).ok_or(Refused::NotInRoom)?;
        self.after_leave(who, left).await;
        Ok(())
    }

    /// The connection is gone: it leaves every room it was in.
    pub(crate) async fn disconnect(&self, id: ConnId, who: &Identity) {
        for left in self.hub.unregister(id) {
            self.after_leave(who, left).await;
        }
    }

    /// Presence and subscription once a connection is out of a room.
    async fn after_leave(&self, who: &Identity, left: Left) {
        if left.user_departed {
            self.bus.exit(&left.room, who).await;
        }
        if left.room_now_empty {
            self.bus.unsubscribe(&left.room).await;
        }
    }

    /// Accepts a message: the bus stores it in the room's history and publishes it; the
    /// sender's own connection receives it like every member. The checks happen now; the
    /// returned future waits for the bus. Futures polled in the order they were made reach
    /// the bus in that order, so a connection can have several in flight and keep its order.
    pub(crate) fn send(
        &self,
        id: ConnId,
        who: &Identity,
        message: Outgoing,
    ) -> Result<Publishing, Refused> {
        if !self.hub.is_member(id, &message.room) {
            return Err(Refused::NotInRoom);
        }
        let frame = ServerFrame::Message {
            room: message.room,
            from: who.username.clone(),
            body: message.body,
            id: message.id,
            ts: ilo_runtime::unix_ms(),
            reference: message.reference,
            epoch: None,
            offset: None,
        };
        // Serialized once; every recipient on every relay gets these bytes.
        let head = envelope::message_head(&frame);
        let ServerFrame::Message { room, .. } = frame else {
            unreachable!("built as a message above");
        };
        let (bus, metrics) = (self.bus.clone(), self.metrics.clone());
        Ok(Box::pin(async move {
            let started = Instant::now();
            bus.publish(&room, head)
                .await
                .map_err(|_| Refused::BusDown)?;
            metrics.messages_in.inc();
            metrics
                .publish_seconds
                .observe(started.elapsed().as_secs_f64());
            Ok(())
        }))
    }
}

/// A message on its way into the room's history.
pub(crate) type Publishing = Pin<Box<dyn Future<Output = Result<(), Refused>>>>;

/// A message a client sends.
pub(crate) struct Outgoing {
    pub room: String,
    pub body: String,
    pub reference: Option<String>,
    /// The server's id for it.
    pub id: String,
}

/// Whether a replay after `since` is whole.
fn recovery(since: &Position, history: &History) -> Result<(), Unrecovered> {
    if since.epoch != *history.epoch || since.offset > history.offset {
        return Err(Unrecovered::EpochChanged);
    }
    let first = history.messages.first().and_then(Arrival::place);
    let whole = first.map_or(history.offset == since.offset, |first| {
        first.offset == since.offset + 1
    });
    if whole {
        Ok(())
    } else {
        Err(Unrecovered::TooOld)
    }
}

/// Repairs a room this relay missed messages of, from `from` on: reads the history after it
/// and hands the hub what was missed (or a `gap` where the history does not reach back), until
/// the room is whole again or gone from this relay. One repair per room at a time: the hub
/// holds the room's frames meanwhile.
pub(crate) async fn repair(hub: Arc<Hub>, bus: Arc<dyn Bus>, room: Arc<str>, mut from: Place) {
    loop {
        tracing::debug!(%room, offset = from.offset, "repairing the room from its history");
        let read = Read {
            after: Some(from.clone()),
            last: usize::MAX,
        };
        match bus.read(&room, read).await {
            Ok(history) => match hub.repaired(&room, history) {
                Some(next) => from = next,
                None => return,
            },
            Err(_) if hub.is_held(&room) => tokio::time::sleep(REPAIR_RETRY).await,
            Err(_) => return,
        }
    }
}
