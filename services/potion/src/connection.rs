//! One WebSocket connection's reader: a task that handles the client's frames in order. What
//! the connection sends goes through its outbox, which the HTTP response body drains
//! ([`crate::socket`]); the reader, the hub or the relay ends the connection by setting the
//! outbox's close code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use ilo_protocol::{ClientFrame, MAX_REF_CHARS, PresenceEvent, ServerFrame, close, is_valid_room};

use crate::bucket::{Bucket, Verdict};
use crate::bus::envelope;
use crate::caps::Slot;
use crate::hub::{ConnHandle, ConnId, Identity, JoinError, Left};
use crate::outbox::{Outbox, Refused};
use crate::relay::Relay;
use crate::socket::{self, Incoming, Received};

/// Largest WebSocket message accepted; larger closes the connection with 1009.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Starts the connection's reader; the welcome frame is the first thing it sends.
pub fn start(
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
    let _ = outbox.try_send(socket::text(&welcome.to_json()));
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
    /// Its place under the connection caps, given back when the reader ends.
    _slot: Slot,
}

impl Conn {
    async fn read(mut self, mut incoming: Incoming, room: Option<String>) {
        // Its own handle, so waiting for a close code does not borrow `self`.
        let outbox = self.outbox.clone();
        if let Some(room) = room {
            self.join(room, None).await;
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
                _ = outbox.closed() => {}
            }
            if outbox.close_code().is_some() {
                break;
            }
        }
        let code = outbox.close_code().unwrap_or(1000);
        tracing::info!(connection = self.id, user = %self.identity.username, code, "connection closed");
        for left in self.relay.hub.unregister(self.id) {
            self.after_leave(left).await;
        }
    }

    async fn on_text(&mut self, text: &str) {
        match serde_json::from_str::<ClientFrame>(text) {
            Ok(ClientFrame::Join { room }) if self.allowed(Limit::Churn, &None) => {
                self.join(room, None).await;
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

    async fn join(&mut self, room: String, reference: Option<String>) {
        if !is_valid_room(&room) {
            return self.reply(ServerFrame::error(
                "bad_room",
                ilo_protocol::ROOM_RULE,
                reference,
            ));
        }
        let relay = self.relay.clone();
        let joined = match relay.hub.join(self.id, &room, relay.config.max_rooms) {
            Ok(joined) => joined,
            Err(JoinError::TooManyRooms) => {
                let detail = format!(
                    "a connection may be in at most {} rooms",
                    relay.config.max_rooms
                );
                return self.reply(ServerFrame::error("too_many_rooms", detail, reference));
            }
            Err(JoinError::UnknownConnection) => return,
        };
        if joined.room_was_empty && relay.bus.subscribe(&room).await.is_err() {
            return self.undo_join(&room).await;
        }
        let Ok(presence) = relay.bus.enter(&room, &self.identity).await else {
            return self.undo_join(&room).await;
        };
        if joined.user_arrived && !presence.present_elsewhere {
            self.announce(&room, PresenceEvent::Join).await;
        }
        let members = presence
            .members
            .unwrap_or_else(|| relay.hub.local_members(&room));
        self.reply(ServerFrame::Joined { room, members });
    }

    async fn undo_join(&mut self, room: &str) {
        if let Some(left) = self.relay.hub.leave(self.id, room)
            && left.room_now_empty
        {
            self.relay.bus.unsubscribe(room).await;
        }
        self.reply(bus_down(None));
    }

    async fn leave(&mut self, room: String) {
        match self.relay.hub.leave(self.id, &room) {
            Some(left) => {
                self.after_leave(left).await;
                self.reply(ServerFrame::Left { room });
            }
            None => self.reply(ServerFrame::error(
                "not_in_room",
                "this connection is not in that room",
                None,
            )),
        }
    }

    /// Presence and subscription bookkeeping once this connection is out of a room.
    async fn after_leave(&self, left: Left) {
        let bus = &self.relay.bus;
        if left.user_departed && !bus.exit(&left.room, &self.identity).await {
            self.announce(&left.room, PresenceEvent::Leave).await;
        }
        if left.room_now_empty {
            bus.unsubscribe(&left.room).await;
        }
    }

    /// Tells the room's other members that this user arrived or left.
    async fn announce(&self, room: &str, event: PresenceEvent) {
        let frame = ServerFrame::Presence {
            room: room.to_owned(),
            user: self.identity.username.clone(),
            public_key: (event == PresenceEvent::Join).then(|| self.identity.public_key.clone()),
            event,
        };
        let _ = self
            .relay
            .bus
            .publish(room, envelope(&self.identity.user_id, &frame.to_json()))
            .await;
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
        if !self.relay.hub.is_member(self.id, &room) {
            let detail = "join the room before sending to it";
            return self.reply(ServerFrame::error("not_in_room", detail, reference));
        }
        let frame = ServerFrame::Message {
            room,
            from: self.identity.username.clone(),
            body,
            id: self.relay.next_message_id(),
            ts: unix_ms(),
            reference,
        };
        // Serialized once; every recipient on every relay gets these bytes.
        let json = frame.to_json();
        let ServerFrame::Message {
            room, reference, ..
        } = frame
        else {
            return;
        };
        let started = Instant::now();
        match self.relay.bus.publish(&room, envelope("", &json)).await {
            Ok(()) => {
                self.relay.metrics.messages_in.inc();
                self.relay
                    .metrics
                    .publish_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            Err(_) => self.reply(bus_down(reference)),
        }
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

    /// Queues without waiting; a connection whose queue is full is a slow consumer.
    fn queue(&self, frame: Bytes) {
        if let Err(Refused::Full) = self.outbox.try_send(frame)
            && self.outbox.close(close::SLOW_CONSUMER)
        {
            self.relay.metrics.slow_consumers.inc();
        }
    }

    fn close(&self, code: u16) {
        self.outbox.close(code);
    }
}

fn bus_down(reference: Option<String>) -> ServerFrame {
    ServerFrame::error(
        "bus_unavailable",
        "messages cannot be relayed right now; retry shortly",
        reference,
    )
}

fn until_unix(expires_at: i64) -> Duration {
    let now = crate::auth::unix_now();
    Duration::from_secs(expires_at.saturating_sub(now).max(0) as u64)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
