//! A chat session that stays connected: after a drop it reconnects by itself, with backoff and
//! jitter, and rejoins its rooms — what `potion-protocol.md`'s close-code table asks of clients.
//! A session the relay ended (4001) or a token it refuses ends it for good.
//!
//! It remembers where each room's history stood when it last heard from it (`epoch`, `offset`)
//! and rejoins with `since`, so the relay replays what was missed; when that cannot be whole the
//! `joined` frame says `recovered: false`, or a `gap` frame comes, both handed out as frames.
//!
//! With [`Chat::encrypt_with`], every text is sealed for the room's members (ilo-e2e/1) and
//! every message comes out opened, or saying plainly why it could not be.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use ilo_protocol::close;
use ilo_protocol::{ClientFrame, Position, ServerFrame};
use ilo_runtime::backoff::{self, Backoff};
use tokio::time::Instant;

use crate::e2e::{Content, E2e, KeyChange, SendError};
use crate::presence::Present;
use crate::ws::{self, Incoming, Options, Presented, WsError};

/// First retry delay bound; doubled per failed attempt up to [`RETRY_MAX`].
const RETRY_BASE: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(15);
/// After 1001 another relay can take the client at once: only spread the herd.
const GOING_AWAY_SPREAD: Duration = Duration::from_millis(500);

/// What happened on the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A frame from the relay, other than a `message`.
    Frame(ServerFrame),
    /// A message, opened when it was encrypted.
    Message(Received),
    /// A member's key is not the one known before.
    KeyChanged(KeyChange),
    /// The connection dropped (with this close code, if the relay sent one); retrying after
    /// `delay`.
    Reconnecting { code: Option<u16>, delay: Duration },
    /// Connected again (the `welcome` follows as a frame); the rooms are being rejoined.
    Reconnected,
}

/// A `message` frame as its reader should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub room: String,
    pub from: String,
    /// The relay's message id and clock (milliseconds).
    pub id: String,
    pub ts: u64,
    pub reference: Option<String>,
    pub content: Content,
}

/// Why a session ended for good.
#[derive(Debug, thiserror::Error)]
pub enum Ended {
    #[error("the session ended (4001); log in again")]
    SessionEnded,
    #[error("the relay refused the token: {0}")]
    Refused(WsError),
}

#[derive(Debug, thiserror::Error)]
#[error("not connected right now; reconnecting")]
pub struct NotConnected;

pub struct Chat {
    url: String,
    token: String,
    /// Rooms to be in, in join order: rejoined after every reconnect.
    rooms: Vec<String>,
    /// Each room's last message seen (or where it stood at `joined`, before any replay).
    positions: HashMap<String, Position>,
    connection: Option<ws::Connection>,
    /// Waits between reconnections: full jitter under a bound growing from [`RETRY_BASE`].
    backoff: Backoff,
    /// Whether this drop has been retried already (the first retry after 1001 is quick).
    retrying: bool,
    /// Who is in each room, to skip joins announced again for members already listed.
    present: Present,
    retry_at: Option<Instant>,
    e2e: Option<E2e>,
    me: Option<String>,
    /// A `message` being opened: kept here so that a cancelled [`Chat::next`] loses nothing.
    opening: Option<ServerFrame>,
    /// Events decided but not handed out yet.
    ready: VecDeque<Event>,
    max_body: usize,
}

impl Chat {
    /// Connects to `url` (`ws://host/ws`) with `token`.
    pub async fn connect(url: &str, token: &str) -> Result<Self, WsError> {
        let connection = open(url, token).await?;
        Ok(Self {
            url: url.to_owned(),
            token: token.to_owned(),
            rooms: Vec::new(),
            positions: HashMap::new(),
            connection: Some(connection),
            backoff: Backoff::full_jitter(RETRY_BASE, RETRY_MAX),
            retrying: false,
            present: Present::default(),
            retry_at: None,
            e2e: None,
            me: None,
            opening: None,
            ready: VecDeque::new(),
            max_body: ilo_protocol::MAX_BODY_BYTES,
        })
    }

    /// Encrypts every text from now on, and opens what arrives, with `e2e`.
    pub fn encrypt_with(&mut self, e2e: E2e) {
        self.e2e = Some(e2e);
    }

    /// The relay's `body` limit when it is not the default.
    pub fn set_max_body(&mut self, bytes: usize) {
        self.max_body = bytes;
    }

    pub fn e2e(&self) -> Option<&E2e> {
        self.e2e.as_ref()
    }

    pub fn e2e_mut(&mut self) -> Option<&mut E2e> {
        self.e2e.as_mut()
    }

    /// This user's name, as the relay's `welcome` gave it.
    pub fn me(&self) -> Option<&str> {
        self.me.as_deref()
    }

    pub fn rooms(&self) -> &[String] {
        &self.rooms
    }

    pub async fn join(&mut self, room: &str) -> Result<(), NotConnected> {
        self.join_with_history(room, 0).await
    }

    /// Joins `room` asking for its last `last` messages still kept (0: none). A room this
    /// session was in before picks up after the last message it saw instead.
    pub async fn join_with_history(&mut self, room: &str, last: u64) -> Result<(), NotConnected> {
        if !self.rooms.iter().any(|r| r == room) {
            self.rooms.push(room.to_owned());
        }
        let join = self.join_frame(room, last);
        self.send(&join).await
    }

    pub async fn leave(&mut self, room: &str) -> Result<(), NotConnected> {
        self.rooms.retain(|r| r != room);
        self.positions.remove(room);
        self.send(&ClientFrame::Leave { room: room.into() }).await
    }

    /// Where `room`'s history stood at the last message this session saw in it.
    pub fn position(&self, room: &str) -> Option<&Position> {
        self.positions.get(room)
    }

    fn join_frame(&self, room: &str, last: u64) -> ClientFrame {
        let since = self.positions.get(room).cloned();
        ClientFrame::Join {
            room: room.to_owned(),
            history: (since.is_none() && last > 0).then_some(last),
            since,
        }
    }

    /// Sends `text` to `room`: sealed for its members when encrypting, as is otherwise.
    pub async fn say(
        &mut self,
        room: &str,
        text: &str,
        reference: Option<String>,
    ) -> Result<(), SendError> {
        let body = match (&self.e2e, self.me.as_deref()) {
            (Some(e2e), Some(me)) => e2e.seal(me, room, text, self.max_body).await?,
            // Not welcomed yet: the room cannot have been joined either.
            (Some(_), None) => return Err(SendError::NotJoined(room.to_owned())),
            (None, _) => text.to_owned(),
        };
        self.send(&ClientFrame::Send {
            room: room.into(),
            body,
            reference,
        })
        .await
        .map_err(|NotConnected| SendError::NotConnected)
    }

    /// Says goodbye (close 1000) and stops reconnecting.
    pub async fn close(mut self) {
        if let Some(mut connection) = self.connection.take() {
            let _ = connection.send_raw(ws::RawMessage::Close(None)).await;
        }
    }

    async fn send(&mut self, frame: &ClientFrame) -> Result<(), NotConnected> {
        let connection = self.connection.as_mut().ok_or(NotConnected)?;
        if connection.send(frame).await.is_err() {
            // The read side will see the drop and reconnect.
            return Err(NotConnected);
        }
        Ok(())
    }

    /// The next event. Cancel-safe: dropping the future loses nothing, so it can sit in a
    /// `select!` beside other input.
    pub async fn next(&mut self) -> Result<Event, Ended> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            if let Some(frame) = self.opening.clone() {
                let event = self.open(frame).await;
                self.opening = None;
                match event {
                    Some(event) => return Ok(event),
                    None => continue, // a replayed message, dropped
                }
            }
            let Some(connection) = self.connection.as_mut() else {
                return self.reconnect().await;
            };
            let code = match connection.recv().await {
                Ok(Incoming::Text(text)) => match serde_json::from_str::<ServerFrame>(&text) {
                    Ok(frame) => {
                        self.arrived(frame);
                        continue;
                    }
                    Err(_) => continue, // a frame type newer than this client
                },
                Ok(Incoming::Closed(code)) => Some(code),
                Err(_) => None,
            };
            self.connection = None;
            if code == Some(close::INVALID_SESSION) {
                return Err(Ended::SessionEnded);
            }
            let delay = self.backoff(code);
            self.retry_at = Some(Instant::now() + delay);
            return Ok(Event::Reconnecting { code, delay });
        }
    }

    /// Queues what a frame means: a message to open, key changes, the frame itself.
    fn arrived(&mut self, frame: ServerFrame) {
        self.follow(&frame);
        if !self.present.is_news(&frame) {
            return;
        }
        if matches!(frame, ServerFrame::Message { .. }) {
            self.opening = Some(frame);
            return;
        }
        if let ServerFrame::Welcome { user, .. } = &frame {
            self.me = Some(user.clone());
        }
        let changes = self.e2e.as_mut().map(|e2e| e2e.track(&frame));
        self.ready.push_back(Event::Frame(frame));
        self.ready
            .extend(changes.into_iter().flatten().map(Event::KeyChanged));
    }

    /// Keeps each room's position: a `joined` stands before its replay, each message after
    /// itself, a `gap` where the room stands now.
    fn follow(&mut self, frame: &ServerFrame) {
        let (room, epoch, offset) = match frame {
            ServerFrame::Joined {
                room,
                epoch: Some(epoch),
                offset: Some(offset),
                missed,
                ..
            } => (room, epoch, offset.saturating_sub(*missed)),
            ServerFrame::Message {
                room,
                epoch: Some(epoch),
                offset: Some(offset),
                ..
            } => (room, epoch, *offset),
            ServerFrame::Gap {
                room,
                epoch,
                offset,
            } => (room, epoch, *offset),
            _ => return,
        };
        if self.rooms.contains(room) {
            let position = Position {
                epoch: epoch.clone(),
                offset,
            };
            self.positions.insert(room.clone(), position);
        }
    }

    /// A `message` frame as its reader should see it; `None` for a replay.
    async fn open(&mut self, frame: ServerFrame) -> Option<Event> {
        let ServerFrame::Message {
            room,
            from,
            body,
            id,
            ts,
            reference,
            ..
        } = frame
        else {
            return None;
        };
        let content = match self.e2e.as_mut() {
            Some(e2e) => e2e.open(&room, &from, &body).await?,
            None => match ilo_e2e::Body::parse(&body) {
                Ok(ilo_e2e::Body::Plain(_)) => Content::Plain(body),
                // Sealed, and this session holds no keys.
                Ok(ilo_e2e::Body::Sealed(_)) => Content::Unreadable(ilo_e2e::E2eError::NotForYou),
                Err(e) => Content::Unreadable(e),
            },
        };
        Some(Event::Message(Received {
            room,
            from,
            id,
            ts,
            reference,
            content,
        }))
    }

    async fn reconnect(&mut self) -> Result<Event, Ended> {
        loop {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
            }
            match open(&self.url, &self.token).await {
                Ok(mut connection) => {
                    for room in &self.rooms {
                        let join = self.join_frame(room, 0);
                        if connection.send(&join).await.is_err() {
                            break;
                        }
                    }
                    self.connection = Some(connection);
                    self.retrying = false;
                    self.backoff.reset();
                    self.retry_at = None;
                    return Ok(Event::Reconnected);
                }
                Err(WsError::Refused { status: 401, body }) => {
                    return Err(Ended::Refused(WsError::Refused { status: 401, body }));
                }
                Err(_) => self.retry_at = Some(Instant::now() + self.backoff(None)),
            }
        }
    }

    /// Full jitter over an exponentially growing bound; quick after 1001.
    fn backoff(&mut self, code: Option<u16>) -> Duration {
        let first = !self.retrying;
        self.retrying = true;
        if first && code == Some(close::GOING_AWAY) {
            return backoff::spread(GOING_AWAY_SPREAD);
        }
        self.backoff.next_delay()
    }
}

async fn open(url: &str, token: &str) -> Result<ws::Connection, WsError> {
    ws::connect(url, token, Presented::Header, Options::default()).await
}
