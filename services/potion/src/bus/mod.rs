//! The fan-out bus: how a message published on one relay reaches the room's members on every
//! relay, where each room's history is kept, and where presence is kept. Two implementations:
//! [`local::LocalBus`] (one relay, in process) and [`redis::RedisBus`] (any number of relays
//! sharing one Redis). Both hand what arrives to [`crate::hub::Hub::deliver`].

pub(crate) mod link;
pub(crate) mod local;
pub(crate) mod redis;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use ilo_protocol::Member;

use crate::hub::Identity;
use crate::rooms::envelope::{Arrival, Place};

#[derive(Debug, thiserror::Error)]
#[error("the fan-out bus is unavailable")]
pub(crate) struct BusDown;

/// What a read of a room's history asks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Read {
    /// The messages after this place, when it is in the room's current epoch.
    pub after: Option<Place>,
    /// Otherwise the last this many (0: none, only where the room stands).
    pub last: usize,
}

/// Where a room's history stands, and the messages read from it, in order.
pub(crate) struct History {
    pub epoch: Arc<str>,
    /// The offset of the room's latest message (0 before the first).
    pub offset: u64,
    pub messages: Vec<Arrival>,
}

/// What entering a room's presence found.
pub(crate) struct Presence {
    /// Every member on every relay, when the bus knows more than this relay; `None`: use the
    /// local members.
    pub members: Option<Vec<Member>>,
}

pub(crate) trait Bus: Send + Sync + 'static {
    /// Stores a message in the room's history and sends it to the room's members on every
    /// relay, this one included, in one step. `head` is the `message` frame without its place
    /// and closing brace ([`crate::rooms::envelope::message_head`]).
    fn publish<'a>(&'a self, room: &'a str, head: String) -> BoxFuture<'a, Result<(), BusDown>>;

    /// Reads the room's history.
    fn read<'a>(&'a self, room: &'a str, read: Read) -> BoxFuture<'a, Result<History, BusDown>>;

    /// Starts receiving the room: its first member on this relay joined.
    fn subscribe<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<(), BusDown>>;

    /// Stops receiving the room: its last member on this relay left.
    fn unsubscribe<'a>(&'a self, room: &'a str) -> BoxFuture<'a, ()>;

    /// Records that `who` is in `room` on this relay and, when the user was in the room nowhere
    /// before (`arrived`: its first connection here), announces it to the other members.
    fn enter<'a>(
        &'a self,
        room: &'a str,
        who: &'a Identity,
        arrived: bool,
    ) -> BoxFuture<'a, Result<Presence, BusDown>>;

    /// Records that `who`'s last connection in `room` on this relay left, and announces it
    /// when the user is in the room on no other relay.
    fn exit<'a>(&'a self, room: &'a str, who: &'a Identity) -> BoxFuture<'a, ()>;

    /// Whether messages can be published now.
    fn is_up(&self) -> bool;
}
