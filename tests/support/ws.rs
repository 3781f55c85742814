//! A WebSocket client for tests, speaking potion.v1 over loopback with tokio-tungstenite.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame it expects.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// How a client presents its token.
#[derive(Clone, Copy, Debug)]
pub enum Presented {
    Header,
    Subprotocol,
    Query,
}

pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
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
    let url = match how {
        Presented::Query if url.contains('?') => format!("{url}&token={token}"),
        Presented::Query => format!("{url}?token={token}"),
        _ => url.to_owned(),
    };
    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    match how {
        Presented::Header => {
            headers.insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            );
        }
        Presented::Subprotocol => {
            let value = format!("potion.v1, bearer.{token}");
            headers.insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(&value).unwrap(),
            );
        }
        Presented::Query => {}
    }
    if let Some(origin) = origin {
        headers.insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((stream, response)) => Ok(Ws {
            stream,
            protocol: response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned()),
        }),
        Err(WsError::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err(Refused { status, body })
        }
        Err(e) => panic!("connect failed: {e}"),
    }
}

impl Ws {
    pub async fn send(&mut self, frame: Value) {
        self.stream
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.stream.send(message).await.unwrap();
    }

    /// The next text frame as raw text; panics on close or timeout.
    pub async fn next_text(&mut self) -> String {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.stream.next())
                .await
                .expect("a frame in time")
                .expect("the connection is open")
                .expect("a valid frame");
            match message {
                Message::Text(text) => return text.to_string(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
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

    /// Reads until the relay closes; the close code. Frames before it are skipped.
    pub async fn closed_with(&mut self) -> u16 {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.stream.next())
                .await
                .expect("closed in time");
            match message {
                Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => return code.into(),
                Some(Ok(Message::Close(None))) => return 1005,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("connection failed instead of closing: {e}"),
                None => panic!("the stream ended without a close frame"),
            }
        }
    }

    /// Joins `room` and returns the `joined` frame.
    pub async fn join(&mut self, room: &str) -> Value {
        self.send(serde_json::json!({"type": "join", "room": room}))
            .await;
        self.next_of("joined").await
    }

    /// Reads the welcome frame.
    pub async fn welcome(&mut self) -> Value {
        let frame = self.next().await;
        assert_eq!(frame["type"], "welcome", "{frame}");
        frame
    }
}
