//! The ilo-api benchmark.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ilo_proto::v1::ValidateTokenRequest;
use ilo_proto::v1::tokens_client::TokensClient;
use serde_json::json;

use crate::stats::{Samples, round};

const PASSWORD: &str = "Bench-password-1";

#[derive(clap::Args)]
pub struct Options {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent HTTP clients for `POST /key`.
    #[arg(long, default_value_t = 32)]
    http_clients: usize,
    /// Concurrent logins.
    #[arg(long, default_value_t = 4)]
    login_clients: usize,
    /// Concurrent gRPC callers, spread over `--grpc-channels` connections.
    #[arg(long, default_value_t = 16)]
    grpc_callers: usize,
    #[arg(long, default_value_t = 2)]
    grpc_channels: usize,
    /// Database for the measured ilo-api (default: a fresh SQLite file).
    #[arg(long)]
    database_url: Option<String>,
    /// After the measurements, this many more logins (8 at a time) with ilo-api's resident
    /// memory read before, halfway and after: hashing memory must not grow with load.
    #[arg(long, default_value_t = 0)]
    memory_logins: usize,
    /// The ilo-api binary (default: next to this one).
    #[arg(long)]
    ilo_api: Option<PathBuf>,
    /// ilo-api instances, sharing `--database-url` (PostgreSQL) and `--redis-url`; REST goes
    /// through nginx (round robin), gRPC callers are spread over the instances.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Redis shared by the instances (revocations and limits).
    #[arg(long)]
    redis_url: Option<String>,
    /// Put nginx in front even of one instance (to compare with several on equal terms).
    #[arg(long)]
    nginx: bool,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    if options.instances > 1 && (options.redis_url.is_none() || options.database_url.is_none()) {
        anyhow::bail!("several instances need --database-url (PostgreSQL) and --redis-url");
    }
    let dir = std::env::temp_dir().join(format!("ilo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let http = reqwest::Client::new();
    let mut servers = Vec::new();
    for _ in 0..options.instances.max(1) {
        let server = Server::start(&options, &dir)?;
        wait_ready(&http, &format!("http://{}", server.http)).await?;
        servers.push(server);
    }
    let front = if options.nginx || servers.len() > 1 {
        let addresses: Vec<&str> = servers.iter().map(|s| s.http.as_str()).collect();
        Some(Nginx::start(&dir, &addresses)?)
    } else {
        None
    };
    let base = match &front {
        Some(nginx) => format!("http://{}", nginx.addr),
        None => format!("http://{}", servers[0].http),
    };
    wait_ready(&http, &base).await?;
    let window = Duration::from_secs(options.seconds);

    let (keys, _) = hammer(options.http_clients, window, {
        let (http, url) = (http.clone(), format!("{base}/key"));
        move || {
            let (http, url) = (http.clone(), url.clone());
            async move { http.post(url).send().await.is_ok_and(|r| r.status() == 201) }
        }
    })
    .await;

    let api_key = new_key(&http, &base).await?;
    let public_key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let user = json!({"username": "bencher", "password": PASSWORD, "public_key": public_key, "api_key": api_key});
    http.post(format!("{base}/user"))
        .json(&user)
        .send()
        .await?
        .error_for_status()?;
    let login = json!({"username": "bencher", "password": PASSWORD, "api_key": api_key});

    let hash_ms = hash_time_ms();
    let health_during = tokio::spawn(probe_health(http.clone(), format!("{base}/health"), window));
    let (logins, mut login_latency) = hammer(options.login_clients, window, {
        let (http, url, body) = (http.clone(), format!("{base}/user"), login.clone());
        move || {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            async move {
                http.put(url)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        }
    })
    .await;
    let mut health = health_during.await?;

    let reply: serde_json::Value = http
        .put(format!("{base}/user"))
        .json(&login)
        .send()
        .await?
        .json()
        .await?;
    let token = reply["token"].as_str().unwrap_or_default().to_owned();
    let mut channels = Vec::new();
    for i in 0..options.grpc_channels.max(servers.len()) {
        let server = &servers[i % servers.len()];
        channels.push(TokensClient::connect(format!("http://{}", server.grpc)).await?);
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (validations, mut validation_latency) = hammer(options.grpc_callers, window, move || {
        let mut client = channels[next.fetch_add(1, Ordering::Relaxed) % channels.len()].clone();
        let token = token.clone();
        async move {
            client
                .validate_token(ValidateTokenRequest { token })
                .await
                .is_ok()
        }
    })
    .await;

    let memory = if options.memory_logins > 0 {
        let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
        Some(login_memory(&http, &base, &login, &pids, options.memory_logins).await)
    } else {
        None
    };

    let seconds = window.as_secs_f64();
    let report = json!({
        "instances": servers.len(),
        "through_nginx": front.is_some(),
        "rss_mib_before_half_after_logins_per_instance": memory,
        "post_key_per_s": round(keys as f64 / seconds, 0),
        "logins_per_s": round(logins as f64 / seconds, 1),
        "login_p50_ms": round(login_latency.quantile_ms(0.5), 2),
        "login_p99_ms": round(login_latency.quantile_ms(0.99), 2),
        "argon2_hash_ms": round(hash_ms, 2),
        "health_p99_ms_during_logins": round(health.quantile_ms(0.99), 2),
        "health_max_ms_during_logins": round(health.quantile_ms(1.0), 2),
        "health_samples": health.len(),
        "validate_token_per_s": round(validations as f64 / seconds, 0),
        "validate_token_p50_ms": round(validation_latency.quantile_ms(0.5), 3),
        "validate_token_p99_ms": round(validation_latency.quantile_ms(0.99), 3),
        "database": servers[0].database,
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
    });
    println!("{report}");
    Ok(())
}

/// `logins` correct logins, 8 at a time; each instance's RSS in MiB before, halfway and after.
async fn login_memory(
    http: &reqwest::Client,
    base: &str,
    body: &serde_json::Value,
    pids: &[u32],
    logins: usize,
) -> Vec<[f64; 3]> {
    use futures_util::StreamExt as _;
    let rss = || -> Vec<f64> {
        pids.iter()
            .map(|pid| round(crate::proc::rss_bytes(*pid) as f64 / (1024.0 * 1024.0), 1))
            .collect()
    };
    let half = || {
        futures_util::stream::iter(0..logins / 2).for_each_concurrent(8, |_| async {
            let _ = http.put(format!("{base}/user")).json(body).send().await;
        })
    };
    let before = rss();
    half().await;
    let halfway = rss();
    half().await;
    let after = rss();
    (0..pids.len())
        .map(|i| [before[i], halfway[i], after[i]])
        .collect()
}

/// Runs `callers` loops of `call` for `window`; successful calls and their latencies.
async fn hammer<F, Fut>(callers: usize, window: Duration, call: F) -> (u64, Samples)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let call = Arc::new(std::sync::Mutex::new(call));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..callers.max(1) {
        let (call, stop) = (call.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut samples) = (0u64, Samples::default());
            while !stop.load(Ordering::Relaxed) {
                let future = (call.lock().expect("caller lock"))();
                let started = Instant::now();
                if future.await {
                    ok += 1;
                    samples.push(started.elapsed());
                }
            }
            (ok, samples)
        }));
    }
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let (mut total, mut all) = (0, Samples::default());
    for task in tasks {
        if let Ok((ok, samples)) = task.await {
            total += ok;
            all.extend(samples);
        }
    }
    (total, all)
}

/// `GET /health` every 10 ms for `window`, one at a time.
async fn probe_health(http: reqwest::Client, url: String, window: Duration) -> Samples {
    let mut samples = Samples::default();
    let end = Instant::now() + window;
    while Instant::now() < end {
        let started = Instant::now();
        if http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
            samples.push(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    samples
}

fn hash_time_ms() -> f64 {
    let mut samples = Samples::default();
    for _ in 0..10 {
        let started = Instant::now();
        let _ =
            argon2::PasswordHasher::hash_password(&argon2::Argon2::default(), PASSWORD.as_bytes());
        samples.push(started.elapsed());
    }
    samples.quantile_ms(0.5)
}

async fn new_key(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let reply: serde_json::Value = http
        .post(format!("{base}/key"))
        .send()
        .await?
        .json()
        .await?;
    Ok(reply["detail"].as_str().unwrap_or_default().to_owned())
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    for _ in 0..100 {
        if http
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("ilo-api did not become ready")
}

/// The measured ilo-api, a separate process so its CPU is its own.
struct Server {
    child: Child,
    http: String,
    grpc: String,
    database: String,
}

impl Server {
    fn start(options: &Options, dir: &std::path::Path) -> anyhow::Result<Self> {
        let binary = match &options.ilo_api {
            Some(path) => path.clone(),
            None => std::env::current_exe()?.with_file_name("ilo-api"),
        };
        let database = options
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("bench.db").display()));
        let (http, grpc) = (free_addr()?, free_addr()?);
        let mut command = Command::new(&binary);
        if let Some(redis) = &options.redis_url {
            command.env("REDIS_URL", redis);
        }
        let child = command
            .env("ILO_HTTP_ADDR", &http)
            .env("ILO_GRPC_ADDR", &grpc)
            .env("DATABASE_URL", &database)
            .env("ILO_KEY_RATE", "0")
            .env("ILO_LOGIN_FAILURES", "0")
            .env("ILO_LOOKUP_RATE", "0")
            .env("ILO_LOGIN_RATE", "0")
            .env("ILO_REGISTER_RATE", "0")
            .env("ILO_HASH_PER_CLIENT", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start {}: {e} (cargo build --release first)",
                    binary.display()
                )
            })?;
        let database = if database.starts_with("sqlite") {
            "sqlite"
        } else {
            "postgres"
        }
        .to_owned();
        Ok(Self {
            child,
            http,
            grpc,
            database,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx balancing REST over the instances, round robin, as `deploy/nginx.conf` does.
struct Nginx {
    child: Child,
    addr: String,
}

impl Nginx {
    fn start(dir: &std::path::Path, instances: &[&str]) -> anyhow::Result<Self> {
        let addr = free_addr()?;
        let servers: String = instances.iter().map(|a| format!("server {a};")).collect();
        let conf = format!(
            "master_process off;\nerror_log stderr warn;\nevents {{ worker_connections 4096; }}\n\
             http {{ access_log off;\n upstream api {{ {servers} keepalive 64; }}\n\
             server {{ listen {addr}; location / {{ proxy_pass http://api;\n\
             proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(dir)
            .args(["-e", "stderr", "-c"])
            .arg(&path)
            .args(["-g", "daemon off; pid nginx.pid;"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("cannot start nginx: {e} (apt-get install nginx-light)")
            })?;
        Ok(Self { child, addr })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_addr() -> anyhow::Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string())
}
