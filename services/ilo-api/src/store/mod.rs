//! Storage: the only module that sees diesel. PostgreSQL or SQLite, chosen by `DATABASE_URL`,
//! reached through one set of queries. Every call runs on tokio's blocking pool, never on the
//! async executor.

mod connection;
mod queries;
pub(crate) mod schema;

use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub(crate) use connection::{AnyConnection, Database};
pub(crate) use queries::*;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// How long a request waits for a connection before it is told the database is unavailable.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("the username is taken")]
    UsernameTaken,
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                Self::UsernameTaken
            }
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// A pool of connections to the configured database.
#[derive(Clone)]
pub(crate) struct Store {
    pool: r2d2::Pool<connection::Manager>,
}

impl Store {
    /// Opens the pool lazily (a database that is down now may come up later) and migrates.
    pub(crate) fn open(url: &str, max_size: u32) -> anyhow::Result<Self> {
        let database = Database::from_url(url)?;
        database
            .prepare()
            .map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))?;
        let pool = r2d2::Pool::builder()
            .max_size(max_size.max(1))
            .min_idle(Some(1))
            .connection_timeout(CHECKOUT_TIMEOUT)
            .build_unchecked(connection::Manager::new(database));
        let store = Self { pool };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> anyhow::Result<()> {
        let mut conn = self
            .pool
            .get()
            .map_err(|e| anyhow::anyhow!("cannot reach the database to migrate it: {e}"))?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("migrations failed: {e}"))?;
        tracing::info!(applied = applied.len(), "database schema is up to date");
        let filled = queries::fill_skeletons(&mut conn, crate::domain::Username::skeleton_of)
            .map_err(|e| anyhow::anyhow!("cannot fill username skeletons: {e}"))?;
        if filled > 0 {
            tracing::info!(filled, "username skeletons computed for existing users");
        }
        Ok(())
    }

    /// Whether the database answers a trivial query within `timeout`.
    pub(crate) async fn ping(&self, timeout: Duration) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        blocking(move || {
            let mut conn = pool.get_timeout(timeout)?;
            queries::ping(&mut conn).map_err(StoreError::from)
        })
        .await
    }

    /// Runs `query` with a pooled connection on the blocking pool.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        query: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = self.pool.clone();
        blocking(move || query(&mut *pool.get()?)).await
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|e| StoreError::Unavailable(format!("database task failed: {e}")))?
}
