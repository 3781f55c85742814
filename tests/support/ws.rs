//! Test helpers over `ilo-client`'s WebSocket connection: they wait a bounded time and panic
//! with a clear message, so tests read as the protocol's steps.

use std::time::Duration;

use ilo_client::ws::{self, Connection, Incoming, Options, WsError};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

pub use ilo_client::ws::Presented;

/// How long a test waits for a frame it expects.
pub const PATIENCE: Duration = Duration::from_secs(5);

pub struct Ws {
    connection: Connection,
    /// The subprotocol the relay selected, if any.
    pub protocol: Option<String>,
}

/// Why an upgrade was refused: the HTTP status and body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
}

pub async fn connect(url: &str, token: &str, how: Presented) -> Result<Ws, Refused> {
    connect_with(url, token, how, None).await
}

pub async fn connect_with(
    url: &str,
    token: &str,
    how: Presented,
    origin: Option<&str>,
) -> Result<Ws, Refused> {
    match ws::connect(url, token, how, Options { origin }).await {
        Ok(connection) => Ok(Ws {
            protocol: connection.protocol.clone(),
            connection,
        }),
        Err(WsError::Refused { status, body }) => Err(Refused { status, body }),
        Err(e) => panic!("connect failed: {e}"),
    }
}

impl Ws {
    pub async fn send(&mut self, frame: Value) {
        self.send_raw(Message::text(frame.to_string())).await;
    }

    /// Sends unless the connection is gone; whether it was sent (for floods the relay may end).
    pub async fn try_send(&mut self, frame: Value) -> bool {
        self.connection
            .send_raw(Message::text(frame.to_string()))
            .await
            .is_ok()
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.connection.send_raw(message).await.unwrap();
    }

    async fn incoming(&mut self) -> Incoming {
        self.incoming_within(PATIENCE).await
    }

    async fn incoming_within(&mut self, patience: Duration) -> Incoming {
        tokio::time::timeout(patience, self.connection.recv())
            .await
            .expect("a frame in time")
            .expect("the connection is open")
    }

    /// The next text frame as raw text; panics on close or timeout.
    pub async fn next_text(&mut self) -> String {
        match self.incoming().await {
            Incoming::Text(text) => text,
            Incoming::Closed(code) => panic!("closed with {code} while a frame was expected"),
        }
    }

    pub async fn next(&mut self) -> Value {
        serde_json::from_str(&self.next_text().await).unwrap()
    }

    /// The next frame whose type is `kind`, skipping others (presence, for instance).
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Like [`Ws::next_of`], waiting up to `patience` for each frame (after a fault).
    pub async fn next_of_within(&mut self, kind: &str, patience: Duration) -> Value {
        loop {
            let Incoming::Text(text) = self.incoming_within(patience).await else {
                panic!("closed while a {kind} was expected");
            };
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Reads until the relay closes; the close code. Frames before it are skipped.
    pub async fn closed_with(&mut self) -> u16 {
        loop {
            match tokio::time::timeout(PATIENCE, self.connection.recv())
                .await
                .expect("closed in time")
            {
                Ok(Incoming::Closed(code)) => return code,
                Ok(Incoming::Text(_)) => {}
                Err(e) => panic!("the connection failed instead of closing: {e}"),
            }
        }
    }

    /// Joins `room` and returns the `joined` frame.
    pub async fn join(&mut self, room: &str) -> Value {
        self.send(serde_json::json!({"type": "join", "room": room}))
            .await;
        self.next_of("joined").await
    }

    /// Sends a `join` frame with more fields (`since`, `history`) and returns the `joined` frame.
    pub async fn join_with(&mut self, room: &str, mut frame: Value) -> Value {
        frame["type"] = "join".into();
        frame["room"] = room.into();
        self.send(frame).await;
        self.next_of("joined").await
    }

    /// The next `n` message frames, skipping presence; panics on anything else (a `gap` too).
    pub async fn messages(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let frame = self.next().await;
            match frame["type"].as_str() {
                Some("message") => out.push(frame),
                Some("presence") => {}
                _ => panic!("expected a message, got {frame}"),
            }
        }
        out
    }

    /// Reads the welcome frame.
    pub async fn welcome(&mut self) -> Value {
        let frame = self.next().await;
        assert_eq!(frame["type"], "welcome", "{frame}");
        frame
    }
}
