//! potion's WebSocket protocol, version 1 (`potion-protocol.md`), over tokio-tungstenite.

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use ilo_protocol::{BEARER_PREFIX, ClientFrame, SUBPROTOCOL};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use tokio_tungstenite::tungstenite::Message as RawMessage;

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a client presents its token; the protocol accepts three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented {
    /// `Authorization: Bearer <token>` (native clients).
    Header,
    /// `Sec-WebSocket-Protocol: potion.v1, bearer.<token>` (browsers).
    Subprotocol,
    /// `?token=<token>` (simple tools).
    Query,
}

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The relay refused the upgrade: the HTTP status and its `{detail, code}` body.
    #[error("upgrade refused with {status}: {body}")]
    Refused { status: u16, body: Value },
    #[error("the connection was closed with {0}")]
    Closed(u16),
    #[error("the connection ended without a close frame")]
    Ended,
    #[error(transparent)]
    Transport(#[from] tungstenite::Error),
}

/// What the relay sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A JSON text frame, exactly as received.
    Text(String),
    /// The relay closed the connection with this code (1005 when it gave none).
    Closed(u16),
}

/// An open connection to a relay.
pub struct Connection {
    stream: Stream,
    /// The subprotocol the relay selected, if any.
    pub protocol: Option<String>,
}

/// Options of [`connect`].
#[derive(Clone, Debug, Default)]
pub struct Options<'a> {
    pub origin: Option<&'a str>,
}

/// Opens `url` (`ws://host:port/ws`, `/ws/<room>`, `/ws?room=...`) with `token`.
pub async fn connect(
    url: &str,
    token: &str,
    how: Presented,
    options: Options<'_>,
) -> Result<Connection, WsError> {
    let url = match how {
        Presented::Query if url.contains('?') => format!("{url}&token={token}"),
        Presented::Query => format!("{url}?token={token}"),
        _ => url.to_owned(),
    };
    let mut request = url.into_client_request()?;
    let headers = request.headers_mut();
    let header = |text: String| {
        HeaderValue::from_str(&text)
            .map_err(|e| WsError::Transport(tungstenite::Error::HttpFormat(e.into())))
    };
    match how {
        Presented::Header => {
            headers.insert("authorization", header(format!("Bearer {token}"))?);
        }
        Presented::Subprotocol => {
            headers.insert(
                "sec-websocket-protocol",
                header(format!("{SUBPROTOCOL}, {BEARER_PREFIX}{token}"))?,
            );
        }
        Presented::Query => {}
    }
    if let Some(origin) = options.origin {
        headers.insert("origin", header(origin.to_owned())?);
    }
    // Nagle off: chat frames are small and each should leave at once.
    match tokio_tungstenite::connect_async_with_config(request, None, true).await {
        Ok((stream, response)) => Ok(Connection {
            stream,
            protocol: response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }),
        Err(tungstenite::Error::Http(response)) => Err(WsError::Refused {
            status: response.status().as_u16(),
            body: response
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null),
        }),
        Err(e) => Err(e.into()),
    }
}

impl Connection {
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), WsError> {
        self.send_raw(text(frame)).await
    }

    pub async fn send_raw(&mut self, message: Message) -> Result<(), WsError> {
        Ok(self.stream.send(message).await?)
    }

    /// The next text frame or the close; pings are answered by the library and skipped.
    pub async fn recv(&mut self) -> Result<Incoming, WsError> {
        next_incoming(&mut self.stream).await
    }

    /// Separate halves, to send and receive from different tasks.
    pub fn split(self) -> (Sender, Receiver) {
        let (sink, stream) = self.stream.split();
        (Sender(sink), Receiver(stream))
    }
}

pub struct Sender(SplitSink<Stream, Message>);

impl Sender {
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), WsError> {
        Ok(self.0.send(text(frame)).await?)
    }

    /// Queues without flushing, so many frames can leave in one write; see [`Sender::flush`].
    pub async fn feed(&mut self, frame: &ClientFrame) -> Result<(), WsError> {
        Ok(self.0.feed(text(frame)).await?)
    }

    pub async fn flush(&mut self) -> Result<(), WsError> {
        Ok(self.0.flush().await?)
    }

    pub async fn close(&mut self) -> Result<(), WsError> {
        Ok(self.0.close().await?)
    }
}

pub struct Receiver(SplitStream<Stream>);

impl Receiver {
    pub async fn recv(&mut self) -> Result<Incoming, WsError> {
        next_incoming(&mut self.0).await
    }
}

fn text(frame: &ClientFrame) -> Message {
    Message::text(serde_json::to_string(frame).unwrap_or_default())
}

async fn next_incoming<S>(stream: &mut S) -> Result<Incoming, WsError>
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => return Ok(Incoming::Text(text.to_string())),
            Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => {
                return Ok(Incoming::Closed(code.into()));
            }
            Some(Ok(Message::Close(None))) => return Ok(Incoming::Closed(1005)),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err(WsError::Ended),
        }
    }
}
