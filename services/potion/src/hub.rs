//! The relay's local state: its connections, the rooms they are in, and the order in which
//! each room's frames reach them. One std Mutex guards it: nothing awaits while holding it, and
//! every operation is a few map updates. Delivery never waits either: each recipient's bounded
//! outbox is filled without waiting (a full one closes that recipient, not the room).
//!
//! Each room remembers the last message it delivered here. A message that is already
//! delivered is dropped; one that skips ahead (this relay missed some) or comes from a new
//! epoch holds the room until [`crate::rooms::repair`] brings what is missing from the history
//! (or a `gap`). A joining connection is pending: the room's frames wait for it until its
//! `joined` and replay are queued ([`Hub::admit`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::bus::History;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::rooms::envelope::{Arrival, Kind, Place};

pub(crate) type ConnId = u64;

/// Who is behind a connection, as ilo-api vouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub user_id: String,
    pub username: String,
    pub public_key: String,
    pub session_id: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A connection as the hub knows it: where to put its frames (and its close code).
pub(crate) struct ConnHandle {
    pub outbox: Arc<Outbox>,
    pub identity: Arc<Identity>,
}

struct Conn {
    handle: ConnHandle,
    rooms: HashSet<Arc<str>>,
}

/// A connection in a room.
struct Member {
    conn: ConnId,
    entry: Entry,
}

enum Entry {
    /// Joining: the room's frames wait here while its history is read, and follow the replay.
    Pending(Vec<Arrival>),
    /// Receiving. `floor`: the last message it was replayed when it is ahead of the room's
    /// position here, so that the room catching up does not send it those messages twice.
    Live { floor: Option<Place> },
}

#[derive(Default)]
struct Room {
    members: Vec<Member>,
    /// Connections per user id, for presence (first in, last out).
    users: HashMap<String, usize>,
    /// The last message delivered here; `None` until the first one (or without history).
    position: Option<Place>,
    /// While the room is repaired from the history: what arrived meanwhile, in order.
    held: Option<Held>,
}

/// Frames held during a repair. Bounded: past the bound they are dropped and another repair
/// fetches them from the history.
#[derive(Default)]
struct Held {
    arrivals: Vec<Arrival>,
    overflowed: bool,
}

impl Held {
    fn push(&mut self, arrival: Arrival) {
        if self.arrivals.len() < HELD_MAX {
            self.arrivals.push(arrival);
        } else {
            self.overflowed = true;
        }
    }
}

/// Most frames a room holds while it is repaired.
const HELD_MAX: usize = 4096;

#[derive(Default)]
struct State {
    conns: HashMap<ConnId, Conn>,
    rooms: HashMap<Arc<str>, Room>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JoinError {
    TooManyRooms,
    UnknownConnection,
}

/// What a join changed locally.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Joined {
    pub already_member: bool,
    /// The room had no member on this relay before: subscribe to it.
    pub room_was_empty: bool,
    /// The user had no connection in the room on this relay before.
    pub user_arrived: bool,
}

/// What a leave changed locally.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Left {
    pub room: Arc<str>,
    /// No member is left on this relay: unsubscribe.
    pub room_now_empty: bool,
    /// The user's last connection in the room on this relay left.
    pub user_departed: bool,
}

/// A hole in what a room received: repair it from the history, from this place.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Hole(pub Place);

pub(crate) struct Hub {
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn register(&self, id: ConnId, handle: ConnHandle) {
        self.lock().conns.insert(
            id,
            Conn {
                handle,
                rooms: HashSet::new(),
            },
        );
        self.metrics.connections.inc();
    }

    /// Removes a connection; what each of its rooms lost.
    pub(crate) fn unregister(&self, id: ConnId) -> Vec<Left> {
        let mut state = self.lock();
        let Some(conn) = state.conns.remove(&id) else {
            return Vec::new();
        };
        self.metrics.connections.dec();
        let user = &conn.handle.identity.user_id;
        let lefts: Vec<Left> = conn
            .rooms
            .into_iter()
            .filter_map(|room| remove_member(&mut state, id, user, room))
            .collect();
        for _ in lefts.iter().filter(|l| l.room_now_empty) {
            self.metrics.rooms.dec();
        }
        lefts
    }

    /// Adds the connection to the room, pending: the room's frames wait for [`Hub::admit`].
    pub(crate) fn join(
        &self,
        id: ConnId,
        room: &str,
        max_rooms: usize,
    ) -> Result<Joined, JoinError> {
        let mut state = self.lock();
        let State { conns, rooms } = &mut *state;
        let conn = conns.get_mut(&id).ok_or(JoinError::UnknownConnection)?;
        if conn.rooms.contains(room) {
            return Ok(Joined {
                already_member: true,
                ..Joined::default()
            });
        }
        if conn.rooms.len() >= max_rooms {
            return Err(JoinError::TooManyRooms);
        }
        let key: Arc<str> = rooms
            .get_key_value(room)
            .map_or_else(|| Arc::from(room), |(k, _)| k.clone());
        conn.rooms.insert(key.clone());
        let entry = rooms.entry(key).or_default();
        let room_was_empty = entry.members.is_empty();
        entry.members.push(Member {
            conn: id,
            entry: Entry::Pending(Vec::new()),
        });
        let count = entry
            .users
            .entry(conn.handle.identity.user_id.clone())
            .or_default();
        *count += 1;
        if room_was_empty {
            self.metrics.rooms.inc();
        }
        Ok(Joined {
            already_member: false,
            room_was_empty,
            user_arrived: *count == 1,
        })
    }

    /// Ends a pending join: queues `joined`, then `replay`, then what the room received
    /// meanwhile after `at` (the last replayed place); from then on the connection receives the
    /// room's frames as they come. Whether the connection is still in the room.
    pub(crate) fn admit(
        &self,
        id: ConnId,
        room: &str,
        joined: Bytes,
        replay: &[Arrival],
        at: Option<Place>,
    ) -> bool {
        let mut state = self.lock();
        let State { conns, rooms } = &mut *state;
        let (Some(conn), Some(entry)) = (conns.get(&id), rooms.get_mut(room)) else {
            return false;
        };
        let Some(member) = entry.members.iter_mut().find(|m| m.conn == id) else {
            return false;
        };
        let outbox = &conn.handle.outbox;
        let waiting = match &mut member.entry {
            Entry::Pending(waiting) => std::mem::take(waiting),
            Entry::Live { .. } => {
                // A join of a room it is already in: nothing to replay.
                outbox.push(joined);
                return true;
            }
        };
        let seen = |a: &Arrival| matches!((&a.kind, &at), (Kind::Message(Some(p)), Some(at)) if p.within(at));
        let frames = std::iter::once(joined)
            .chain(replay.iter().map(|a| a.frame.clone()))
            .chain(waiting.into_iter().filter(|a| !seen(a)).map(|a| a.frame));
        for frame in frames {
            if !outbox.push(frame) {
                break;
            }
        }
        let behind = match (&entry.position, &at) {
            (Some(position), Some(at)) => position.offset < at.offset || position.epoch != at.epoch,
            (None, _) => {
                entry.position = at.clone();
                false
            }
            (Some(_), None) => false,
        };
        member.entry = Entry::Live {
            floor: at.filter(|_| behind),
        };
        true
    }

    /// `None` when the connection was not in the room.
    pub(crate) fn leave(&self, id: ConnId, room: &str) -> Option<Left> {
        let mut state = self.lock();
        let conn = state.conns.get_mut(&id)?;
        let key = conn.rooms.take(room)?;
        let user = conn.handle.identity.user_id.clone();
        let left = remove_member(&mut state, id, &user, key);
        if left.as_ref().is_some_and(|l| l.room_now_empty) {
            self.metrics.rooms.dec();
        }
        left
    }

    pub(crate) fn is_member(&self, id: ConnId, room: &str) -> bool {
        self.lock()
            .conns
            .get(&id)
            .is_some_and(|c| c.rooms.contains(room))
    }

    /// The room's members on this relay, one entry per user.
    pub(crate) fn local_members(&self, room: &str) -> Vec<ilo_protocol::Member> {
        let state = self.lock();
        let Some(room) = state.rooms.get(room) else {
            return Vec::new();
        };
        let mut seen = HashSet::new();
        room.members
            .iter()
            .filter_map(|m| state.conns.get(&m.conn))
            .filter(|c| seen.insert(c.handle.identity.user_id.clone()))
            .map(|c| ilo_protocol::Member {
                user: c.handle.identity.username.clone(),
                public_key: c.handle.identity.public_key.clone(),
            })
            .collect()
    }

    /// The last message the room delivered here.
    pub(crate) fn position(&self, room: &str) -> Option<Place> {
        self.lock().rooms.get(room)?.position.clone()
    }

    /// Every (room, identity) present on this relay: what its presence leases cover.
    pub(crate) fn presence(&self) -> Vec<(Arc<str>, Arc<Identity>)> {
        let state = self.lock();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (name, room) in &state.rooms {
            for conn in room.members.iter().filter_map(|m| state.conns.get(&m.conn)) {
                let identity = &conn.handle.identity;
                if seen.insert((name.clone(), identity.user_id.clone())) {
                    out.push((name.clone(), identity.clone()));
                }
            }
        }
        out
    }

    /// Hands a frame from the bus to the room's members on this relay, in the room's order: a
    /// message already delivered is dropped; one that skips ahead (or comes from a new epoch)
    /// is held, and the hole is returned for the caller to repair from the history. Never waits.
    pub(crate) fn deliver(&self, room: &str, arrival: Arrival) -> Option<Hole> {
        let mut state = self.lock();
        let State { conns, rooms } = &mut *state;
        let entry = rooms.get_mut(room)?;
        if let Some(held) = &mut entry.held {
            held.push(arrival);
            return None;
        }
        let hole = self.sequence(conns, entry, arrival).err()?;
        Some(self.hold(entry, hole))
    }

    /// Rooms to repair after the subscription was lost: each with a position is held from now
    /// until its repair ends ([`Hub::repaired`]); rooms already being repaired are left alone.
    pub(crate) fn start_repairs(&self) -> Vec<(Arc<str>, Place)> {
        let mut state = self.lock();
        let mut repairs = Vec::new();
        for (name, room) in &mut state.rooms {
            if room.held.is_none()
                && let Some(position) = &room.position
            {
                repairs.push((name.clone(), position.clone()));
                room.held = Some(Held::default());
            }
        }
        repairs
    }

    /// Ends a repair with what the history holds after the room's position (or all it keeps,
    /// in a new epoch): a `gap` first when that does not follow on, then those messages, then
    /// what was held meanwhile. `Some` when another repair is needed, from that place.
    pub(crate) fn repaired(&self, room: &str, history: History) -> Option<Place> {
        let mut state = self.lock();
        let State { conns, rooms } = &mut *state;
        let entry = rooms.get_mut(room)?;
        let held = entry.held.take()?;
        let first = history.messages.first().and_then(Arrival::place);
        let follows = entry.position.as_ref().is_some_and(|p| {
            *p.epoch == *history.epoch
                && first.map_or(history.offset <= p.offset, |first| {
                    first.offset <= p.offset + 1
                })
        });
        if !follows {
            let place = Place {
                epoch: history.epoch.clone(),
                offset: first.map_or(history.offset, |p| p.offset.saturating_sub(1)),
            };
            tracing::warn!(
                room,
                "the room's history does not cover what this relay missed"
            );
            entry.position = Some(place.clone());
            self.fan_out(conns, entry, &Arrival::gap(room, place));
        }
        let mut rest = history.messages.into_iter().chain(held.arrivals);
        while let Some(arrival) = rest.next() {
            if let Err(hole) = self.sequence(conns, entry, arrival) {
                let Hole(from) = self.hold(entry, hole);
                if let Some(held) = &mut entry.held {
                    rest.for_each(|arrival| held.push(arrival));
                }
                return Some(from);
            }
        }
        if held.overflowed {
            let from = entry.position.clone()?;
            entry.held = Some(Held::default());
            return Some(from);
        }
        None
    }

    /// Whether the room is waiting for a repair.
    pub(crate) fn is_held(&self, room: &str) -> bool {
        self.lock()
            .rooms
            .get(room)
            .is_some_and(|r| r.held.is_some())
    }

    /// Fans `arrival` out if it is the room's next frame; a hole comes back with the arrival.
    fn sequence(
        &self,
        conns: &HashMap<ConnId, Conn>,
        room: &mut Room,
        arrival: Arrival,
    ) -> Result<(), (Place, Arrival)> {
        if let Kind::Message(Some(place)) = &arrival.kind {
            if let Some(position) = &room.position {
                if place.within(position) {
                    return Ok(());
                }
                if place.epoch != position.epoch || place.offset > position.offset + 1 {
                    return Err((position.clone(), arrival));
                }
            }
            room.position = Some(place.clone());
        }
        self.fan_out(conns, room, &arrival);
        Ok(())
    }

    fn hold(&self, room: &mut Room, (from, arrival): (Place, Arrival)) -> Hole {
        let mut held = Held::default();
        held.push(arrival);
        room.held = Some(held);
        Hole(from)
    }

    /// Queues the frame for every member (pending ones keep it for later). Encoded once: each
    /// recipient gets a reference to the same bytes.
    fn fan_out(&self, conns: &HashMap<ConnId, Conn>, room: &mut Room, arrival: &Arrival) {
        let skip = match &arrival.kind {
            Kind::Presence(user) => Some(&**user),
            _ => None,
        };
        let mut delivered = 0u64;
        for member in &mut room.members {
            let Some(conn) = conns.get(&member.conn) else {
                continue;
            };
            if skip.is_some_and(|user| conn.handle.identity.user_id == user) {
                continue;
            }
            match &mut member.entry {
                Entry::Pending(waiting) if waiting.len() < conn.handle.outbox.bound() => {
                    waiting.push(arrival.clone());
                }
                Entry::Pending(_) => conn.handle.outbox.slow_consumer(),
                Entry::Live { floor } => {
                    if let Some(at) = floor {
                        match &arrival.kind {
                            Kind::Message(Some(place)) if place.within(at) => continue,
                            Kind::Gap(place) if place.epoch == at.epoch => {}
                            _ => *floor = None,
                        }
                    }
                    if conn.handle.outbox.push(arrival.frame.clone()) {
                        delivered += 1;
                    }
                }
            }
        }
        self.metrics.deliveries.inc_by(delivered);
    }

    /// Closes every connection whose session is in `session_ids` with `code`; how many.
    pub(crate) fn close_sessions(&self, session_ids: &[String], code: u16) -> usize {
        let wanted: HashSet<&str> = session_ids.iter().map(String::as_str).collect();
        let state = self.lock();
        let mut closed = 0;
        for conn in state.conns.values() {
            if wanted.contains(conn.handle.identity.session_id.as_str()) {
                conn.handle.outbox.close(code);
                closed += 1;
            }
        }
        closed
    }

    /// Closes every connection with `code` (shutdown: 1001).
    pub(crate) fn close_all(&self, code: u16) {
        for conn in self.lock().conns.values() {
            conn.handle.outbox.close(code);
        }
    }

    /// The distinct sessions of live connections, to re-validate after missed revocations.
    pub(crate) fn session_ids(&self) -> Vec<String> {
        let state = self.lock();
        let ids: HashSet<&String> = state
            .conns
            .values()
            .map(|c| &c.handle.identity.session_id)
            .collect();
        ids.into_iter().cloned().collect()
    }

    /// Rooms with a member on this relay.
    pub(crate) fn rooms(&self) -> Vec<Arc<str>> {
        self.lock().rooms.keys().cloned().collect()
    }

    /// Whether `room` has members on this relay.
    pub(crate) fn has_room(&self, room: &str) -> bool {
        self.lock().rooms.contains_key(room)
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.lock().conns.len()
    }
}

fn remove_member(state: &mut State, id: ConnId, user: &str, room: Arc<str>) -> Option<Left> {
    let entry = state.rooms.get_mut(&room)?;
    entry.members.retain(|m| m.conn != id);
    let user_departed = match entry.users.get_mut(user) {
        Some(count) if *count > 1 => {
            *count -= 1;
            false
        }
        _ => {
            entry.users.remove(user);
            true
        }
    };
    let room_now_empty = entry.members.is_empty();
    if room_now_empty {
        state.rooms.remove(&room);
    }
    Some(Left {
        room,
        room_now_empty,
        user_departed,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::task::{Context, Waker};

    use prometheus_client::metrics::counter::Counter;

    use super::*;

    fn hub(members: u64) -> (Hub, Vec<Arc<Outbox>>) {
        let hub = Hub::new(Arc::new(Metrics::new()));
        let outboxes = (1..=members)
            .map(|id| {
                let outbox = Arc::new(Outbox::new(64, Counter::default()));
                let identity = Arc::new(Identity {
                    user_id: format!("u{id}"),
                    username: format!("user{id}"),
                    public_key: String::new(),
                    session_id: format!("s{id}"),
                    expires_at: i64::MAX,
                });
                hub.register(
                    id,
                    ConnHandle {
                        outbox: outbox.clone(),
                        identity,
                    },
                );
                outbox
            })
            .collect();
        (hub, outboxes)
    }

    fn place(offset: u64) -> Place {
        Place {
            epoch: "e".into(),
            offset,
        }
    }

    fn message(offset: u64) -> Arrival {
        Arrival::message(Some(place(offset)), &offset.to_string())
    }

    /// What the connection was sent, as text (its frames are short and unmasked).
    fn sent(outbox: &Outbox) -> Vec<String> {
        let mut batch = VecDeque::new();
        let _ = outbox.poll_next(&mut Context::from_waker(Waker::noop()), &mut batch);
        batch
            .iter()
            .map(|frame| String::from_utf8_lossy(&frame[2..]).into_owned())
            .collect()
    }

    fn join(hub: &Hub, id: ConnId, replay: &[Arrival], at: u64) {
        hub.join(id, "r", 8).expect("joins");
        assert!(hub.admit(
            id,
            "r",
            Bytes::from_static(b"\x81\x06joined"),
            replay,
            Some(place(at))
        ));
    }

    #[test]
    fn messages_come_once_in_offset_order_and_a_hole_is_repaired_before_anything_newer() {
        let (hub, out) = hub(1);
        join(&hub, 1, &[], 0);
        for offset in [1, 2, 2, 1] {
            assert_eq!(hub.deliver("r", message(offset)), None);
        }
        assert_eq!(hub.deliver("r", message(4)), Some(Hole(place(2))));
        assert_eq!(hub.deliver("r", message(5)), None, "held while repairing");
        assert_eq!(sent(&out[0]), ["joined", "1", "2"]);
        let history = History {
            epoch: "e".into(),
            offset: 4,
            messages: vec![message(3), message(4)],
        };
        assert_eq!(hub.repaired("r", history), None);
        hub.deliver("r", message(6));
        assert_eq!(sent(&out[0]), ["3", "4", "5", "6"]);
    }

    #[test]
    fn where_the_history_does_not_reach_back_members_get_a_gap() {
        let (hub, out) = hub(1);
        join(&hub, 1, &[], 2);
        assert_eq!(hub.deliver("r", message(9)), Some(Hole(place(2))));
        let history = History {
            epoch: "e".into(),
            offset: 9,
            messages: vec![message(7), message(8), message(9)],
        };
        assert_eq!(hub.repaired("r", history), None);
        assert_eq!(
            sent(&out[0]),
            [
                "joined",
                r#"{"type":"gap","room":"r","epoch":"e","offset":6}"#,
                "7",
                "8",
                "9"
            ]
        );
    }

    #[test]
    fn a_joiner_gets_joined_then_its_replay_then_what_came_meanwhile_once() {
        let (hub, out) = hub(3);
        join(&hub, 1, &[], 3);
        hub.join(2, "r", 8).expect("joins");
        hub.deliver("r", message(4));
        hub.deliver("r", message(5));
        // Its history read saw up to 4: 4 is in the replay and not sent again.
        let joined = Bytes::from_static(b"\x81\x06joined");
        hub.admit(2, "r", joined, &[message(3), message(4)], Some(place(4)));
        assert_eq!(sent(&out[1]), ["joined", "3", "4", "5"]);
        assert_eq!(sent(&out[0]), ["joined", "4", "5"]);

        // A joiner whose read is ahead of this relay skips what the room then catches up on.
        join(&hub, 3, &[message(6), message(7)], 7);
        for offset in 6..=8 {
            hub.deliver("r", message(offset));
        }
        assert_eq!(sent(&out[2]), ["joined", "6", "7", "8"]);
        assert_eq!(sent(&out[0]), ["6", "7", "8"]);
    }
}
