//! The compose topology without Docker: PostgreSQL, Redis, two ilo-api instances, three potion
//! relays and Debian's nginx running `deploy/nginx.conf` (only addresses substituted), all as
//! processes on loopback. A small DNS server plays Docker's: `potion` resolves to the three
//! relays (127.0.0.2-4, one port), `ilo-api` to the two instances (127.0.0.1 and 127.0.0.5,
//! one HTTP and one gRPC port). Clients use only the load balancer.
//!
//! In compose the relays reach gRPC by the service name, resolved again on each reconnection.
//! The relays here cannot use the test's DNS server (they resolve through the system), so
//! relays 0 and 1 reach the instances through a gRPC listener the test adds to nginx, which
//! resolves `ilo-api` the same way; relay 2 validates through instance B only.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ilo_client::ServerFrame;
use ilo_client::chat::{Chat, Event, Received};
use ilo_client::e2e::Content;
use ilo_client::rest::Api;
use ilo_proto::v1::ValidateTokenRequest;
use ilo_proto::v1::tokens_client::TokensClient;
use support::dns::Dns;
use support::instances::{Instance, SharedRedis};
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
    /// nginx's gRPC listener in front of both instances.
    grpc_lb: u16,
    relay_port: u16,
    redis: PrivateRedis,
    relays: Vec<Option<Process>>,
    /// Instances A (127.0.0.1) and B (127.0.0.5).
    apis: [Instance; 2],
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
        let redis = PrivateRedis::start_async().await;
        let (http, grpc, relay_port, lb) = (free_port(), free_port(), free_port(), free_port());
        let grpc_lb = free_port();
        let mut apis = Vec::new();
        for ip in API_IPS {
            let shared = SharedRedis::One(&redis.url());
            apis.push(Instance::start_on(ip, http, grpc, &db.url(), shared, &[]).await);
        }
        let dns = Dns::start(HashMap::from([
            ("potion".to_owned(), (0..3).map(relay_ip).collect()),
            ("ilo-api".to_owned(), API_IPS.to_vec()),
        ]))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let ports = Ports {
            dns: dns.addr.port(),
            lb,
            grpc_lb,
            relays: relay_port,
            http,
            grpc,
        };
        let nginx = start_nginx(&dir, &ports);
        let mut topology = Self {
            lb,
            grpc_lb,
            relay_port,
            redis,
            relays: Vec::new(),
            apis: apis.try_into().ok().unwrap(),
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
                ("ILO_GRPC_URL", self.grpc_url_of_relay(i)),
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

    /// Where relay `i` validates: through nginx to both instances, or (relay 2) B alone.
    fn grpc_url_of_relay(&self, i: usize) -> String {
        match i {
            2 => self.apis[1].grpc_url(),
            _ => format!("http://127.0.0.1:{}", self.grpc_lb),
        }
    }
}

/// Instances A and B.
const API_IPS: [Ipv4Addr; 2] = [Ipv4Addr::LOCALHOST, Ipv4Addr::new(127, 0, 0, 5)];

struct Ports {
    dns: u16,
    lb: u16,
    grpc_lb: u16,
    relays: u16,
    http: u16,
    grpc: u16,
}

/// nginx with `deploy/nginx.conf`, its addresses pointed at this test's processes, and a gRPC
/// listener in front of the instances (see the top of this file).
fn start_nginx(dir: &tempfile::TempDir, ports: &Ports) -> Process {
    let conf =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf")).unwrap();
    let grpc = format!(
        "server {{
        listen 127.0.0.1:{grpc_lb} http2;
        location / {{
            set $tokens ilo-api:{grpc};
            grpc_pass grpc://$tokens;
            grpc_read_timeout 1h;
        }}
    }}

    server {{",
        grpc_lb = ports.grpc_lb,
        grpc = ports.grpc,
    );
    let substituted = conf
        .replace(
            "resolver 127.0.0.11 ",
            &format!("resolver 127.0.0.1:{} ", ports.dns),
        )
        .replace("listen 8080;", &format!("listen 127.0.0.1:{};", ports.lb))
        .replace("potion:8081", &format!("potion:{}", ports.relays))
        .replace("ilo-api:8080", &format!("ilo-api:{}", ports.http))
        .replacen("server {", &grpc, 1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_instances_end_sessions_together_and_one_can_stop_under_load() {
    let mut topology = Topology::start().await;
    let api = Api::new(topology.url(""));
    let key = api.new_api_key().await.unwrap();
    api.register("ann", PASSWORD, &support::public_key(), &key)
        .await
        .unwrap();
    let [a, b] = &topology.apis;

    // Ended through A: refused through B, and closed on the relay that validates through B.
    let token = api.login("ann", PASSWORD, &key).await.unwrap().token;
    let mut ws = connect(&relay_ws_url(&topology, 2), &token).await.unwrap();
    let http = reqwest::Client::new();
    let logout = http.delete(a.url("/session")).bearer_auth(&token);
    assert_eq!(logout.send().await.unwrap().status(), 204);
    let mut tokens = TokensClient::connect(b.grpc_url()).await.unwrap();
    let refused = tokens
        .validate_token(ValidateTokenRequest {
            token: token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let code = tokio::time::timeout(Duration::from_secs(1), ws.closed_with())
        .await
        .expect("closed within one second");
    assert_eq!(code, 4001);

    // A stops while logins, lookups and upgrades go through the load balancer.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(load(
                topology.url(""),
                topology.lb,
                key.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for instance in &topology.apis {
        assert!(
            instance.logins().await > 0,
            "the load reaches both instances"
        );
    }
    topology.apis[0].stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answered = 0;
    for task in load {
        let outcomes = task.await.unwrap();
        let failed: Vec<_> = outcomes.iter().filter(|o| o.is_err()).collect();
        assert!(failed.is_empty(), "while A stopped: {failed:?}");
        answered += outcomes.len();
    }
    assert!(answered >= 10, "the load ran: {answered} requests");

    // Every relay still validates new sessions, each through what is left.
    let token = api.login("ann", PASSWORD, &key).await.unwrap().token;
    for i in 0..3 {
        let upgrade = connect(&relay_ws_url(&topology, i), &token).await;
        assert!(upgrade.is_ok(), "relay {i}: {:?}", upgrade.err());
    }
}

fn relay_ws_url(topology: &Topology, i: usize) -> String {
    format!("ws://{}:{}/ws", relay_ip(i), topology.relay_port)
}

async fn connect(url: &str, token: &str) -> Result<support::ws::Ws, support::ws::Refused> {
    let mut ws = support::ws::connect(url, token, support::ws::Presented::Header).await?;
    ws.welcome().await;
    Ok(ws)
}

/// Logins, key lookups and WebSocket upgrades through the load balancer, one after another,
/// until `stop`; what each gave (`Err` says which failed, and how).
async fn load(
    base: String,
    lb: u16,
    key: String,
    stop: Arc<AtomicBool>,
) -> Vec<Result<(), String>> {
    let api = Api::new(base);
    let mut outcomes = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let login = api.login("ann", PASSWORD, &key).await;
        outcomes.push(
            login
                .as_ref()
                .map(|_| ())
                .map_err(|e| format!("login: {e}")),
        );
        let lookup = api.public_key("ann").await;
        outcomes.push(lookup.map(|_| ()).map_err(|e| format!("lookup: {e}")));
        if let Ok(login) = login {
            let upgrade = connect(&format!("ws://127.0.0.1:{lb}/ws"), &login.token).await;
            outcomes.push(upgrade.map(|_| ()).map_err(|e| format!("upgrade: {e:?}")));
        }
    }
    outcomes
}
