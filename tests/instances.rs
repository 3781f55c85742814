//! Several ilo-api instances on one PostgreSQL and one Redis, as processes (api.md, "Several
//! ilo-api instances"): a session ended through one ends on the other and on its relays, an
//! instance that stops hearing the others trusts no cache, the limits are counted across
//! instances, and a Redis outage neither locks anyone out nor lifts the limits.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};
use ilo_proto::v1::tokens_client::TokensClient;
use ilo_proto::v1::{ValidateTokenRequest, WatchRevocationsRequest};
use serde_json::{Value, json};
use support::cluster::PrivateCluster;
use support::instances::{Instance, SharedRedis};
use support::redis::PrivateRedis;
use support::relay::TestRelay;
use support::{Backend, PASSWORD, TestDb};

struct Pair {
    a: Instance,
    b: Instance,
    redis: Option<PrivateRedis>,
    _cluster: Option<PrivateCluster>,
    db: TestDb,
    http: reqwest::Client,
}

impl Pair {
    /// Instances A and B on one new PostgreSQL database and a private Redis, each with `env`.
    async fn start(env: &[(&str, &str)]) -> Self {
        let redis = PrivateRedis::start_async().await;
        let mut pair = Self::on(SharedRedis::One(&redis.url()), env).await;
        pair.redis = Some(redis);
        pair
    }

    /// The same on a private Redis Cluster (`REDIS_CLUSTER`).
    async fn on_cluster(env: &[(&str, &str)]) -> Self {
        let cluster = PrivateCluster::start().await;
        let mut pair = Self::on(SharedRedis::Cluster(&cluster.seeds()), env).await;
        pair._cluster = Some(cluster);
        pair
    }

    async fn on(redis: SharedRedis<'_>, env: &[(&str, &str)]) -> Self {
        let db = TestDb::new(Backend::Postgres);
        let a = Instance::start(Ipv4Addr::LOCALHOST, &db.url(), redis, env).await;
        let b = Instance::start(Ipv4Addr::LOCALHOST, &db.url(), redis, env).await;
        Self {
            a,
            b,
            redis: None,
            _cluster: None,
            db,
            http: reqwest::Client::new(),
        }
    }

    fn redis(&mut self) -> &mut PrivateRedis {
        self.redis.as_mut().unwrap()
    }

    /// Registers `name` through A; its API key.
    async fn user(&self, name: &str) -> String {
        let key = self.http.post(self.a.url("/key")).send().await.unwrap();
        assert_eq!(key.status(), 201);
        let key = key.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_owned();
        let body = json!({"username": name, "password": PASSWORD,
            "public_key": support::public_key(), "api_key": key});
        let created = self
            .http
            .post(self.a.url("/user"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        key
    }

    /// `PUT /user` through `at`: the status and the token when there is one.
    async fn log_in(&self, at: &Instance, name: &str, password: &str, key: &str) -> (u16, String) {
        let reply = self
            .http
            .put(at.url("/user"))
            .json(&json!({"username": name, "password": password, "api_key": key}))
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        let body: Value = reply.json().await.unwrap();
        (
            status,
            body["token"].as_str().unwrap_or_default().to_owned(),
        )
    }

    async fn token(&self, name: &str) -> String {
        let key = self.user(name).await;
        let (status, token) = self.log_in(&self.a, name, PASSWORD, &key).await;
        assert_eq!(status, 200);
        token
    }

    async fn log_out(&self, at: &Instance, token: &str) -> u16 {
        let reply = self.http.delete(at.url("/session")).bearer_auth(token);
        reply.send().await.unwrap().status().as_u16()
    }

    /// Deletes every session of `name` in the database itself, behind the instances' backs.
    fn delete_sessions_behind_their_backs(&self, name: &str) {
        let mut conn = PgConnection::establish(&self.db.url()).unwrap();
        diesel::sql_query(format!(
            "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE username = '{name}')"
        ))
        .execute(&mut conn)
        .unwrap();
    }
}

async fn tokens(at: &Instance) -> TokensClient<tonic::transport::Channel> {
    TokensClient::connect(at.grpc_url()).await.unwrap()
}

/// `ValidateToken` through `at`: `Ok(session id)` or the status code.
async fn validate(at: &Instance, token: &str) -> Result<String, tonic::Code> {
    let request = ValidateTokenRequest {
        token: token.to_owned(),
    };
    match tokens(at).await.validate_token(request).await {
        Ok(reply) => Ok(reply.into_inner().session_id),
        Err(status) => Err(status.code()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_through_one_instance_is_refused_by_the_other_and_closed_on_its_relay() {
    let pair = Pair::start(&[]).await;
    let token = pair.token("ann").await;
    // B knows the token, and keeps it in its cache.
    validate(&pair.b, &token).await.unwrap();
    let cached = pair.b.cached_validations().await;
    validate(&pair.b, &token).await.unwrap();
    assert_eq!(pair.b.cached_validations().await, cached + 1);
    let relay = TestRelay::spawn_on(&pair.b.grpc_url(), None, |_| {}).await;
    let mut ws = relay.connect(&token).await;

    assert_eq!(pair.log_out(&pair.a, &token).await, 204);
    let answered = Instant::now();
    loop {
        match validate(&pair.b, &token).await {
            Err(code) => {
                assert_eq!(code, tonic::Code::Unauthenticated);
                break;
            }
            Ok(_) => assert!(
                answered.elapsed() < Duration::from_millis(100),
                "B still accepted the token 100 ms after A ended it"
            ),
        }
    }
    let code = tokio::time::timeout(Duration::from_secs(1), ws.closed_with())
        .await
        .expect("the relay watching B closed the connection within one second");
    assert_eq!(code, 4001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_stops_hearing_the_others_trusts_no_cache_and_ends_its_watch_streams() {
    let pair = Pair::start(&[]).await;
    let (ann, bob) = (pair.token("ann").await, pair.token("bob").await);
    for token in [&ann, &bob] {
        validate(&pair.b, token).await.unwrap();
    }
    // While B hears the others, its cache answers: a session deleted behind its back (no
    // revocation published) is still accepted from it.
    pair.delete_sessions_behind_their_backs("ann");
    assert!(
        validate(&pair.b, &ann).await.is_ok(),
        "answered from B's cache"
    );
    let mut watch = tokens(&pair.b)
        .await
        .watch_revocations(WatchRevocationsRequest {})
        .await
        .unwrap()
        .into_inner();

    let mut redis = redis::Client::open(pair.redis.as_ref().unwrap().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(killed, 2, "both instances' subscriptions");

    let ended = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("B's watch stream ended");
    assert!(
        !matches!(ended, Ok(Some(_))),
        "ended, not a revocation: {ended:?}"
    );
    pair.delete_sessions_behind_their_backs("bob");
    assert_eq!(
        validate(&pair.b, &bob).await,
        Err(tonic::Code::Unauthenticated)
    );
    assert_eq!(
        validate(&pair.b, &ann).await,
        Err(tonic::Code::Unauthenticated)
    );
    // It subscribes again by itself, and relays can watch it again.
    pair.b.wait_hearing(true).await;
    let watch = tokens(&pair.b)
        .await
        .watch_revocations(WatchRevocationsRequest {})
        .await;
    assert!(watch.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_spread_over_two_instances_reach_the_limit_at_the_configured_count() {
    let pair = Pair::start(&[("ILO_LOGIN_FAILURES", "4")]).await;
    four_failures_over_both_reach_the_limit(&pair, "ann").await;
}

/// With `ILO_LOGIN_FAILURES=4`: four wrong passwords, alternately through A and B, then the
/// fifth is refused through either, and so is the right password from this address.
async fn four_failures_over_both_reach_the_limit(pair: &Pair, name: &str) {
    let key = pair.user(name).await;
    for at in [&pair.a, &pair.b, &pair.a, &pair.b] {
        let (status, _) = pair.log_in(at, name, "Wrong-pass-1", &key).await;
        assert_eq!(status, 401);
    }
    for at in [&pair.a, &pair.b] {
        let (status, _) = pair.log_in(at, name, "Wrong-pass-1", &key).await;
        assert_eq!(status, 429, "the fifth failure, wherever it lands");
        let (status, _) = pair.log_in(at, name, PASSWORD, &key).await;
        assert_eq!(status, 429, "this address waits out its window");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_logins_and_validation_go_on_and_each_instance_still_limits_failures() {
    let mut pair = Pair::start(&[("ILO_LOGIN_FAILURES", "3")]).await;
    let key = pair.user("ann").await;
    pair.redis().kill();
    pair.a.wait_hearing(false).await;
    pair.b.wait_hearing(false).await;

    let (status, token) = pair.log_in(&pair.a, "ann", PASSWORD, &key).await;
    assert_eq!(status, 200, "logins go on");
    assert!(
        validate(&pair.b, &token).await.is_ok(),
        "validation goes on"
    );
    assert_eq!(pair.log_out(&pair.a, &token).await, 204);
    assert_eq!(
        validate(&pair.b, &token).await,
        Err(tonic::Code::Unauthenticated),
        "B, not hearing A, asks the database"
    );
    let (status, kept) = pair.log_in(&pair.b, "ann", PASSWORD, &key).await;
    assert_eq!(status, 200);
    for _ in 0..3 {
        let (status, _) = pair.log_in(&pair.a, "ann", "Wrong-pass-1", &key).await;
        assert_eq!(status, 401);
    }
    let (status, _) = pair.log_in(&pair.a, "ann", "Wrong-pass-1", &key).await;
    assert_eq!(status, 429, "A still counts failures, in its own memory");

    pair.redis().restart_after(Duration::ZERO);
    pair.a.wait_hearing(true).await;
    pair.b.wait_hearing(true).await;
    assert!(validate(&pair.b, &kept).await.is_ok());
    assert_eq!(pair.log_out(&pair.b, &kept).await, 204);
    assert_eq!(
        validate(&pair.a, &kept).await,
        Err(tonic::Code::Unauthenticated)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_sessions_end_everywhere_and_failures_count_across_instances() {
    let pair = Pair::on_cluster(&[("ILO_LOGIN_FAILURES", "4")]).await;
    let token = pair.token("ann").await;
    validate(&pair.b, &token).await.unwrap();
    assert_eq!(pair.log_out(&pair.a, &token).await, 204);
    let answered = Instant::now();
    while validate(&pair.b, &token).await.is_ok() {
        assert!(
            answered.elapsed() < Duration::from_millis(100),
            "B still accepted the token 100 ms after A ended it"
        );
    }

    four_failures_over_both_reach_the_limit(&pair, "bob").await;
}
