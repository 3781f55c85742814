//! The compose topology without Docker: PostgreSQL, Redis, ilo-api, three potion relays and
//! Debian's nginx running `deploy/nginx.conf` (only addresses substituted), all as processes on
//! loopback. A small DNS server plays Docker's: `potion` resolves to the three relays
//! (127.0.0.2-4, one port), `ilo-api` to 127.0.0.1. Clients use only the load balancer.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use ilo_client::ServerFrame;
use ilo_client::chat::{Chat, Event, Received};
use ilo_client::e2e::Content;
use ilo_client::rest::Api;
use support::dns::Dns;
use support::postgres::free_port;
use support::process::{Process, service};
use support::redis::PrivateRedis;
use support::{Backend, TestDb};
use tokio::sync::mpsc;

const PASSWORD: &str = "Topology-pass-1";
const ROOM: &str = "hall";
const PATIENCE: Duration = Duration::from_secs(15);

struct Topology {
    lb: u16,
    relay_port: u16,
    grpc: u16,
    redis: PrivateRedis,
    relays: Vec<Option<Process>>,
    _api: Process,
    _nginx: Process,
    _dns: Dns,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

/// The three relays' addresses: one name, three hosts, one port, as replicas are in compose.
fn relay_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + i as u8)
}

impl Topology {
    async fn start() -> Self {
        let db = TestDb::new(Backend::Postgres);
        let redis = PrivateRedis::start();
        let (http, grpc, relay_port, lb) = (free_port(), free_port(), free_port(), free_port());
        let api = service(
            "ilo-api",
            &[
                ("ILO_HTTP_ADDR", format!("127.0.0.1:{http}")),
                ("ILO_GRPC_ADDR", format!("127.0.0.1:{grpc}")),
                ("DATABASE_URL", db.url()),
                ("REDIS_URL", redis.url()),
                ("ILO_TRUSTED_PROXIES", "127.0.0.1".into()),
                ("ILO_KEY_RATE", "0".into()),
            ],
        );
        support::wait_until_ok(&format!("http://127.0.0.1:{http}/ready"), PATIENCE).await;
        let dns = Dns::start(HashMap::from([
            ("potion".to_owned(), (0..3).map(relay_ip).collect()),
            ("ilo-api".to_owned(), vec![Ipv4Addr::LOCALHOST]),
        ]))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let nginx = start_nginx(&dir, dns.addr.port(), lb, relay_port, http);
        let mut topology = Self {
            lb,
            relay_port,
            grpc,
            redis,
            relays: Vec::new(),
            _api: api,
            _nginx: nginx,
            _dns: dns,
            _db: db,
            _dir: dir,
        };
        for i in 0..3 {
            let relay = topology.start_relay(i).await;
            topology.relays.push(Some(relay));
        }
        support::wait_until_ok(&topology.url("/lb-health"), PATIENCE).await;
        topology
    }

    async fn start_relay(&self, i: usize) -> Process {
        let relay = service(
            "potion",
            &[
                (
                    "POTION_ADDR",
                    format!("{}:{}", relay_ip(i), self.relay_port),
                ),
                ("ILO_GRPC_URL", format!("http://127.0.0.1:{}", self.grpc)),
                ("REDIS_URL", self.redis.url()),
                ("POTION_SEND_RATE", "0".into()),
            ],
        );
        let ready = format!("http://{}:{}/ready", relay_ip(i), self.relay_port);
        support::wait_until_ok(&ready, PATIENCE).await;
        relay
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.lb)
    }
}

/// nginx with `deploy/nginx.conf`, its addresses pointed at this test's processes.
fn start_nginx(dir: &tempfile::TempDir, dns: u16, lb: u16, relays: u16, api: u16) -> Process {
    let conf =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf")).unwrap();
    let substituted = conf
        .replace(
            "resolver 127.0.0.11 ",
            &format!("resolver 127.0.0.1:{dns} "),
        )
        .replace("listen 8080;", &format!("listen 127.0.0.1:{lb};"))
        .replace("potion:8081", &format!("potion:{relays}"))
        .replace("ilo-api:8080", &format!("ilo-api:{api}"));
    assert_ne!(conf, substituted);
    // Workers run as nobody when started by root: they need to use the prefix directory.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, substituted).unwrap();
    let pid = dir.path().join("nginx.pid");
    Process::spawn(
        Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .args(["-e", "stderr", "-c"])
            .arg(&path)
            .arg("-g")
            .arg(format!("daemon off; pid {};", pid.display()))
            .stdout(Stdio::null()),
    )
}

fn nginx_binary() -> &'static str {
    if std::path::Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

/// A chat client through the load balancer, in its own task so events keep flowing.
struct Member {
    name: String,
    /// The relay it is on now (the prefix of its connection id).
    relay: String,
    says: mpsc::Sender<String>,
    events: mpsc::Receiver<Event>,
    reconnects: usize,
}

impl Member {
    async fn join(topology: &Topology, api: &Api, key: &str, name: &str) -> Self {
        api.register(name, PASSWORD, &support::public_key(), key)
            .await
            .unwrap();
        let token = api.login(name, PASSWORD, key).await.unwrap().token;
        let url = format!("ws://127.0.0.1:{}/ws", topology.lb);
        let mut chat = Chat::connect(&url, &token).await.unwrap();
        chat.join(ROOM).await.unwrap();
        let (says, mut said) = mpsc::channel::<String>(64);
        let (tell, events) = mpsc::channel(4096);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(body) = said.recv() => { let _ = chat.say(ROOM, &body, None).await; }
                    event = chat.next() => match event {
                        Ok(event) => if tell.send(event).await.is_err() { return },
                        Err(e) => panic!("session ended: {e}"),
                    },
                }
            }
        });
        let mut member = Self {
            name: name.to_owned(),
            relay: String::new(),
            says,
            events,
            reconnects: 0,
        };
        member.until_joined().await;
        member
    }

    async fn next(&mut self) -> Event {
        let event = tokio::time::timeout(PATIENCE, self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: nothing arrived", self.name))
            .unwrap();
        match &event {
            Event::Frame(ServerFrame::Welcome { connection, .. }) => {
                self.relay = connection.split('-').next().unwrap().to_owned();
            }
            Event::Reconnecting { .. } => self.reconnects += 1,
            _ => {}
        }
        event
    }

    /// Waits for the room's `joined` (after connecting or reconnecting); its `recovered`.
    async fn until_joined(&mut self) -> Option<bool> {
        loop {
            if let Event::Frame(ServerFrame::Joined { recovered, .. }) = self.next().await {
                return recovered;
            }
        }
    }

    async fn say(&self, body: String) {
        self.says.send(body).await.unwrap();
    }

    /// Collects message bodies until every one of `expected` has arrived; each exactly once.
    async fn receives(&mut self, expected: &HashSet<String>) {
        let mut seen = HashSet::new();
        while !expected.is_subset(&seen) {
            if let Event::Message(Received {
                content: Content::Plain(body),
                ..
            }) = self.next().await
                && expected.contains(&body)
            {
                assert!(seen.insert(body.clone()), "{}: {body} twice", self.name);
            }
        }
    }

    /// Reconnected after its relay went away: one `Reconnecting`, then back in the room, with
    /// everything it missed meanwhile replayed.
    async fn reconnects_once(&mut self) {
        let before = self.reconnects;
        loop {
            match self.next().await {
                Event::Reconnected => break,
                Event::Reconnecting { .. } => assert!(
                    self.reconnects == before + 1,
                    "{}: needed more than one reconnect",
                    self.name
                ),
                _ => {}
            }
        }
        assert_eq!(
            self.until_joined().await,
            Some(true),
            "{}: rejoined with since, recovered",
            self.name
        );
    }
}

/// Everyone says one line; everyone hears every line.
async fn round(members: &mut [Member], label: &str) {
    let lines: HashSet<String> = members
        .iter()
        .map(|m| format!("{label}: {} here", m.name))
        .collect();
    for member in members.iter() {
        member.say(format!("{label}: {} here", member.name)).await;
    }
    for member in members.iter_mut() {
        member.receives(&lines).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_chat_through_the_load_balancer_and_survive_relay_restarts() {
    let mut topology = Topology::start().await;

    // The guide's flow through the load balancer.
    let api = Api::new(topology.url(""));
    let key = api.new_api_key().await.unwrap();
    api.register("guide", PASSWORD, &support::public_key(), &key)
        .await
        .unwrap();
    api.login("guide", PASSWORD, &key).await.unwrap();
    assert_eq!(
        api.public_key("guide").await.unwrap(),
        support::public_key()
    );

    let mut members = Vec::new();
    for i in 0..6 {
        members.push(Member::join(&topology, &api, &key, &format!("member{i}")).await);
    }
    let relays: HashSet<&str> = members.iter().map(|m| m.relay.as_str()).collect();
    assert!(relays.len() >= 2, "clients landed on {relays:?}");
    round(&mut members, "first").await;

    // One relay stops: its clients come back through the load balancer; nobody else notices.
    let doomed = members[0].relay.clone();
    let index = relay_index(&topology, &doomed).await;
    let on_doomed: Vec<bool> = members.iter().map(|m| m.relay == doomed).collect();
    assert!(topology.relays[index].take().unwrap().terminate().await);
    // Said while its clients are away: they get it when they are back, from the history.
    let speaker = on_doomed.iter().position(|moved| !moved).unwrap();
    let away: HashSet<String> = (0..5).map(|i| format!("while away {i}")).collect();
    for line in &away {
        members[speaker].say(line.clone()).await;
    }
    for (member, moved) in members.iter_mut().zip(&on_doomed) {
        if *moved {
            member.reconnects_once().await;
            assert_ne!(member.relay, doomed);
        }
    }
    for member in &mut members {
        member.receives(&away).await;
    }
    round(&mut members, "after one stop").await;
    for (member, moved) in members.iter().zip(&on_doomed) {
        assert_eq!(member.reconnects, usize::from(*moved), "{}", member.name);
    }
    topology.relays[index] = Some(topology.start_relay(index).await);

    // A rolling restart, one relay at a time: every client is back after each step.
    for i in 0..3 {
        let relay_id = relay_id_at(&topology, i).await;
        let affected: Vec<bool> = members.iter().map(|m| m.relay == relay_id).collect();
        assert!(topology.relays[i].take().unwrap().terminate().await);
        for (member, hit) in members.iter_mut().zip(&affected) {
            if *hit {
                member.reconnects_once().await;
            }
        }
        topology.relays[i] = Some(topology.start_relay(i).await);
        round(&mut members, &format!("rolling {i}")).await;
    }
}

/// The relay id (connection-id prefix) of the relay at 127.0.0.<2+i>, read from a fresh connection.
async fn relay_id_at(topology: &Topology, i: usize) -> String {
    let api = Api::new(format!("http://127.0.0.1:{}", topology.lb));
    let key = api.new_api_key().await.unwrap();
    let name = format!("probe{}", uuid::Uuid::new_v4().simple());
    let name = &name[..20];
    api.register(name, PASSWORD, &support::public_key(), &key)
        .await
        .unwrap();
    let token = api.login(name, PASSWORD, &key).await.unwrap().token;
    let url = format!("ws://{}:{}/ws", relay_ip(i), topology.relay_port);
    let mut ws = support::ws::connect(&url, &token, support::ws::Presented::Header)
        .await
        .unwrap();
    let welcome = ws.welcome().await;
    welcome["connection"]
        .as_str()
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .to_owned()
}

async fn relay_index(topology: &Topology, relay_id: &str) -> usize {
    for i in 0..3 {
        if relay_id_at(topology, i).await == relay_id {
            return i;
        }
    }
    panic!("no relay is {relay_id}");
}
