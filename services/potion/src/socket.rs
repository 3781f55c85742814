//! The relay's WebSocket framing, on actix-http's own `ws` codec (the one actix-ws wraps): the
//! handshake, the response body that drains a connection's [`Outbox`], and the stream of the
//! client's messages.
//!
//! Owning this (rather than actix-ws's `Session`, which puts a 32-frame channel and a second
//! task between a queue and the socket) lets a broadcast frame be encoded once, header
//! included, and the same bytes be copied into every recipient's write buffer by the
//! connection's own HTTP task: one push and one wake per delivery, and every frame queued since
//! the last wake goes out in one write.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, HandshakeError, Item, OpCode, Parser, ProtocolError};
use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;
use ilo_protocol::close;
use tokio::time::{Instant, Sleep};

use crate::outbox::{Next, Outbox};

/// Largest control-frame payload (RFC 6455 §5.5).
const MAX_CONTROL: usize = 125;

/// Completes the handshake: the 101 response, whose body is the connection's outbox (written
/// as [`Pace`] decides with `coalesce` as its longest wait), and the client's messages, each at
/// most `max_message` bytes once fragments are put together.
pub(crate) fn accept(
    req: &HttpRequest,
    payload: web::Payload,
    protocol: Option<&'static str>,
    outbox: Arc<Outbox>,
    max_message: usize,
    coalesce: Duration,
) -> Result<(HttpResponse, Incoming), HandshakeError> {
    let mut response = actix_http::ws::handshake(req.head())?;
    if let Some(protocol) = protocol {
        response.insert_header((header::SEC_WEBSOCKET_PROTOCOL, protocol));
    }
    let response = response
        .body(Body {
            outbox,
            batch: VecDeque::new(),
            done: false,
            pace: Pace::new(coalesce),
        })
        .map_into_boxed_body();
    Ok((response.into(), Incoming::new(payload, max_message)))
}

/// A text frame, ready for the wire.
pub(crate) fn text(json: &str) -> Bytes {
    encode(json.as_bytes(), OpCode::Text)
}

pub(crate) fn ping() -> Bytes {
    encode(b"", OpCode::Ping)
}

pub(crate) fn pong(payload: &[u8]) -> Bytes {
    encode(&payload[..payload.len().min(MAX_CONTROL)], OpCode::Pong)
}

fn close_frame(code: u16) -> Bytes {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(describe(code).as_bytes());
    encode(&payload, OpCode::Close)
}

fn encode(payload: &[u8], op: OpCode) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 10);
    Parser::write_message(&mut frame, payload, op, true, false);
    frame.freeze()
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

/// Frames per linger, on average, from which a connection's writes are held and batched.
const BUSY_FRAMES: u64 = 4;

/// The 101 response's body: the outbox's frames as they come, then the close frame.
struct Body {
    outbox: Arc<Outbox>,
    /// Frames taken from the outbox and not yet handed to actix-http.
    batch: VecDeque<Bytes>,
    done: bool,
    pace: Pace,
}

/// Write coalescing for busy connections. A write (and the wake-up before it) costs far more
/// than the frames in it, so a connection that gets at least [`BUSY_FRAMES`] frames per `linger`
/// on average writes at most once per `linger`, carrying everything queued meanwhile. Any other
/// connection is written at once: at chat pace, and up to hundreds of frames a second, holding
/// frames would only add latency (a hold pays off once a write carries many frames).
/// A close frame waits out a hold too: at most `linger` later.
struct Pace {
    linger: Duration,
    last_take: Option<Instant>,
    /// Moving average of the time between frames, in microseconds.
    frame_interval_us: u64,
    /// Allocated once the connection is first busy, then reset for each hold.
    hold: Option<Pin<Box<Sleep>>>,
    holding: bool,
}

impl Pace {
    fn new(linger: Duration) -> Self {
        Self {
            linger,
            last_take: None,
            // One second: a new connection starts out quiet.
            frame_interval_us: 1_000_000,
            hold: None,
            holding: false,
        }
    }

    /// Whether the connection must still wait before its next write.
    fn poll_hold(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.holding {
            return false;
        }
        let waiting = self
            .hold
            .as_mut()
            .is_some_and(|hold| hold.as_mut().poll(cx).is_pending());
        self.holding = waiting;
        waiting
    }

    /// Counts a take of `frames` frames; holds the next write back if the connection is busy.
    fn took(&mut self, frames: usize) {
        if self.linger.is_zero() {
            return;
        }
        let now = Instant::now();
        if let Some(last) = self.last_take.replace(now) {
            let per_frame = (now - last).as_micros() as u64 / frames.max(1) as u64;
            self.frame_interval_us = (self.frame_interval_us * 7 + per_frame) / 8;
        }
        if self.frame_interval_us * BUSY_FRAMES < self.linger.as_micros() as u64 {
            let until = now + self.linger;
            match self.hold.as_mut() {
                Some(hold) => hold.as_mut().reset(until),
                None => self.hold = Some(Box::pin(tokio::time::sleep_until(until))),
            }
            self.holding = true;
        }
    }
}

impl MessageBody for Body {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Infallible>>> {
        let this = self.get_mut();
        // actix-http asks again while its write buffer has room, so a batch leaves in one write.
        if let Some(frame) = this.batch.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        if this.pace.poll_hold(cx) {
            return Poll::Pending;
        }
        match ready!(this.outbox.poll_next(cx, &mut this.batch)) {
            Next::Frames => {
                this.pace.took(this.batch.len());
                Poll::Ready(this.batch.pop_front().map(Ok))
            }
            Next::Close(code) => {
                this.done = true;
                Poll::Ready(Some(Ok(close_frame(code))))
            }
        }
    }
}

impl Drop for Body {
    /// actix-http drops the body when the response ends or the client goes away; either way
    /// the reader must stop, and its payload stream would not always tell it.
    fn drop(&mut self) {
        self.outbox.close(crate::outbox::ABNORMAL);
    }
}

/// A message from the client, continuations put together.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    Text(ByteString),
    Binary,
    Ping(Bytes),
    Pong,
    Close,
}

/// Why the client's stream ended in error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// A frame, or a message's fragments together, over the limit.
    TooBig,
    InvalidUtf8,
    /// Anything else RFC 6455 forbids (unmasked frames, bad opcodes, stray continuations).
    Protocol,
}

impl ReadError {
    /// The close code this error ends the connection with.
    pub(crate) fn close_code(&self) -> u16 {
        match self {
            Self::TooBig => close::TOO_BIG,
            Self::InvalidUtf8 => 1007,
            Self::Protocol => 1002,
        }
    }
}

/// The client's messages, decoded from the request payload.
pub(crate) struct Incoming {
    payload: web::Payload,
    buf: BytesMut,
    codec: Codec,
    /// A fragmented message being put together: whether it is text, and its bytes so far.
    partial: Option<(bool, BytesMut)>,
    max_message: usize,
    ended: bool,
}

impl Incoming {
    fn new(payload: web::Payload, max_message: usize) -> Self {
        Self {
            payload,
            buf: BytesMut::new(),
            codec: Codec::new().max_size(max_message),
            partial: None,
            max_message,
            ended: false,
        }
    }

    /// The next complete message already buffered, if any.
    fn decode(&mut self) -> Result<Option<Received>, ReadError> {
        loop {
            // Before every frame: the header may already say it is too big.
            self.refuse_oversized()?;
            let decoded = self.codec.decode(&mut self.buf).map_err(|e| match e {
                ProtocolError::Overflow => ReadError::TooBig,
                _ => ReadError::Protocol,
            })?;
            let Some(frame) = decoded else {
                return Ok(None);
            };
            let received = match frame {
                Frame::Text(bytes) => Some(text_of(bytes)?),
                Frame::Binary(_) => Some(Received::Binary),
                Frame::Ping(bytes) => Some(Received::Ping(bytes)),
                Frame::Pong(_) => Some(Received::Pong),
                Frame::Close(_) => Some(Received::Close),
                Frame::Continuation(item) => self.assemble(item)?,
            };
            if received.is_some() {
                return Ok(received);
            }
        }
    }

    /// Refuses a frame as soon as its header says that it, or the fragmented message it
    /// continues, would pass the limit: actix-http's codec checks only once the whole frame is
    /// buffered, so a header claiming 2^40 bytes would otherwise be followed into memory.
    fn refuse_oversized(&self) -> Result<(), ReadError> {
        let Some(declared) = declared_len(&self.buf) else {
            return Ok(());
        };
        // A control frame (opcode 8 and up) may come between fragments; it is not part of them.
        let control = self.buf.first().is_some_and(|b| b & 0x08 != 0);
        let so_far = match &self.partial {
            Some((_, bytes)) if !control => bytes.len() as u64,
            _ => 0,
        };
        if declared.saturating_add(so_far) > self.max_message as u64 {
            return Err(ReadError::TooBig);
        }
        Ok(())
    }

    fn assemble(&mut self, item: Item) -> Result<Option<Received>, ReadError> {
        let (is_text, bytes, last) = match item {
            Item::FirstText(bytes) => (Some(true), bytes, false),
            Item::FirstBinary(bytes) => (Some(false), bytes, false),
            Item::Continue(bytes) => (None, bytes, false),
            Item::Last(bytes) => (None, bytes, true),
        };
        let (text, so_far) = match (is_text, self.partial.as_mut()) {
            (Some(text), None) => self.partial.insert((text, BytesMut::new())),
            (None, Some(partial)) => partial,
            _ => return Err(ReadError::Protocol),
        };
        if so_far.len() + bytes.len() > self.max_message {
            return Err(ReadError::TooBig);
        }
        so_far.extend_from_slice(&bytes);
        let text = *text;
        if !last {
            return Ok(None);
        }
        let (_, whole) = self.partial.take().unwrap_or_default();
        if text {
            text_of(whole.freeze()).map(Some)
        } else {
            Ok(Some(Received::Binary))
        }
    }
}

/// The payload length the next frame's header declares (RFC 6455 §5.2), once enough of the
/// header has arrived to say.
fn declared_len(buf: &[u8]) -> Option<u64> {
    let short = u64::from(*buf.get(1)? & 0x7f);
    let extended = |n: usize| -> Option<u64> {
        let bytes = buf.get(2..2 + n)?;
        Some(bytes.iter().fold(0u64, |len, b| len << 8 | u64::from(*b)))
    };
    match short {
        126 => extended(2),
        127 => extended(8),
        len => Some(len),
    }
}

fn text_of(bytes: Bytes) -> Result<Received, ReadError> {
    ByteString::try_from(bytes)
        .map(Received::Text)
        .map_err(|_| ReadError::InvalidUtf8)
}

impl Stream for Incoming {
    type Item = Result<Received, ReadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.decode() {
                Ok(Some(received)) => return Poll::Ready(Some(Ok(received))),
                Ok(None) => {}
                Err(e) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match ready!(Pin::new(&mut this.payload).poll_next(cx)) {
                Some(Ok(bytes)) if this.buf.is_empty() => this.buf = BytesMut::from(bytes),
                Some(Ok(bytes)) => this.buf.extend_from_slice(&bytes),
                // The connection broke, or the client closed it without a close frame.
                Some(Err(_)) | None => this.ended = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frames_declared_length_is_read_from_its_header() {
        assert_eq!(declared_len(b""), None);
        assert_eq!(declared_len(b"\x81"), None);
        assert_eq!(declared_len(b"\x81\x85"), Some(5));
        assert_eq!(declared_len(b"\x81\xfe\x01"), None);
        assert_eq!(declared_len(b"\x81\xfe\x01\x00"), Some(256));
        assert_eq!(
            declared_len(b"\x81\xff\x00\x00\x01\x00\x00\x00\x00\x00"),
            Some(1 << 40)
        );
    }

    #[test]
    fn frames_are_unmasked_and_final() {
        assert_eq!(&text("hi")[..], b"\x81\x02hi");
        assert_eq!(&ping()[..], b"\x89\x00");
        let close = close_frame(4009);
        assert_eq!(&close[..4], b"\x88\x0f\x0f\xa9");
        assert_eq!(&close[4..], b"slow consumer");
        assert_eq!(pong(&[0; 200]).len(), 2 + MAX_CONTROL);
    }

    /// One frame arrives every `every`; how many writes carry them.
    async fn writes(pace: &mut Pace, every: Duration, frames: usize) -> usize {
        let (mut writes, mut queued) = (0, 0);
        for _ in 0..frames {
            tokio::time::advance(every).await;
            queued += 1;
            let mut cx = Context::from_waker(std::task::Waker::noop());
            if !pace.poll_hold(&mut cx) {
                pace.took(queued);
                (writes, queued) = (writes + 1, 0);
            }
        }
        writes
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_and_lively_connections_are_written_at_once() {
        let mut pace = Pace::new(Duration::from_millis(16));
        // Chat pace (a frame every 25 ms), then 160 frames a second for a long while (two
        // senders at 80 messages a second), then 200 a second.
        assert_eq!(writes(&mut pace, Duration::from_millis(25), 20).await, 20);
        assert_eq!(
            writes(&mut pace, Duration::from_micros(6_250), 400).await,
            400
        );
        assert_eq!(writes(&mut pace, Duration::from_millis(5), 400).await, 400);
    }

    #[tokio::test(start_paused = true)]
    async fn busy_connections_write_at_most_once_per_linger() {
        let mut pace = Pace::new(Duration::from_millis(16));
        // 400 frames a second: once the average has settled, one write per 16 ms (6 or 7 frames).
        writes(&mut pace, Duration::from_micros(2_500), 200).await;
        let written = writes(&mut pace, Duration::from_micros(2_500), 800).await;
        assert!((100..=125).contains(&written), "{written} writes for 2 s");
        let mut off = Pace::new(Duration::ZERO);
        assert_eq!(writes(&mut off, Duration::from_millis(1), 100).await, 100);
    }
}
