//! A connection's bounded outbound queue: many producers (the hub's deliveries, the reader's
//! replies) that never wait, one consumer (the writer task). A `VecDeque` behind a std `Mutex`
//! (nothing awaits while holding it) plus a `Notify`: an idle connection's queue holds no
//! allocation, where a tokio channel keeps a 32-slot block per connection from the start.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use bytestring::ByteString;
use tokio::sync::Notify;

/// What a connection's writer sends next.
#[derive(Debug, Clone)]
pub enum Outbound {
    Text(ByteString),
    Ping,
    Pong(Bytes),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds its bound: the reader is too slow (4009).
    Full,
    /// The writer has finished.
    Closed,
}

pub struct Outbox {
    queue: Mutex<Queue>,
    ready: Notify,
    bound: usize,
}

struct Queue {
    items: VecDeque<Outbound>,
    closed: bool,
}

impl Outbox {
    pub fn new(bound: usize) -> Self {
        Self {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                closed: false,
            }),
            ready: Notify::new(),
            bound: bound.max(1),
        }
    }

    /// Queues `item` without waiting.
    pub fn try_send(&self, item: Outbound) -> Result<(), Refused> {
        let mut queue = self.lock();
        if queue.closed {
            return Err(Refused::Closed);
        }
        if queue.items.len() >= self.bound {
            return Err(Refused::Full);
        }
        queue.items.push_back(item);
        drop(queue);
        // With one consumer a stored permit cannot be lost: it wakes the next wait at once.
        self.ready.notify_one();
        Ok(())
    }

    /// Waits until something is queued, then moves everything queued into `batch` (which
    /// keeps its capacity from one batch to the next). For the one consumer only.
    pub async fn recv_all(&self, batch: &mut VecDeque<Outbound>) {
        loop {
            {
                let mut queue = self.lock();
                if !queue.items.is_empty() {
                    std::mem::swap(&mut queue.items, batch);
                    return;
                }
            }
            self.ready.notified().await;
        }
    }

    /// The writer is gone: later sends are refused as `Closed`, and queued frames dropped.
    pub fn close(&self) {
        let mut queue = self.lock();
        queue.closed = true;
        queue.items = VecDeque::new();
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves a valid queue: keep going.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &'static str) -> Outbound {
        Outbound::Text(ByteString::from_static(s))
    }

    #[tokio::test]
    async fn frames_come_out_in_order_and_the_bound_holds() {
        let outbox = Outbox::new(2);
        assert_eq!(outbox.try_send(text("a")), Ok(()));
        assert_eq!(outbox.try_send(text("b")), Ok(()));
        assert_eq!(outbox.try_send(text("c")), Err(Refused::Full));
        let mut batch = VecDeque::new();
        outbox.recv_all(&mut batch).await;
        let texts: Vec<String> = batch
            .drain(..)
            .map(|o| match o {
                Outbound::Text(t) => t.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(texts, ["a", "b"]);
        assert_eq!(outbox.try_send(text("d")), Ok(()));
        outbox.close();
        assert_eq!(outbox.try_send(text("e")), Err(Refused::Closed));
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_when_a_frame_arrives() {
        let outbox = std::sync::Arc::new(Outbox::new(8));
        let writer = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut batch = VecDeque::new();
                outbox.recv_all(&mut batch).await;
                batch.len()
            })
        };
        tokio::task::yield_now().await;
        outbox.try_send(Outbound::Ping).ok();
        let woke = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
        assert_eq!(woke.ok().and_then(Result::ok), Some(1));
    }
}
