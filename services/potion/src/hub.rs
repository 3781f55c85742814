//! The relay's local state: its connections and the rooms they are in. One std Mutex guards it:
//! nothing awaits while holding it, and every operation is a few map updates. Delivery never
//! waits either: each recipient's bounded queue is filled with `try_send`, and a full queue
//! closes that recipient (4009) instead of slowing the room.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytestring::ByteString;
use ilo_protocol::{Member, close};

use crate::metrics::Metrics;
use crate::outbox::{Outbox, Refused};
use crate::socket;

pub type ConnId = u64;

/// Who is behind a connection, as ilo-api vouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub username: String,
    pub public_key: String,
    pub session_id: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A connection as the hub knows it: where to put its frames (and its close code).
pub struct ConnHandle {
    pub outbox: Arc<Outbox>,
    pub identity: Arc<Identity>,
}

struct Conn {
    handle: ConnHandle,
    rooms: HashSet<Arc<str>>,
}

#[derive(Default)]
struct Room {
    conns: Vec<ConnId>,
    /// Connections per user id, for presence (first in, last out).
    users: HashMap<String, usize>,
}

#[derive(Default)]
struct State {
    conns: HashMap<ConnId, Conn>,
    rooms: HashMap<Arc<str>, Room>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum JoinError {
    TooManyRooms,
    UnknownConnection,
}

/// What a join changed locally.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Joined {
    pub already_member: bool,
    /// The room had no member on this relay before: subscribe to it.
    pub room_was_empty: bool,
    /// The user had no connection in the room on this relay before.
    pub user_arrived: bool,
}

/// What a leave changed locally.
#[derive(Debug, PartialEq, Eq)]
pub struct Left {
    pub room: Arc<str>,
    /// No member is left on this relay: unsubscribe.
    pub room_now_empty: bool,
    /// The user's last connection in the room on this relay left.
    pub user_departed: bool,
}

pub struct Hub {
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Self {
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

    pub fn register(&self, id: ConnId, handle: ConnHandle) {
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
    pub fn unregister(&self, id: ConnId) -> Vec<Left> {
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

    pub fn join(&self, id: ConnId, room: &str, max_rooms: usize) -> Result<Joined, JoinError> {
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
        let room_was_empty = entry.conns.is_empty();
        entry.conns.push(id);
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

    /// `None` when the connection was not in the room.
    pub fn leave(&self, id: ConnId, room: &str) -> Option<Left> {
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

    pub fn is_member(&self, id: ConnId, room: &str) -> bool {
        self.lock()
            .conns
            .get(&id)
            .is_some_and(|c| c.rooms.contains(room))
    }

    /// The room's members on this relay, one entry per user.
    pub fn local_members(&self, room: &str) -> Vec<Member> {
        let state = self.lock();
        let Some(room) = state.rooms.get(room) else {
            return Vec::new();
        };
        let mut seen = HashSet::new();
        room.conns
            .iter()
            .filter_map(|id| state.conns.get(id))
            .filter(|c| seen.insert(c.handle.identity.user_id.clone()))
            .map(|c| Member {
                user: c.handle.identity.username.clone(),
                public_key: c.handle.identity.public_key.clone(),
            })
            .collect()
    }

    /// Every (room, identity) present on this relay: what its presence leases cover.
    pub fn presence(&self) -> Vec<(Arc<str>, Arc<Identity>)> {
        let state = self.lock();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (name, room) in &state.rooms {
            for conn in room.conns.iter().filter_map(|id| state.conns.get(id)) {
                let identity = &conn.handle.identity;
                if seen.insert((name.clone(), identity.user_id.clone())) {
                    out.push((name.clone(), identity.clone()));
                }
            }
        }
        out
    }

    /// Hands an envelope from the bus to every local member of `room`.
    /// Envelope: `<user id to skip>\n<frame>`. The WebSocket frame is encoded once and its
    /// bytes shared by every recipient, never copied per recipient.
    pub fn deliver(&self, room: &str, envelope: &ByteString) {
        let Some((skip, frame)) = envelope.split_once('\n') else {
            return;
        };
        let frame = socket::text(frame);
        let state = self.lock();
        let Some(members) = state.rooms.get(room) else {
            return;
        };
        let mut delivered = 0u64;
        for conn in members.conns.iter().filter_map(|id| state.conns.get(id)) {
            if !skip.is_empty() && conn.handle.identity.user_id == skip {
                continue;
            }
            match conn.handle.outbox.try_send(frame.clone()) {
                Ok(()) => delivered += 1,
                Err(Refused::Full) => {
                    if conn.handle.outbox.close(close::SLOW_CONSUMER) {
                        self.metrics.slow_consumers.inc();
                    }
                }
                Err(Refused::Closed) => {}
            }
        }
        self.metrics.deliveries.inc_by(delivered);
    }

    /// Closes every connection whose session is in `session_ids` with `code`; how many.
    pub fn close_sessions(&self, session_ids: &[String], code: u16) -> usize {
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
    pub fn close_all(&self, code: u16) {
        for conn in self.lock().conns.values() {
            conn.handle.outbox.close(code);
        }
    }

    /// The distinct sessions of live connections, to re-validate after missed revocations.
    pub fn session_ids(&self) -> Vec<String> {
        let state = self.lock();
        let ids: HashSet<&String> = state
            .conns
            .values()
            .map(|c| &c.handle.identity.session_id)
            .collect();
        ids.into_iter().cloned().collect()
    }

    /// Rooms with a member on this relay.
    pub fn rooms(&self) -> Vec<Arc<str>> {
        self.lock().rooms.keys().cloned().collect()
    }

    pub fn connection_count(&self) -> usize {
        self.lock().conns.len()
    }
}

fn remove_member(state: &mut State, id: ConnId, user: &str, room: Arc<str>) -> Option<Left> {
    let entry = state.rooms.get_mut(&room)?;
    entry.conns.retain(|c| *c != id);
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
    let room_now_empty = entry.conns.is_empty();
    if room_now_empty {
        state.rooms.remove(&room);
    }
    Some(Left {
        room,
        room_now_empty,
        user_departed,
    })
}
