//! The database going away and coming back, on a private PostgreSQL server this test owns.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use ilo_proto::v1::ValidateTokenRequest;
use support::postgres::PrivatePostgres;
use support::{TestApp, TestDb, error_of};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Polls `probe` until it returns true or `limit` passes; whether it did.
async fn eventually(limit: Duration, mut probe: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_gives_503_and_the_service_recovers_by_itself() {
    let pg = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .unwrap();
    let db = TestDb::Postgres {
        admin_url: pg.url(),
        name: format!("ilo_fault_{}", uuid::Uuid::new_v4().simple()),
    };
    {
        use diesel::{Connection, RunQueryDsl};
        let mut admin = diesel::PgConnection::establish(&pg.url()).unwrap();
        let TestDb::Postgres { name, .. } = &db else {
            unreachable!()
        };
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .unwrap();
    }
    let app = TestApp::spawn_on(db, |_| {}).await;
    let key = app.create_user("survivor").await;
    let token = app.login("survivor", &key).await;
    let channel = tonic::transport::Channel::from_shared(app.grpc_url()).unwrap();
    let mut health = HealthClient::new(channel.connect().await.unwrap());
    let status = async |health: &mut HealthClient<_>| {
        health
            .check(HealthCheckRequest {
                service: "ilo.v1.Tokens".into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .ok()
    };

    pg.stop();

    let ready = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let started = Instant::now();
    let (status_code, _, code) =
        error_of(app.client.post(app.url("/key")).send().await.unwrap()).await;
    assert_eq!((status_code, code.as_str()), (503, "database_unavailable"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answers, does not hang"
    );
    let reply = app.post_user(&support::new_user("newcomer", &key)).await;
    assert_eq!(reply.headers()["retry-after"], "1");
    assert_eq!(reply.status(), 503);
    let mut tokens = app.tokens_client().await;
    let unknown = tokens
        .validate_token(ValidateTokenRequest {
            token: "never-issued".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unavailable);
    assert!(
        eventually(Duration::from_secs(10), async || status(&mut health).await
            == Some(2))
        .await,
        "gRPC health turns NOT_SERVING"
    );

    pg.start_again();
    assert!(
        eventually(Duration::from_secs(20), async || {
            let reply = app.client.get(app.url("/ready")).send().await.unwrap();
            reply.status() == 200
        })
        .await,
        "ready again without a restart"
    );
    assert!(
        eventually(Duration::from_secs(10), async || status(&mut health).await
            == Some(1))
        .await,
        "gRPC health SERVING again"
    );
    // Nothing was lost or half-written: the old user and session work, new writes succeed.
    assert_eq!(app.status_of_public_key("survivor").await, 200);
    assert_eq!(app.status_of_public_key("newcomer").await, 404);
    assert_eq!(
        app.post_user(&support::new_user("newcomer", &key))
            .await
            .status(),
        201
    );
    assert_eq!(app.logout(&token).await, 204);
    app.stop().await;
}
