//! One WebSocket connection: a reader task that handles the client's frames in order, and a
//! writer task that drains the connection's bounded outbox into the socket. Either side, the
//! hub or the relay ends the connection by setting its close code on a watch channel.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_ws::{AggregatedMessage, CloseCode, CloseReason, MessageStream, ProtocolError, Session};
use futures_util::StreamExt;
use ilo_protocol::{ClientFrame, MAX_REF_CHARS, PresenceEvent, ServerFrame, close, is_valid_room};
use tokio::sync::watch;

use crate::bus::envelope;
use crate::hub::{ConnHandle, ConnId, Identity, JoinError, Left, request_close};
use crate::outbox::{Outbound, Outbox, Refused};
use crate::relay::Relay;

/// Largest WebSocket message accepted; larger closes the connection with 1009.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// How long the writer keeps trying to deliver the close frame to a reader that does not read.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Starts the connection's tasks; the welcome frame is the first thing it sends.
pub fn start(
    relay: Arc<Relay>,
    identity: Arc<Identity>,
    session: Session,
    stream: MessageStream,
    room: Option<String>,
) {
    let id = relay.next_conn_id();
    let outbox = Arc::new(Outbox::new(relay.config.queue));
    let (closer, closed) = watch::channel(None);
    let welcome = ServerFrame::Welcome {
        user: identity.username.clone(),
        connection: format!("{}-{id}", relay.relay_id),
    };
    let _ = outbox.try_send(Outbound::Text(welcome.to_json().into()));
    relay.hub.register(
        id,
        ConnHandle {
            outbox: outbox.clone(),
            closer: closer.clone(),
            identity: identity.clone(),
        },
    );
    if relay.is_stopping() {
        request_close(&closer, close::GOING_AWAY);
    }
    actix_web::rt::spawn(write(session, outbox.clone(), closed.clone()));
    let conn = Conn {
        relay,
        id,
        identity,
        outbox,
        closer,
        bucket: None,
        strikes: 0,
    };
    actix_web::rt::spawn(conn.read(stream, closed, room));
}

/// The reader's state.
struct Conn {
    relay: Arc<Relay>,
    id: ConnId,
    identity: Arc<Identity>,
    outbox: Arc<Outbox>,
    closer: watch::Sender<Option<u16>>,
    /// Send tokens left and when they were counted; `None` until the first send.
    bucket: Option<(f64, Instant)>,
    /// Sends refused in a row; past the burst the connection is closed with 4008.
    strikes: u32,
}

impl Conn {
    async fn read(
        mut self,
        stream: MessageStream,
        mut closed: watch::Receiver<Option<u16>>,
        room: Option<String>,
    ) {
        let mut stream = stream
            .max_frame_size(MAX_MESSAGE)
            .aggregate_continuations()
            .max_continuation_size(MAX_MESSAGE);
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
                message = stream.next() => {
                    last_heard = Instant::now();
                    match message {
                        Some(Ok(AggregatedMessage::Text(text))) => self.on_text(&text).await,
                        Some(Ok(AggregatedMessage::Binary(_))) => {
                            self.reply(ServerFrame::error("bad_frame", "frames must be JSON text", None));
                        }
                        Some(Ok(AggregatedMessage::Ping(bytes))) => self.queue(Outbound::Pong(bytes)),
                        Some(Ok(AggregatedMessage::Pong(_))) => {}
                        Some(Ok(AggregatedMessage::Close(_))) | None => self.close(1000),
                        Some(Err(ProtocolError::Overflow)) => self.close(close::TOO_BIG),
                        // actix-ws reports fragments adding up past the limit as an `Other` I/O
                        // error; a dead socket gets it too, but then no close code arrives anyway.
                        Some(Err(ProtocolError::Io(e))) if e.kind() == std::io::ErrorKind::Other => {
                            self.close(close::TOO_BIG);
                        }
                        Some(Err(_)) => self.close(1002),
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() >= idle {
                        self.close(close::IDLE);
                    } else {
                        self.queue(Outbound::Ping);
                    }
                }
                () = &mut expiry => self.close(close::INVALID_SESSION),
                _ = closed.changed() => {}
            }
            if closed.borrow().is_some() {
                break;
            }
        }
        let code = closed.borrow().unwrap_or(1000);
        tracing::info!(connection = self.id, user = %self.identity.username, code, "connection closed");
        for left in self.relay.hub.unregister(self.id) {
            self.after_leave(left).await;
        }
    }

    async fn on_text(&mut self, text: &str) {
        match serde_json::from_str::<ClientFrame>(text) {
            Ok(ClientFrame::Join { room }) => self.join(room, None).await,
            Ok(ClientFrame::Leave { room }) => self.leave(room).await,
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
        if !self.take_send_token(&reference) {
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

    /// The per-connection send limit: a token bucket of `POTION_SEND_BURST` refilled at
    /// `POTION_SEND_RATE` per second. Refusals answer `rate_limited`; a flood closes with 4008.
    fn take_send_token(&mut self, reference: &Option<String>) -> bool {
        let config = &self.relay.config;
        if config.send_rate == 0 {
            return true;
        }
        let (burst, rate) = (
            f64::from(config.send_burst.max(1)),
            f64::from(config.send_rate),
        );
        let now = Instant::now();
        let (tokens, at) = self.bucket.unwrap_or((burst, now));
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * rate).min(burst);
        if tokens >= 1.0 {
            self.bucket = Some((tokens - 1.0, now));
            self.strikes = 0;
            return true;
        }
        self.bucket = Some((tokens, now));
        self.strikes += 1;
        self.relay.metrics.rate_limited.inc();
        if self.strikes > config.send_burst {
            self.close(close::RATE_LIMITED);
        } else {
            let detail = format!("at most {} messages per second", config.send_rate);
            self.reply(ServerFrame::error(
                "rate_limited",
                detail,
                reference.clone(),
            ));
        }
        false
    }

    fn reply(&self, frame: ServerFrame) {
        self.queue(Outbound::Text(frame.to_json().into()));
    }

    /// Queues without waiting; a connection whose queue is full is a slow consumer.
    fn queue(&self, item: Outbound) {
        if let Err(Refused::Full) = self.outbox.try_send(item)
            && self
                .closer
                .send_replace(Some(close::SLOW_CONSUMER))
                .is_none()
        {
            self.relay.metrics.slow_consumers.inc();
        }
    }

    fn close(&self, code: u16) {
        request_close(&self.closer, code);
    }
}

fn bus_down(reference: Option<String>) -> ServerFrame {
    ServerFrame::error(
        "bus_unavailable",
        "messages cannot be relayed right now; retry shortly",
        reference,
    )
}

/// Drains the outbox into the socket until the connection is closed, then sends the close frame.
async fn write(
    mut session: Session,
    outbox: Arc<Outbox>,
    mut closed: watch::Receiver<Option<u16>>,
) {
    {
        // One close watcher for the connection's life, rather than a new one per frame.
        let closing = closed.changed();
        tokio::pin!(closing);
        let mut batch = VecDeque::new();
        'frames: loop {
            tokio::select! {
                biased;
                _ = &mut closing => break,
                () = outbox.recv_all(&mut batch) => {}
            }
            // Everything queued goes out before the writer sleeps again: actix-ws encodes frames
            // that arrive together into one write.
            while let Some(item) = batch.pop_front() {
                tokio::select! {
                    biased;
                    sent = send(&mut session, item) => if sent.is_err() { break 'frames },
                    _ = &mut closing => break 'frames,
                }
            }
        }
    }
    outbox.close();
    let code = closed.borrow().unwrap_or(1000);
    let reason = CloseReason {
        code: CloseCode::from(code),
        description: Some(describe(code).to_owned()),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, session.close(Some(reason))).await;
}

async fn send(session: &mut Session, item: Outbound) -> Result<(), actix_ws::Closed> {
    match item {
        Outbound::Text(text) => session.text(text).await,
        Outbound::Ping => session.ping(b"").await,
        Outbound::Pong(bytes) => session.pong(&bytes).await,
    }
}

fn describe(code: u16) -> &'static str {
    match code {
        close::GOING_AWAY => "relay shutting down",
        close::TOO_BIG => "message too large",
        close::IDLE => "idle timeout",
        close::INVALID_SESSION => "session invalid, expired or revoked",
        close::RATE_LIMITED => "rate limit exceeded",
        close::SLOW_CONSUMER => "slow consumer",
        _ => "",
    }
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
