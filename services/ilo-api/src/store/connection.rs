//! One connection type for both backends, and the pool's manager that opens it.

use std::path::PathBuf;

use diesel::connection::SimpleConnection;
use diesel::r2d2::R2D2Connection;
use diesel::{Connection, ConnectionError, PgConnection, SqliteConnection};

#[derive(diesel::MultiConnection)]
pub(crate) enum AnyConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

/// Where the data lives, decided by the URL scheme.
#[derive(Debug, Clone)]
pub(crate) enum Database {
    Postgres(String),
    Sqlite(PathBuf),
}

impl Database {
    pub(crate) fn from_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        match url.strip_prefix("sqlite://") {
            Some(path) if !path.is_empty() => Ok(Self::Sqlite(PathBuf::from(path))),
            _ => anyhow::bail!("DATABASE_URL must start with sqlite:// or postgres://"),
        }
    }

    /// Where the data is, for people: a SQLite file's absolute path, or the URL with its
    /// password masked.
    pub(crate) fn location(&self) -> String {
        match self {
            Self::Postgres(url) => crate::config::mask_url(url),
            Self::Sqlite(path) => std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string(),
        }
    }

    /// Once, before the pool opens: puts a SQLite file in WAL mode. Done by one connection alone,
    /// because switching modes while another connection opens fails with "database is locked".
    pub(crate) fn prepare(&self) -> Result<(), ConnectionError> {
        if let Self::Sqlite(_) = self {
            self.connect()?
                .batch_execute("PRAGMA journal_mode = WAL")
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
        }
        Ok(())
    }

    fn connect(&self) -> Result<AnyConnection, ConnectionError> {
        match self {
            // Matched here rather than by `AnyConnection::establish`, which hides the real error.
            Self::Postgres(url) => PgConnection::establish(url).map(AnyConnection::Postgresql),
            Self::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        ConnectionError::BadConnection(format!(
                            "cannot create {}: {e}",
                            dir.display()
                        ))
                    })?;
                }
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
                // busy_timeout makes writers queue instead of failing at once. (WAL, which lets
                // readers run beside the writer, is set once by `prepare`: it stays in the file.)
                conn.batch_execute(
                    "PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON;",
                )
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(AnyConnection::Sqlite(conn))
            }
        }
    }
}

pub(super) struct Manager {
    database: Database,
}

impl Manager {
    pub(super) fn new(database: Database) -> Self {
        Self { database }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = ConnectionError;

    fn connect(&self) -> Result<AnyConnection, ConnectionError> {
        self.database.connect()
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), ConnectionError> {
        conn.ping()
            .map_err(ConnectionError::CouldntSetupConfiguration)
    }

    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        conn.is_broken()
    }
}
