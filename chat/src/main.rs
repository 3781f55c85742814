//! `ilo-chat`: Ilo's terminal client, built on `ilo-client` like the tests and the benchmark.
//! On a terminal it is interactive (lines are messages, `/commands` act); with stdin from a
//! pipe or file every line is one message to the first `--room`, and it exits once each has
//! come back from the relay. Messages are encrypted end to end (ilo-e2e/1) unless
//! `--plaintext` says otherwise.

mod keyfile;
mod login;
mod script;
mod show;
mod terminal;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Parser;
use ilo_client::e2e::E2e;

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
    /// Create the user before logging in, with new keys saved in the key file.
    #[arg(long)]
    pub register: bool,
    /// Where your private keys are kept (mode 0600); by default
    /// ~/.config/ilo/keys/<server>/<user>.key. Keys you know of others are kept beside it.
    #[arg(long, env = "ILO_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Give your account new keys (a new device, or the key file was lost): other members
    /// see that your key changed, and messages sent to the old key stay unreadable.
    #[arg(long, conflicts_with = "register")]
    pub new_key: bool,
    /// Send and show messages without end-to-end encryption, for bots that must talk to
    /// plaintext clients. Anyone on the server side can read them.
    #[arg(long)]
    pub plaintext: bool,
    /// An API key; without one, ilo-chat obtains one from the server and says so.
    #[arg(long, env = "ILO_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Rooms to join at once (repeat the flag for several). Scripts send to the first.
    #[arg(long, short)]
    pub room: Vec<String>,
    /// Print each received message as one JSON object:
    /// {"room", "from", "text", "id", "ts", "encrypted"}, with "text": null and "error" for
    /// one that could not be opened.
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
    let mut password = login::password(interactive)?;
    let login = login::session(&args, &mut password, interactive).await?;
    let relay = args.relay.clone().unwrap_or_else(|| ws_url(&args.server));
    let mut chat = ilo_client::chat::Chat::connect(&relay, &login.session.token).await?;
    let mut known = None;
    if let Some(keys) = login.keys {
        let keyring = keyfile::load_known(&login.key_file)?;
        chat.encrypt_with(E2e::new(keys, keyring, Some(login.api.clone())));
        known = Some(KnownKeys::new(login.key_file.clone()));
    }
    for room in &args.room {
        chat.join(room).await?;
    }
    let result = if interactive {
        terminal::run(&mut chat, &args, known.as_mut()).await
    } else {
        script::run(&mut chat, &args, known.as_mut()).await
    };
    if let (Some(known), Some(e2e)) = (known.as_mut(), chat.e2e()) {
        known.save(e2e.keyring())?;
    }
    chat.close().await;
    result
}

/// The known-keys file beside the key file, written when what is known changes.
pub struct KnownKeys {
    key_file: PathBuf,
    saved: String,
}

impl KnownKeys {
    fn new(key_file: PathBuf) -> Self {
        Self {
            key_file,
            saved: String::new(),
        }
    }

    pub fn save(&mut self, keyring: &ilo_client::keyring::Keyring) -> anyhow::Result<()> {
        let now = serde_json::to_string(keyring)?;
        if now != self.saved {
            keyfile::save_known(&self.key_file, keyring)?;
            self.saved = now;
        }
        Ok(())
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
