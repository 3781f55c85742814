//! The limits' counts in Redis, shared by every instance. Each operation is one script call;
//! `None` when Redis did not answer, and then Redis is not asked again for a second, so an
//! outage costs requests nothing but the first timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Script;

use super::memory::{FAILURES_FOR, KNOWN_ADDRESSES, MAX_DELAY};
use crate::shared::Shared;

/// How long Redis is left alone after it failed to answer.
const RESTING: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(crate) struct SharedCounts {
    redis: Shared,
    window: Arc<Script>,
    guard: Arc<Script>,
    /// Unix ms before which Redis is not asked.
    resting_until: Arc<AtomicU64>,
}

impl SharedCounts {
    pub(crate) fn new(redis: Shared) -> Self {
        Self {
            redis,
            window: Arc::new(Script::new(include_str!("window.lua"))),
            guard: Arc::new(Script::new(include_str!("guard.lua"))),
            resting_until: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A fixed window's operation (`hit`, `check` or `record`): `Some(Err(retry_after))` when
    /// refused.
    pub(super) async fn window(
        &self,
        op: &str,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Option<Result<(), Duration>> {
        let mut call = self.window.prepare_invoke();
        call.key(key)
            .arg(op)
            .arg(limit)
            .arg(window.as_millis() as u64);
        self.run(call).await.map(refused_for)
    }

    /// A username guard's operation (`check`, `failed` or `succeeded`).
    pub(super) async fn guard(
        &self,
        op: &str,
        user: &str,
        address: &str,
        threshold: u32,
    ) -> Option<Result<(), Duration>> {
        let mut call = self.guard.prepare_invoke();
        // One hash tag for both keys: on a cluster a script's keys must share a slot.
        call.key(format!("ilo:limit:guard:{{{user}}}"))
            .key(format!("ilo:limit:known:{{{user}}}"))
            .arg(op)
            .arg(address)
            .arg(threshold)
            .arg(FAILURES_FOR.as_millis() as u64)
            .arg(MAX_DELAY.as_millis() as u64)
            .arg(KNOWN_ADDRESSES);
        self.run(call).await.map(refused_for)
    }

    pub(super) async fn delete(&self, key: &str) {
        if self.resting() {
            return;
        }
        let deleted: redis::RedisResult<i64> = async {
            let mut connection = self.redis.commands().await?;
            redis::cmd("DEL")
                .arg(key)
                .query_async(&mut connection)
                .await
        }
        .await;
        if deleted.is_err() {
            self.rest();
        }
    }

    async fn run(&self, call: redis::ScriptInvocation<'_>) -> Option<u64> {
        if self.resting() {
            return None;
        }
        let answer = async {
            let mut connection = self.redis.commands().await?;
            call.invoke_async::<u64>(&mut connection).await
        };
        match answer.await {
            Ok(answer) => Some(answer),
            Err(e) => {
                tracing::warn!(error = %e, "Redis did not answer for a rate limit; counting in memory");
                self.rest();
                None
            }
        }
    }

    fn resting(&self) -> bool {
        ilo_runtime::unix_ms() < self.resting_until.load(Ordering::Relaxed)
    }

    fn rest(&self) {
        let until = ilo_runtime::unix_ms() + RESTING.as_millis() as u64;
        self.resting_until.store(until, Ordering::Relaxed);
    }
}

/// A script's answer: 0 allowed, otherwise the ms to wait.
fn refused_for(ms: u64) -> Result<(), Duration> {
    match ms {
        0 => Ok(()),
        ms => Err(Duration::from_millis(ms)),
    }
}
