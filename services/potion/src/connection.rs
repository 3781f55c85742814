//! One WebSocket connection's reader: a task that handles the client's frames in order. What
//! the connection sends goes through its outbox, which the HTTP response body drains
//! ([`crate::socket`]); the reader, the hub or the relay ends the connection by setting the
//! outbox's close code.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use ilo_protocol::{ClientFrame, MAX_REF_CHARS, ServerFrame, close, is_valid_room};

use crate::bucket::{Bucket, Verdict};
use crate::caps::Slot;
use crate::hub::{ConnHandle, ConnId, Identity};
use crate::outbox::Outbox;
use crate::relay::Relay;
use crate::rooms::{Ask, Outgoing, Refused};
use crate::socket::{self, Incoming, Received};

/// Largest WebSocket message accepted; larger closes the connection with 1009.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;

/// Starts the connection's reader; the welcome frame is the first thing it sends.
pub(crate) fn start(
    relay: Arc<Relay>,
    identity: Arc<Identity>,
    outbox: Arc<Outbox>,
    incoming: Incoming,
    room: Option<String>,
    slot: Slot,
) {
    let id = relay.next_conn_id();
    let welcome = ServerFrame::Welcome {
        user: identity.username.clone(),
        connection: format!("{}-{id}", relay.relay_id),
    };
    outbox.push(socket::text(&welcome.to_json()));
    relay.hub.register(
        id,
        ConnHandle {
            outbox: outbox.clone(),
            identity: identity.clone(),
        },
    );
    if relay.auth.is_revoked(&identity.session_id) {
        // Revoked while its validation was in flight: revocation wins.
        outbox.close(close::INVALID_SESSION);
    } else if relay.is_stopping() {
        outbox.close(close::GOING_AWAY);
    }
    let config = &relay.config;
    let sends = Bucket::new(config.send_burst, config.send_rate);
    let churn = Bucket::new(config.join_burst, config.join_rate);
    let conn = Conn {
        relay,
        id,
        identity,
        outbox,
        sends,
        churn,
        in_flight: FuturesOrdered::new(),
        _slot: slot,
    };
    actix_web::rt::spawn(conn.read(incoming, room));
}

#[derive(Clone, Copy)]
enum Limit {
    Sends,
    Churn,
}

/// The reader's state.
struct Conn {
    relay: Arc<Relay>,
    id: ConnId,
    identity: Arc<Identity>,
    outbox: Arc<Outbox>,
    /// `POTION_SEND_BURST` / `POTION_SEND_RATE`.
    sends: Bucket,
    /// Joins and leaves (`POTION_JOIN_BURST` / `POTION_JOIN_RATE`): each one makes presence
    /// traffic for every member of the room, so churn is limited like sends.
    churn: Bucket,
    /// Sends waiting for the bus, oldest first: a sender does not wait for one message to be
    /// stored before the next is read, and they reach the bus in order.
    in_flight: FuturesOrdered<InFlight>,
    /// Its place under the connection caps, given back when the reader ends.
    _slot: Slot,
}

type InFlight = Pin<Box<dyn Future<Output = (Option<String>, Result<(), Refused>)>>>;

/// Sends of one connection waiting for the bus at once.
const MAX_IN_FLIGHT: usize = 32;

impl Conn {
    async fn read(mut self, mut incoming: Incoming, room: Option<String>) {
        // Its own handle, so waiting for a close code does not borrow `self`.
        let outbox = self.outbox.clone();
        if let Some(room) = room {
            self.join(room, Ask::default()).await;
        }
        let config = &self.relay.config;
        let (idle, mut ping) = (
            config.idle_timeout(),
            tokio::time::interval(config.ping_interval()),
        );
        ping.tick().await;
        let expiry = tokio::time::sleep(until_unix(self.identity.expires_at));
        tokio::pin!(expiry);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                message = incoming.next() => {
                    last_heard = Instant::now();
                    match message {
                        Some(Ok(Received::Text(text))) => self.on_text(&text).await,
                        Some(Ok(Received::Binary)) => {
                            self.reply(ServerFrame::error("bad_frame", "frames must be JSON text", None));
                        }
                        Some(Ok(Received::Ping(bytes))) => self.queue(socket::pong(&bytes)),
                        Some(Ok(Received::Pong)) => {}
                        Some(Ok(Received::Close)) | None => self.close(1000),
                        Some(Err(e)) => self.close(e.close_code()),
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() >= idle {
                        self.close(close::IDLE);
                    } else {
                        self.queue(socket::ping());
                    }
                }
                () = &mut expiry => self.close(close::INVALID_SESSION),
                Some((reference, result)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.published(reference, result);
                }
                _ = outbox.closed() => {}
            }
            if outbox.close_code().is_some() {
                break;
            }
        }
        let code = outbox.close_code().unwrap_or(1000);
        tracing::info!(connection = self.id, user = %self.identity.username, code, "connection closed");
        self.relay.rooms.disconnect(self.id, &self.identity).await;
    }

    async fn on_text(&mut self, text: &str) {
        match serde_json::from_str::<ClientFrame>(text) {
            Ok(ClientFrame::Join {
                room,
                since,
                history,
            }) if self.allowed(Limit::Churn, &None) => {
                self.join(room, Ask { since, history }).await;
            }
            Ok(ClientFrame::Leave { room }) if self.allowed(Limit::Churn, &None) => {
                self.leave(room).await;
            }
            Ok(ClientFrame::Join { .. } | ClientFrame::Leave { .. }) => {}
            Ok(ClientFrame::Send {
                room,
                body,
                reference,
            }) => self.send(room, body, reference).await,
            Ok(ClientFrame::Ping) => self.reply(ServerFrame::Pong),
            Err(e) => {
                // Only on the error path: find the ref the client attached, if any.
                let reference = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v.get("ref")?.as_str().map(str::to_owned));
                let detail = if e.is_syntax() || e.is_eof() {
                    "the frame is not JSON".to_owned()
                } else {
                    format!("the frame is not a valid potion.v1 frame: {e}")
                };
                self.reply(ServerFrame::error("bad_frame", detail, reference));
            }
        }
    }

    async fn join(&mut self, room: String, ask: Ask) {
        if !is_valid_room(&room) {
            return self.reply(ServerFrame::error(
                "bad_room",
                ilo_protocol::ROOM_RULE,
                None,
            ));
        }
        let rooms = &self.relay.rooms;
        let mut entry = match rooms.join(self.id, &self.identity, &room, ask).await {
            Ok(entry) => entry,
            Err(refused) => return self.refused(refused, None),
        };
        let joined = ServerFrame::Joined {
            room: room.clone(),
            members: std::mem::take(&mut entry.members),
            epoch: entry.at.as_ref().map(|at| at.epoch.to_string()),
            offset: entry.at.as_ref().map(|at| at.offset),
            missed: entry.missed(),
            recovered: entry.recovered.map(|r| r.is_ok()),
            reason: entry.recovered.and_then(Result::err),
        };
        rooms.admit(self.id, &room, entry, socket::text(&joined.to_json()));
    }

    async fn leave(&mut self, room: String) {
        match self.relay.rooms.leave(self.id, &self.identity, &room).await {
            Ok(()) => self.reply(ServerFrame::Left { room }),
            Err(refused) => self.refused(refused, None),
        }
    }

    async fn send(&mut self, room: String, body: String, reference: Option<String>) {
        if reference
            .as_ref()
            .is_some_and(|r| r.chars().count() > MAX_REF_CHARS)
        {
            let detail = format!("ref is at most {MAX_REF_CHARS} characters");
            return self.reply(ServerFrame::error("bad_frame", detail, None));
        }
        if !self.allowed(Limit::Sends, &reference) {
            return;
        }
        let max_body = self.relay.config.max_body;
        if body.len() > max_body {
            let detail = format!("body is at most {max_body} bytes");
            return self.reply(ServerFrame::error("body_too_large", detail, reference));
        }
        let message = Outgoing {
            room,
            body,
            reference: reference.clone(),
            id: self.relay.next_message_id(),
        };
        match self.relay.rooms.send(self.id, &self.identity, message) {
            Ok(publishing) => {
                self.in_flight
                    .push_back(Box::pin(async move { (reference, publishing.await) }));
                // Bounded: past it, the reader waits for the oldest before reading on.
                if self.in_flight.len() >= MAX_IN_FLIGHT
                    && let Some((reference, result)) = self.in_flight.next().await
                {
                    self.published(reference, result);
                }
            }
            Err(refused) => self.refused(refused, reference),
        }
    }

    /// A send the bus answered: nothing to say when it was accepted (the message itself comes
    /// back), an error with the client's `ref` when it was not.
    fn published(&self, reference: Option<String>, result: Result<(), Refused>) {
        if let Err(refused) = result {
            self.refused(refused, reference);
        }
    }

    /// The error frame for what the room refused.
    fn refused(&self, refused: Refused, reference: Option<String>) {
        let frame = match refused {
            Refused::TooManyRooms(max) => ServerFrame::error(
                "too_many_rooms",
                format!("a connection may be in at most {max} rooms"),
                reference,
            ),
            Refused::NotInRoom => ServerFrame::error(
                "not_in_room",
                "join the room first: this connection is not in it",
                reference,
            ),
            Refused::BusDown => ServerFrame::error(
                "bus_unavailable",
                "messages cannot be relayed right now; retry shortly",
                reference,
            ),
        };
        self.reply(frame);
    }

    /// Takes a token from one of the connection's limits. Refusals answer `rate_limited`; a
    /// client that keeps pushing is closed with 4008.
    fn allowed(&mut self, limit: Limit, reference: &Option<String>) -> bool {
        let (bucket, what) = match limit {
            Limit::Sends => (&mut self.sends, "messages"),
            Limit::Churn => (&mut self.churn, "joins and leaves"),
        };
        let verdict = bucket.take(Instant::now());
        let detail = format!("at most {} {what} per second", bucket.rate());
        match verdict {
            Verdict::Allowed => return true,
            Verdict::Refused => {
                self.reply(ServerFrame::error(
                    "rate_limited",
                    detail,
                    reference.clone(),
                ));
            }
            Verdict::Exceeded => self.close(close::RATE_LIMITED),
        }
        self.relay.metrics.rate_limited.inc();
        false
    }

    fn reply(&self, frame: ServerFrame) {
        self.queue(socket::text(&frame.to_json()));
    }

    fn queue(&self, frame: Bytes) {
        self.outbox.push(frame);
    }

    fn close(&self, code: u16) {
        self.outbox.close(code);
    }
}

fn until_unix(expires_at: i64) -> Duration {
    let now = crate::auth::unix_now();
    Duration::from_secs(expires_at.saturating_sub(now).max(0) as u64)
}
