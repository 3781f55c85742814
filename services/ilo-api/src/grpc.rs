//! The gRPC side, for relays only: `ilo.v1.Tokens`, `grpc.health.v1` (NOT_SERVING while the
//! database is down) and server reflection (v1).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use ilo_proto::v1::tokens_server::{Tokens as TokensApi, TokensServer};
use ilo_proto::v1::{
    CheckSessionsRequest, CheckSessionsResponse, Revocation, ValidateTokenRequest,
    ValidateTokenResponse, WatchRevocationsRequest,
};
use tokio::sync::{broadcast, watch};
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

use crate::metrics::{Metrics, OutcomeLabels};
use crate::sessions::{Heard, Sessions};
use crate::store::Store;

/// How often the health service re-checks the database.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct TokenService {
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
    /// Changes once, at shutdown, to end the revocation streams so the server can stop.
    stopping: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl TokensApi for TokenService {
    async fn validate_token(
        &self,
        request: Request<ValidateTokenRequest>,
    ) -> Result<Response<ValidateTokenResponse>, Status> {
        let started = Instant::now();
        let result = self.sessions.lookup(&request.into_inner().token).await;
        self.metrics
            .validation_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok((Some(_), true)) => "cached",
            Ok((Some(_), false)) => "valid",
            Ok((None, _)) => "invalid",
            Err(_) => "unavailable",
        };
        self.metrics
            .validations
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        match result {
            Ok((Some(session), _)) => Ok(Response::new(ValidateTokenResponse {
                user_id: session.user_id.clone(),
                username: session.username.clone(),
                public_key: session.public_key.clone(),
                expires_at: Some(prost_types::Timestamp {
                    seconds: session.expires_at,
                    nanos: 0,
                }),
                session_id: session.session_id.clone(),
            })),
            Ok((None, _)) => Err(Status::unauthenticated(
                "the token is unknown, expired or revoked",
            )),
            Err(e) => {
                tracing::warn!(error = %e, "token validation failed");
                Err(Status::unavailable("the database is unavailable"))
            }
        }
    }

    async fn check_sessions(
        &self,
        request: Request<CheckSessionsRequest>,
    ) -> Result<Response<CheckSessionsResponse>, Status> {
        /// More than any relay holds; bounds the work one call can ask for.
        const MAX_SESSIONS: usize = 100_000;
        let ids = request.into_inner().session_ids;
        if ids.len() > MAX_SESSIONS {
            return Err(Status::invalid_argument("at most 100000 sessions per call"));
        }
        match self.sessions.ended(ids).await {
            Ok(ended_session_ids) => Ok(Response::new(CheckSessionsResponse { ended_session_ids })),
            Err(e) => {
                tracing::warn!(error = %e, "session check failed");
                Err(Status::unavailable("the database is unavailable"))
            }
        }
    }

    type WatchRevocationsStream =
        Pin<Box<dyn Stream<Item = Result<Revocation, Status>> + Send + 'static>>;

    async fn watch_revocations(
        &self,
        _: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        // Subscribed first, so that losing the other instances after the check still ends it.
        let revocations = self.sessions.subscribe();
        if !self.sessions.is_hearing() {
            return Err(Status::unavailable(
                "this instance cannot hear the other instances' revocations yet",
            ));
        }
        let mut stopping = self.stopping.clone();
        let stream = futures_util::stream::unfold(Some(revocations), |receiver| async move {
            let mut receiver = receiver?;
            let missed =
                || Status::data_loss("revocations were missed; re-validate and watch again");
            match receiver.recv().await {
                Ok(Heard::Revoked(ids)) => Some((
                    Ok(Revocation {
                        session_ids: ids.to_vec(),
                    }),
                    Some(receiver),
                )),
                // The watcher missed some, or may have: end its stream so it reconnects and
                // re-checks its sessions.
                Ok(Heard::Missed) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    Some((Err(missed()), None))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .take_until(async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Serves gRPC on `listener` until `stopping` turns true.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    sessions: Arc<Sessions>,
    store: Store,
    metrics: Arc<Metrics>,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ilo_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let service = TokenService {
        sessions,
        metrics,
        stopping: stopping.clone(),
    };
    let monitor = tokio::spawn(watch_database(store, reporter, stopping.clone()));
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut stop = stopping;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(TokensServer::new(service))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await?;
    monitor.abort();
    Ok(())
}

/// Keeps `grpc.health.v1` in step with the database: SERVING only while it answers.
async fn watch_database(
    store: Store,
    reporter: tonic_health::server::HealthReporter,
    mut stopping: watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        let status = match store.ping(HEALTH_INTERVAL).await {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        if last != Some(status) {
            tracing::info!(?status, "gRPC health");
            reporter.set_service_status("", status).await;
            reporter
                .set_service_status(
                    <TokensServer<TokenService> as tonic::server::NamedService>::NAME,
                    status,
                )
                .await;
            last = Some(status);
        }
        tokio::select! {
            () = tokio::time::sleep(HEALTH_INTERVAL) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}
