//! The in-process bus: one relay, no Redis. Publishing is delivering; each room's history is a
//! ring in memory, and each start of the relay draws new epochs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, ready};
use ilo_protocol::PresenceEvent;

use super::{Bus, BusDown, History, Presence, Read};
use crate::hub::{Hub, Identity};
use crate::rooms::envelope::{self, Arrival, Place};

/// How often rooms whose history expired are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub(crate) struct LocalBus {
    hub: Arc<Hub>,
    size: usize,
    ttl: Duration,
    rings: Mutex<Rings>,
}

struct Rings {
    rooms: HashMap<Arc<str>, Ring>,
    swept: Instant,
}

/// One room's history.
struct Ring {
    epoch: Arc<str>,
    offset: u64,
    /// The last `size` messages, encoded as they were delivered.
    messages: VecDeque<Arrival>,
    last_message: Instant,
}

impl Ring {
    fn new() -> Self {
        Self {
            epoch: envelope::new_epoch().into(),
            offset: 0,
            messages: VecDeque::new(),
            last_message: Instant::now(),
        }
    }
}

impl LocalBus {
    /// `size` messages per room (0: no history), kept `ttl` after the room's last message.
    pub(crate) fn new(hub: Arc<Hub>, size: usize, ttl: Duration) -> Self {
        Self {
            hub,
            size,
            ttl,
            rings: Mutex::new(Rings {
                rooms: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    fn rings(&self) -> MutexGuard<'_, Rings> {
        let mut rings = self.rings.lock().unwrap_or_else(PoisonError::into_inner);
        if rings.swept.elapsed() >= SWEEP_EVERY {
            let ttl = self.ttl;
            rings.rooms.retain(|_, r| r.last_message.elapsed() < ttl);
            rings.swept = Instant::now();
        }
        rings
    }

    fn announce(&self, room: &str, who: &Identity, event: PresenceEvent) {
        self.hub.deliver(room, Arrival::presence(room, who, event));
    }
}

/// The room's ring, a new one (new epoch) when its history expired.
fn ring<'a>(rings: &'a mut Rings, room: &str, ttl: Duration) -> &'a mut Ring {
    if !rings.rooms.contains_key(room) {
        rings.rooms.insert(room.into(), Ring::new());
    }
    let ring = rings.rooms.get_mut(room).expect("inserted above");
    if ring.last_message.elapsed() >= ttl {
        *ring = Ring::new();
    }
    ring
}

impl Bus for LocalBus {
    fn publish<'a>(&'a self, room: &'a str, head: String) -> BoxFuture<'a, Result<(), BusDown>> {
        if self.size == 0 {
            let frame = format!("{head}}}");
            self.hub.deliver(room, Arrival::message(None, &frame));
            return ready(Ok(())).boxed();
        }
        // Held while delivering: the ring's order is the order every member sees.
        let mut rings = self.rings();
        let ring = ring(&mut rings, room, self.ttl);
        ring.offset += 1;
        ring.last_message = Instant::now();
        let place = Place {
            epoch: ring.epoch.clone(),
            offset: ring.offset,
        };
        let frame = envelope::complete(&head, &place);
        let arrival = Arrival::message(Some(place), &frame);
        if ring.messages.len() == self.size {
            ring.messages.pop_front();
        }
        ring.messages.push_back(arrival.clone());
        // A hole cannot happen in process: nothing to repair.
        let _ = self.hub.deliver(room, arrival);
        ready(Ok(())).boxed()
    }

    fn read<'a>(&'a self, room: &'a str, read: Read) -> BoxFuture<'a, Result<History, BusDown>> {
        let mut rings = self.rings();
        let ring = ring(&mut rings, room, self.ttl);
        let after = read
            .after
            .filter(|after| *after.epoch == *ring.epoch)
            .map(|after| after.offset);
        let skip = match after {
            Some(offset) => ring
                .messages
                .partition_point(|a| a.place().is_some_and(|p| p.offset <= offset)),
            None => ring.messages.len().saturating_sub(read.last),
        };
        let messages = ring.messages.iter().skip(skip).cloned().collect();
        ready(Ok(History {
            epoch: ring.epoch.clone(),
            offset: ring.offset,
            messages,
        }))
        .boxed()
    }

    fn subscribe<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), BusDown>> {
        ready(Ok(())).boxed()
    }

    fn unsubscribe<'a>(&'a self, _: &'a str) -> BoxFuture<'a, ()> {
        ready(()).boxed()
    }

    fn enter<'a>(
        &'a self,
        room: &'a str,
        who: &'a Identity,
        arrived: bool,
    ) -> BoxFuture<'a, Result<Presence, BusDown>> {
        if arrived {
            self.announce(room, who, PresenceEvent::Join);
        }
        ready(Ok(Presence { members: None })).boxed()
    }

    fn exit<'a>(&'a self, room: &'a str, who: &'a Identity) -> BoxFuture<'a, ()> {
        self.announce(room, who, PresenceEvent::Leave);
        ready(()).boxed()
    }

    fn is_up(&self) -> bool {
        true
    }
}
