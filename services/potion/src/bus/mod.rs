//! The fan-out bus: how a message published on one relay reaches the room's members on every
//! relay, and where presence is kept. Two implementations: [`local::LocalBus`] (one relay, in
//! process) and [`redis::RedisBus`] (any number of relays sharing one Redis).

pub mod local;
pub mod redis;

use bytestring::ByteString;
use futures_util::future::BoxFuture;
use ilo_protocol::Member;

use crate::hub::Identity;

#[derive(Debug, thiserror::Error)]
#[error("the fan-out bus is unavailable")]
pub struct BusDown;

/// What entering a room's presence found.
pub struct Presence {
    /// Every member on every relay, when the bus knows more than this relay; `None`: use the
    /// local members.
    pub members: Option<Vec<Member>>,
    /// The user was already present through another relay (no presence event is due).
    pub present_elsewhere: bool,
}

pub trait Bus: Send + Sync + 'static {
    /// Sends an envelope (`<user id to skip>\n<frame>`) to the room's members on every relay,
    /// this one included. One publish per message, whatever the number of recipients.
    fn publish<'a>(
        &'a self,
        room: &'a str,
        envelope: ByteString,
    ) -> BoxFuture<'a, Result<(), BusDown>>;

    /// Starts receiving the room: its first member on this relay joined.
    fn subscribe<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<(), BusDown>>;

    /// Stops receiving the room: its last member on this relay left.
    fn unsubscribe<'a>(&'a self, room: &'a str) -> BoxFuture<'a, ()>;

    /// Records that `who` is in `room` on this relay.
    fn enter<'a>(
        &'a self,
        room: &'a str,
        who: &'a Identity,
    ) -> BoxFuture<'a, Result<Presence, BusDown>>;

    /// Records that `who` left `room` on this relay; whether it is still present elsewhere.
    fn exit<'a>(&'a self, room: &'a str, who: &'a Identity) -> BoxFuture<'a, bool>;

    /// Whether messages can be published now.
    fn is_up(&self) -> bool;
}

/// An envelope for the bus: the frame, and whose connections must not receive it.
pub fn envelope(skip_user: &str, frame: &str) -> ByteString {
    let mut text = String::with_capacity(skip_user.len() + 1 + frame.len());
    text.push_str(skip_user);
    text.push('\n');
    text.push_str(frame);
    ByteString::from(text)
}
