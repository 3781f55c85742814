//! The token service relays use: ValidateToken, WatchRevocations, grpc.health.v1 and reflection.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use ilo_proto::v1::{ValidateTokenRequest, WatchRevocationsRequest};
use serde_json::json;
use support::{Backend, PASSWORD, TestApp};

async fn validate(
    app: &TestApp,
    token: &str,
) -> Result<ilo_proto::v1::ValidateTokenResponse, tonic::Status> {
    let mut client = app.tokens_client().await;
    client
        .validate_token(ValidateTokenRequest {
            token: token.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

on_both_backends!(
    valid_tokens_name_their_user_and_expiry,
    unknown_and_revoked_tokens_are_unauthenticated,
    expired_tokens_are_unauthenticated,
    revocations_are_streamed_for_logout_user_deletion_and_key_revocation,
);

async fn valid_tokens_name_their_user_and_expiry(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.create_user("Heidi").await;
    let token = app.login("heidi", &key).await;
    for _ in 0..2 {
        // The second answer comes from the cache and must say the same.
        let session = validate(&app, &token).await.unwrap();
        assert_eq!(session.username, "Heidi");
        assert_eq!(session.public_key, support::public_key());
        assert!(uuid::Uuid::parse_str(&session.user_id).is_ok());
        assert!(!session.session_id.is_empty());
        let expires = session.expires_at.unwrap().seconds;
        let in_a_day = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + 86_400;
        assert!((in_a_day - 5..=in_a_day).contains(&expires), "{expires}");
    }
}

async fn unknown_and_revoked_tokens_are_unauthenticated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for token in ["", "nonsense", "A".repeat(43).as_str()] {
        let status = validate(&app, token).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
    let key = app.create_user("ivan").await;
    let token = app.login("ivan", &key).await;
    validate(&app, &token).await.unwrap(); // now cached
    assert_eq!(app.logout(&token).await, 204);
    let status = validate(&app, &token).await.unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::Unauthenticated,
        "the cache forgot it"
    );
}

async fn expired_tokens_are_unauthenticated(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.token_ttl = Duration::from_secs(1)).await;
    let key = app.create_user("judy").await;
    let token = app.login("judy", &key).await;
    validate(&app, &token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let status = validate(&app, &token).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(app.logout(&token).await, 401);
}

async fn revocations_are_streamed_for_logout_user_deletion_and_key_revocation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut watcher = app.tokens_client().await;
    let mut revocations = watcher
        .watch_revocations(WatchRevocationsRequest {})
        .await
        .unwrap()
        .into_inner();
    let key = app.create_user("kim").await;
    let mut next_revocation = async || {
        let revocation = tokio::time::timeout(Duration::from_secs(1), revocations.next())
            .await
            .expect("a revocation within one second")
            .unwrap()
            .unwrap();
        revocation.session_ids
    };

    let token = app.login("kim", &key).await;
    let session = validate(&app, &token).await.unwrap().session_id;
    assert_eq!(app.logout(&token).await, 204);
    assert_eq!(next_revocation().await, [session]);

    let first = app.login("kim", &key).await;
    let second = app.login("kim", &key).await;
    let mut sessions = vec![
        validate(&app, &first).await.unwrap().session_id,
        validate(&app, &second).await.unwrap().session_id,
    ];
    let reply = app
        .client
        .delete(app.url("/user"))
        .bearer_auth(&first)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 204);
    let mut revoked = next_revocation().await;
    revoked.sort();
    sessions.sort();
    assert_eq!(revoked, sessions);

    let other_key = app.create_user("lena").await;
    let token = app.login("lena", &other_key).await;
    let session = validate(&app, &token).await.unwrap().session_id;
    let reply = app.revoke_key(&other_key).await;
    assert_eq!(reply.status(), 200);
    assert_eq!(next_revocation().await, [session]);
    assert_eq!(
        validate(&app, &token).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_serving_and_reflection_lists_the_services() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let app = TestApp::spawn(Backend::Sqlite).await;
    let channel = tonic::transport::Channel::from_shared(app.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "ilo.v1.Tokens"] {
        let mut serving = false;
        // The monitor reports within its first check; allow it a few seconds to start.
        for _ in 0..50 {
            let reply = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await;
            if reply.is_ok_and(|r| r.into_inner().status == 1) {
                serving = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(serving, "{service:?} is SERVING");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("not a service list: {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "ilo.v1.Tokens",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_revocations_are_also_published_there() {
    let redis_server = tokio::task::spawn_blocking(support::redis::PrivateRedis::start)
        .await
        .unwrap();
    let url = redis_server.url();
    let app =
        TestApp::spawn_with(Backend::Sqlite, |c| c.redis_url = Some(url.clone().into())).await;
    let mut pubsub = redis::Client::open(url)
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub
        .subscribe(ilo_api::REVOCATIONS_CHANNEL)
        .await
        .unwrap();
    let mut messages = pubsub.on_message();

    let key = app.create_user("mallory").await;
    let token = app.login("mallory", &key).await;
    let session = validate(&app, &token).await.unwrap().session_id;
    assert_eq!(app.logout(&token).await, 204);

    let message = tokio::time::timeout(Duration::from_secs(1), messages.next())
        .await
        .expect("published within one second")
        .unwrap();
    let payload: serde_json::Value =
        serde_json::from_str(&message.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(payload["session_ids"], json!([session]));
    assert!(
        payload["origin"].is_string(),
        "names the instance: {payload}"
    );
    assert!(
        !payload.to_string().contains(&token),
        "the token itself never travels"
    );
}
