//! A private Redis Cluster for one test: 3 masters with one replica each, on loopback ports of
//! its own, made with `redis-server --cluster-enabled yes` and `redis-cli --cluster create`;
//! every node is killed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PrivateCluster {
    nodes: Vec<(u16, Option<Child>)>,
    _dir: tempfile::TempDir,
}

impl PrivateCluster {
    /// Starts six nodes and joins them into a cluster, waiting until every slot is served
    /// and every replica is in sync with its master.
    pub async fn start() -> Self {
        tokio::task::spawn_blocking(Self::start_blocking)
            .await
            .unwrap()
    }

    fn start_blocking() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<(u16, Option<Child>)> = (0..6)
            .map(|_| {
                let port = free_node_port();
                (port, Some(spawn_node(dir.path(), port)))
            })
            .collect();
        for (port, _) in &nodes {
            wait_for_port(*port);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli (scripts/test installs redis-tools)");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes, _dir: dir };
        cluster.wait_until_healthy();
        cluster
    }

    /// `REDIS_CLUSTER`: every node as a seed.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|(port, _)| format!("redis://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every node's port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|(port, _)| *port).collect()
    }

    /// The port of the master serving `key`'s slot, as the nodes that are alive see it.
    pub fn master_of(&self, key: &str) -> u16 {
        let alive = self.alive().next().expect("a node is alive");
        let slot: u16 = cli(alive, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap();
        for line in cli(alive, &["CLUSTER", "NODES"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| match range.split_once('-') {
                Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).contains(&slot),
                None => range.parse::<u16>().ok() == Some(slot),
            });
            if serves {
                let port = fields[1].split(['@', ':']).nth(1).unwrap();
                return port.parse().unwrap();
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// Moves the slot of `key` to the master on `to`, keys and all, as `redis-cli --cluster
    /// reshard` does: IMPORTING/MIGRATING, MIGRATE of every key, then the new owner everywhere.
    pub async fn move_slot_of(&self, key: &str, to: u16) {
        let from = self.master_of(key);
        assert_ne!(from, to, "{key} is already on {to}");
        let alive: Vec<u16> = self.alive().collect();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            let slot = cli(from, &["CLUSTER", "KEYSLOT", &key]).trim().to_owned();
            let id = |port: u16| cli(port, &["CLUSTER", "MYID"]).trim().to_owned();
            let (from_id, to_id) = (id(from), id(to));
            cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
            cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
            loop {
                let keys = cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
                let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
                if keys.is_empty() {
                    break;
                }
                let to_port = to.to_string();
                let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
                args.extend(keys);
                let moved = cli(from, &args);
                assert!(moved.trim() == "OK", "MIGRATE: {moved}");
            }
            for port in alive {
                cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
            }
        })
        .await
        .unwrap();
    }

    /// A master other than `port`.
    pub fn another_master(&self, port: u16) -> u16 {
        let alive = self.alive().next().expect("a node is alive");
        cli(alive, &["CLUSTER", "NODES"])
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f[2].contains("master") && !f[2].contains("fail"))
            .map(|f| {
                f[1].split(['@', ':'])
                    .nth(1)
                    .unwrap()
                    .parse::<u16>()
                    .unwrap()
            })
            .find(|p| *p != port)
            .expect("another master")
    }

    /// Kills one node, as a crash would.
    pub fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|(p, _)| *p == port).unwrap();
        if let Some(mut child) = node.1.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until every slot is served again (after a failover).
    pub async fn wait_until_serving(&self) {
        let alive: Vec<u16> = self.alive().collect();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !alive
                .iter()
                .all(|port| cli(*port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            {
                assert!(Instant::now() < deadline, "the cluster did not recover");
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .await
        .unwrap();
    }

    /// `PUBSUB SHARDCHANNELS` on one node.
    pub fn shard_channels(&self, port: u16) -> Vec<String> {
        cli(port, &["PUBSUB", "SHARDCHANNELS"])
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect()
    }

    fn alive(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|(_, child)| child.is_some())
            .map(|(port, _)| *port)
    }

    fn wait_until_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self.alive().all(|port| {
                let info = cli(port, &["CLUSTER", "INFO"]);
                let replication = cli(port, &["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not form");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for port in self.ports() {
            self.kill(port);
        }
    }
}

fn spawn_node(dir: &Path, port: u16) -> Child {
    super::redis::redis_server(port)
        .current_dir(dir)
        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        .spawn()
        .expect("redis-server (scripts/test installs it)")
}

/// A port that is free, and whose cluster bus port (10,000 above) is free too.
fn free_node_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Below the kernel's ephemeral range, stepping from a per-process start so that tests in
    // parallel (each its own process under nextest) rarely try the same ports.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 20_000 + (std::process::id() % 1_000) as u16 * 10;
    loop {
        let port = start + NEXT.fetch_add(1, Ordering::Relaxed) % 10_000;
        let port = 20_000 + (port - 20_000) % 10_000;
        let bindable = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if bindable(port) && bindable(port + 10_000) {
            return port;
        }
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `redis-cli -p port args…`'s output.
fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
