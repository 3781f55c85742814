//! An encrypting member, as `ilo-client` makes one: its own keys registered as its bundle, a
//! chat session that seals what it says and opens what it hears.

use ilo_client::ServerFrame;
use ilo_client::chat::{Chat, Event, Received};
use ilo_client::e2e::{Content, E2e, KeyChange};
use ilo_client::keyring::Keyring;
use ilo_client::rest::Api;
use ilo_e2e::Keys;

use super::ws::PATIENCE;

pub const PASSWORD: &str = "Member-pass-1";

pub struct Member {
    pub name: String,
    pub chat: Chat,
}

impl Member {
    /// Registers `name` with new keys on `server` (`http://host:port`), connects to `ws_url` and
    /// joins `room`.
    pub async fn join(server: &str, ws_url: &str, name: &str, room: &str) -> Self {
        let api = Api::new(server);
        let key = api.new_api_key().await.unwrap();
        let keys = Keys::generate();
        api.register(name, PASSWORD, &keys.bundle().encode(), &key)
            .await
            .unwrap();
        let token = api.login(name, PASSWORD, &key).await.unwrap().token;
        let mut chat = Chat::connect(ws_url, &token).await.unwrap();
        chat.encrypt_with(E2e::new(keys, Keyring::default(), Some(api)));
        chat.join(room).await.unwrap();
        let mut member = Self {
            name: name.to_owned(),
            chat,
        };
        member
            .until(|e| matches!(e, Event::Frame(ServerFrame::Joined { .. })).then_some(()))
            .await;
        member
    }

    /// Says `text` in `room`, sealed for its members.
    pub async fn say(&mut self, room: &str, text: &str) {
        self.chat.say(room, text, None).await.unwrap();
    }

    /// The first event `pick` takes, within the tests' patience.
    pub async fn until<T>(&mut self, mut pick: impl FnMut(Event) -> Option<T>) -> T {
        let name = self.name.clone();
        tokio::time::timeout(PATIENCE * 2, async {
            loop {
                if let Some(found) = pick(self.chat.next().await.unwrap()) {
                    return found;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{name}: what was awaited did not arrive"))
    }

    /// The next message from `from`.
    pub async fn message_from(&mut self, from: &str) -> Received {
        self.until(|e| match e {
            Event::Message(m) if m.from == from => Some(m),
            _ => None,
        })
        .await
    }

    /// The text of the next message from `from`, which must have opened.
    pub async fn reads(&mut self, from: &str) -> String {
        match self.message_from(from).await.content {
            Content::Encrypted(text) => text,
            other => panic!(
                "{}: a message from {from} did not open: {other:?}",
                self.name
            ),
        }
    }

    pub async fn key_change(&mut self) -> KeyChange {
        self.until(|e| match e {
            Event::KeyChanged(change) => Some(change),
            _ => None,
        })
        .await
    }

    /// Waits until `user` is announced in `room`.
    pub async fn sees_join(&mut self, user: &str) {
        self.until(|e| match e {
            Event::Frame(ServerFrame::Presence { user: u, event, .. })
                if u == user && event == ilo_client::PresenceEvent::Join =>
            {
                Some(())
            }
            _ => None,
        })
        .await
    }
}
