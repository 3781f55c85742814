//! A connection's outbound side: a bounded queue of encoded WebSocket frames, filled without
//! waiting by many producers (the hub's deliveries, the reader's replies), and the close code
//! that ends the connection. The HTTP response body ([`crate::socket::Body`]) drains it straight
//! into actix-http's write buffer, so a delivery costs one push and at most one wake.
//!
//! A `VecDeque` behind a std `Mutex` (nothing awaits while holding it): an idle connection's
//! queue holds no allocation, where a channel keeps a block of slots from the start.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;

/// Close code recorded when the HTTP side ended first (the client went away).
pub(crate) const ABNORMAL: u16 = 1006;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue holds its bound: the reader is too slow (4009).
    Full,
    /// The connection is closing.
    Closed,
}

/// What the response body gets next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// The queued frames were moved into the batch.
    Frames,
    /// Send the close frame with this code; queued frames are dropped.
    Close(u16),
}

pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Wakes the reader when a close code is set.
    closing: Notify,
    bound: usize,
    /// Counts the connections closed for being too slow.
    slow_consumers: Counter,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Bytes>,
    close: Option<u16>,
    /// The response body's task, parked until a frame or a close code arrives.
    writer: Option<Waker>,
}

impl Outbox {
    pub(crate) fn new(bound: usize, slow_consumers: Counter) -> Self {
        Self {
            state: Mutex::new(State::default()),
            closing: Notify::new(),
            bound: bound.max(1),
            slow_consumers,
        }
    }

    /// Queues an encoded frame without waiting. The slow-consumer rule: a connection whose
    /// queue is full is closed with 4009, so that it slows neither its room nor the relay.
    /// Whether the frame was queued.
    pub(crate) fn push(&self, frame: Bytes) -> bool {
        match self.try_send(frame) {
            Ok(()) => true,
            Err(Refused::Full) => {
                self.slow_consumer();
                false
            }
            Err(Refused::Closed) => false,
        }
    }

    /// Closes the connection as a slow consumer (4009).
    pub(crate) fn slow_consumer(&self) {
        if self.close(ilo_protocol::close::SLOW_CONSUMER) {
            self.slow_consumers.inc();
        }
    }

    /// How many frames it holds before the connection is a slow consumer.
    pub(crate) fn bound(&self) -> usize {
        self.bound
    }

    /// Queues an encoded frame without waiting, or says why not.
    fn try_send(&self, frame: Bytes) -> Result<(), Refused> {
        let mut state = self.lock();
        if state.close.is_some() {
            return Err(Refused::Closed);
        }
        if state.frames.len() >= self.bound {
            return Err(Refused::Full);
        }
        state.frames.push_back(frame);
        let writer = state.writer.take();
        drop(state);
        if let Some(writer) = writer {
            writer.wake();
        }
        Ok(())
    }

    /// Asks the connection to close with `code`; the first code asked for wins. Whether this
    /// call set it.
    pub(crate) fn close(&self, code: u16) -> bool {
        let mut state = self.lock();
        if state.close.is_some() {
            return false;
        }
        state.close = Some(code);
        state.frames = VecDeque::new();
        let writer = state.writer.take();
        drop(state);
        if let Some(writer) = writer {
            writer.wake();
        }
        // One reader: a permit stored while it is busy wakes its next wait at once.
        self.closing.notify_one();
        true
    }

    pub(crate) fn close_code(&self) -> Option<u16> {
        self.lock().close
    }

    /// Resolves once a close code is set: for the connection's reader.
    pub(crate) async fn closed(&self) -> u16 {
        loop {
            if let Some(code) = self.close_code() {
                return code;
            }
            self.closing.notified().await;
        }
    }

    /// For the response body: moves everything queued into `batch` (which keeps its capacity),
    /// or reports the close code, or parks the body's task until one of them arrives.
    pub(crate) fn poll_next(
        &self,
        cx: &mut Context<'_>,
        batch: &mut VecDeque<Bytes>,
    ) -> Poll<Next> {
        let mut state = self.lock();
        if let Some(code) = state.close {
            return Poll::Ready(Next::Close(code));
        }
        if !state.frames.is_empty() {
            std::mem::swap(&mut state.frames, batch);
            return Poll::Ready(Next::Frames);
        }
        if !state
            .writer
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.writer = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a valid queue: keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn poll(outbox: &Outbox, batch: &mut VecDeque<Bytes>) -> Poll<Next> {
        outbox.poll_next(&mut Context::from_waker(Waker::noop()), batch)
    }

    #[test]
    fn frames_come_out_in_order_and_the_bound_holds() {
        let outbox = Outbox::new(2, Counter::default());
        assert_eq!(outbox.try_send(Bytes::from_static(b"a")), Ok(()));
        assert_eq!(outbox.try_send(Bytes::from_static(b"b")), Ok(()));
        assert_eq!(
            outbox.try_send(Bytes::from_static(b"c")),
            Err(Refused::Full)
        );
        let mut batch = VecDeque::new();
        assert_eq!(poll(&outbox, &mut batch), Poll::Ready(Next::Frames));
        assert_eq!(batch, [&b"a"[..], &b"b"[..]]);
        assert_eq!(poll(&outbox, &mut VecDeque::new()), Poll::Pending);
    }

    #[test]
    fn a_full_queue_closes_the_connection_as_a_slow_consumer() {
        let slow = Counter::default();
        let outbox = Outbox::new(1, slow.clone());
        assert!(outbox.push(Bytes::from_static(b"a")));
        assert!(!outbox.push(Bytes::from_static(b"b")));
        assert_eq!(outbox.close_code(), Some(4009));
        assert!(!outbox.push(Bytes::from_static(b"c")));
        assert_eq!(slow.get(), 1);
    }

    #[test]
    fn the_first_close_code_wins_and_drops_what_is_queued() {
        let outbox = Outbox::new(8, Counter::default());
        outbox.try_send(Bytes::from_static(b"a")).ok();
        assert!(outbox.close(4009));
        assert!(!outbox.close(1001));
        assert_eq!(
            outbox.try_send(Bytes::from_static(b"b")),
            Err(Refused::Closed)
        );
        let mut batch = VecDeque::new();
        assert_eq!(poll(&outbox, &mut batch), Poll::Ready(Next::Close(4009)));
        assert!(batch.is_empty());
    }

    #[tokio::test]
    async fn a_parked_body_wakes_when_a_frame_arrives() {
        let outbox = Arc::new(Outbox::new(8, Counter::default()));
        let body = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut batch = VecDeque::new();
                std::future::poll_fn(|cx| outbox.poll_next(cx, &mut batch)).await;
                batch.len()
            })
        };
        tokio::task::yield_now().await;
        outbox.try_send(Bytes::from_static(b"a")).ok();
        let woke = tokio::time::timeout(Duration::from_secs(5), body).await;
        assert_eq!(woke.ok().and_then(Result::ok), Some(1));
    }

    #[tokio::test]
    async fn the_reader_hears_a_close_requested_while_it_was_busy() {
        let outbox = Outbox::new(8, Counter::default());
        outbox.close(1001);
        let code = tokio::time::timeout(Duration::from_secs(5), outbox.closed()).await;
        assert_eq!(code.ok(), Some(1001));
    }
}
