//! `ilo-chat`: Ilo's terminal client, built on `ilo-client` like the tests and the benchmark.
//! On a terminal it is interactive (lines are messages, `/commands` act); with stdin from a
//! pipe or file every line is one message to the first `--room`, and it exits once each has
//! come back from the relay.

mod login;
mod script;
mod terminal;

use std::io::IsTerminal;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "ilo-chat", version, about)]
pub struct Args {
    /// Ilo's address (REST); the WebSocket is `/ws` there unless --relay says otherwise.
    #[arg(long, env = "ILO_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The relay's WebSocket URL, when it is not the server's `/ws`.
    #[arg(long, env = "ILO_RELAY")]
    pub relay: Option<String>,
    /// Your username.
    #[arg(long, short, env = "ILO_USER")]
    pub user: String,
    /// Create the user before logging in.
    #[arg(long)]
    pub register: bool,
    /// The public key to register (base64); by default 32 random bytes, since ilo-chat does
    /// not encrypt messages itself.
    #[arg(long, env = "ILO_PUBLIC_KEY")]
    pub public_key: Option<String>,
    /// An API key; without one, ilo-chat obtains one from the server and says so.
    #[arg(long, env = "ILO_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Rooms to join at once (repeat the flag for several). Scripts send to the first.
    #[arg(long, short)]
    pub room: Vec<String>,
    /// Print received messages as JSON lines, exactly the relay's frames.
    #[arg(long)]
    pub json: bool,
    /// Scripts: keep printing what arrives after stdin ends (until interrupted).
    #[arg(long)]
    pub follow: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let interactive = std::io::stdin().is_terminal();
    let password = login::password(interactive)?;
    let session = login::session(&args, &password).await?;
    let relay = args.relay.clone().unwrap_or_else(|| ws_url(&args.server));
    let mut chat = ilo_client::chat::Chat::connect(&relay, &session.token).await?;
    for room in &args.room {
        chat.join(room).await?;
    }
    if interactive {
        terminal::run(chat, &args).await
    } else {
        script::run(chat, &args).await
    }
}

/// `http://host:8080/` → `ws://host:8080/ws`.
fn ws_url(server: &str) -> String {
    let base = server.trim_end_matches('/');
    match base.split_once("://") {
        Some(("https", rest)) => format!("wss://{rest}/ws"),
        Some((_, rest)) => format!("ws://{rest}/ws"),
        None => format!("ws://{base}/ws"),
    }
}

#[cfg(test)]
mod tests {
    use super::ws_url;

    #[test]
    fn the_websocket_is_under_the_servers_address() {
        assert_eq!(ws_url("http://127.0.0.1:8080/"), "ws://127.0.0.1:8080/ws");
        assert_eq!(ws_url("https://chat.example"), "wss://chat.example/ws");
    }
}
