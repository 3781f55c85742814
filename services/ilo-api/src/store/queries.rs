//! Every query Ilo runs, written once for both backends.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::QueryResult;

use super::StoreError;
use super::connection::AnyConnection;
use super::schema::{api_keys, sessions, users};

/// A user as stored. `password_hash` never leaves ilo-api.
#[derive(Debug, Clone, Queryable)]
pub(crate) struct UserRow {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub public_key: String,
}

const USER_COLUMNS: (
    users::id,
    users::username,
    users::password_hash,
    users::public_key,
) = (
    users::id,
    users::username,
    users::password_hash,
    users::public_key,
);

pub(crate) struct NewUser {
    pub id: String,
    pub username: String,
    pub username_key: String,
    pub username_skeleton: String,
    pub password_hash: String,
    pub public_key: String,
    pub created_at: i64,
}

pub(crate) struct NewSession {
    pub id: String,
    pub token_hash: String,
    pub user_id: String,
    pub api_key_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A live session and the user it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct SessionUser {
    pub session_id: String,
    pub expires_at: i64,
    pub user: UserRow,
}

/// Sessions a query deleted. Only [`crate::sessions::Sessions::end`] consumes it, revoking
/// them everywhere: a deleted session that was not revoked would stay valid in caches.
#[must_use = "deleted sessions must be revoked: run the query through Sessions::end"]
pub(crate) struct Ended {
    /// Whether what the query was to delete existed.
    pub(crate) found: bool,
    pub(crate) sessions: Vec<String>,
}

impl Ended {
    fn of(sessions: Vec<String>) -> Self {
        Self {
            found: true,
            sessions,
        }
    }
}

pub(crate) fn ping(conn: &mut AnyConnection) -> QueryResult<()> {
    conn.batch_execute("SELECT 1")
}

pub(crate) fn insert_api_key(
    conn: &mut AnyConnection,
    id: &str,
    key_hash: &str,
    now: i64,
) -> Result<(), StoreError> {
    diesel::insert_into(api_keys::table)
        .values((
            api_keys::id.eq(id),
            api_keys::key_hash.eq(key_hash),
            api_keys::created_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// The id of the API key with this hash, if it exists (revoked keys are deleted).
pub(crate) fn api_key_id(
    conn: &mut AnyConnection,
    key_hash: &str,
) -> Result<Option<String>, StoreError> {
    Ok(api_keys::table
        .filter(api_keys::key_hash.eq(key_hash))
        .select(api_keys::id)
        .first(conn)
        .optional()?)
}

/// Deletes the key and the sessions opened with it (not found when no such key exists).
pub(crate) fn delete_api_key(
    conn: &mut AnyConnection,
    key_hash: &str,
) -> Result<Ended, StoreError> {
    write_transaction(conn, |conn| {
        let Some(key_id) = api_keys::table
            .filter(api_keys::key_hash.eq(key_hash))
            .select(api_keys::id)
            .first::<String>(conn)
            .optional()?
        else {
            return Ok(Ended {
                found: false,
                sessions: Vec::new(),
            });
        };
        let revoked = sessions::table
            .filter(sessions::api_key_id.eq(&key_id))
            .select(sessions::id)
            .load(conn)?;
        diesel::delete(sessions::table.filter(sessions::api_key_id.eq(&key_id))).execute(conn)?;
        diesel::delete(api_keys::table.filter(api_keys::id.eq(&key_id))).execute(conn)?;
        Ok(Ended::of(revoked))
    })
}

/// Inserts a user; [`StoreError::UsernameTaken`] when the case-folded name, or a name with
/// the same confusable skeleton, exists.
pub(crate) fn insert_user(conn: &mut AnyConnection, user: NewUser) -> Result<(), StoreError> {
    diesel::insert_into(users::table)
        .values((
            users::id.eq(user.id),
            users::username.eq(user.username),
            users::username_key.eq(user.username_key),
            users::username_skeleton.eq(user.username_skeleton),
            users::password_hash.eq(user.password_hash),
            users::public_key.eq(user.public_key),
            users::created_at.eq(user.created_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// Gives every user created before skeletons were kept one, computed by `skeleton` from the
/// username key. A name whose skeleton another user already holds keeps none (both existed
/// before the rule); how many were filled.
pub(crate) fn fill_skeletons(
    conn: &mut AnyConnection,
    skeleton: impl Fn(&str) -> String,
) -> Result<usize, StoreError> {
    let missing: Vec<(String, String)> = users::table
        .filter(users::username_skeleton.is_null())
        .select((users::id, users::username_key))
        .load(conn)?;
    let mut filled = 0;
    for (id, key) in missing {
        let updated = diesel::update(users::table.filter(users::id.eq(&id)))
            .set(users::username_skeleton.eq(skeleton(&key)))
            .execute(conn);
        match updated {
            Ok(_) => filled += 1,
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => tracing::warn!("two existing usernames look alike; the later keeps no skeleton"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(filled)
}

pub(crate) fn user_by_key(
    conn: &mut AnyConnection,
    username_key: &str,
) -> Result<Option<UserRow>, StoreError> {
    Ok(users::table
        .filter(users::username_key.eq(username_key))
        .select(USER_COLUMNS)
        .first(conn)
        .optional()?)
}

pub(crate) fn insert_session(
    conn: &mut AnyConnection,
    session: NewSession,
) -> Result<(), StoreError> {
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(session.id),
            sessions::token_hash.eq(session.token_hash),
            sessions::user_id.eq(session.user_id),
            sessions::api_key_id.eq(session.api_key_id),
            sessions::created_at.eq(session.created_at),
            sessions::expires_at.eq(session.expires_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// The unexpired session with this token hash, and its user.
pub(crate) fn session_by_token(
    conn: &mut AnyConnection,
    token_hash: &str,
    now: i64,
) -> Result<Option<SessionUser>, StoreError> {
    let found = sessions::table
        .inner_join(users::table)
        .filter(sessions::token_hash.eq(token_hash))
        .filter(sessions::expires_at.gt(now))
        .select(((sessions::id, sessions::expires_at), USER_COLUMNS))
        .first::<((String, i64), UserRow)>(conn)
        .optional()?;
    Ok(found.map(|((session_id, expires_at), user)| SessionUser {
        session_id,
        expires_at,
        user,
    }))
}

/// Which of `ids` are sessions that exist and have not expired.
pub(crate) fn live_sessions(
    conn: &mut AnyConnection,
    ids: &[String],
    now: i64,
) -> Result<Vec<String>, StoreError> {
    let mut live = Vec::new();
    // Chunks keep each statement under both backends' limits on bound parameters.
    for chunk in ids.chunks(500) {
        let found: Vec<String> = sessions::table
            .filter(sessions::id.eq_any(chunk))
            .filter(sessions::expires_at.gt(now))
            .select(sessions::id)
            .load(conn)?;
        live.extend(found);
    }
    Ok(live)
}

/// Deletes one session (not found when it did not exist).
pub(crate) fn delete_session(
    conn: &mut AnyConnection,
    session_id: &str,
) -> Result<Ended, StoreError> {
    let deleted =
        diesel::delete(sessions::table.filter(sessions::id.eq(session_id))).execute(conn)?;
    let found = deleted > 0;
    Ok(Ended {
        found,
        sessions: if found {
            vec![session_id.to_owned()]
        } else {
            Vec::new()
        },
    })
}

/// Deletes a user and all its sessions.
pub(crate) fn delete_user(conn: &mut AnyConnection, user_id: &str) -> Result<Ended, StoreError> {
    write_transaction(conn, |conn| {
        let revoked = delete_sessions_of(conn, user_id)?;
        diesel::delete(users::table.filter(users::id.eq(user_id))).execute(conn)?;
        Ok(Ended::of(revoked))
    })
}

/// Replaces a user's public key and deletes all its sessions (a new key means a new device:
/// everyone logs in again).
pub(crate) fn replace_public_key(
    conn: &mut AnyConnection,
    user_id: &str,
    public_key: &str,
) -> Result<Ended, StoreError> {
    write_transaction(conn, |conn| {
        let revoked = delete_sessions_of(conn, user_id)?;
        diesel::update(users::table.filter(users::id.eq(user_id)))
            .set(users::public_key.eq(public_key))
            .execute(conn)?;
        Ok(Ended::of(revoked))
    })
}

/// Replaces a user's password hash and deletes every session of the user but `keep` (the one
/// that asked).
pub(crate) fn change_password(
    conn: &mut AnyConnection,
    user_id: &str,
    password_hash: &str,
    keep: &str,
) -> Result<Ended, StoreError> {
    write_transaction(conn, |conn| {
        diesel::update(users::table.filter(users::id.eq(user_id)))
            .set(users::password_hash.eq(password_hash))
            .execute(conn)?;
        let others = sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::id.ne(keep));
        let ids = others.select(sessions::id).load(conn)?;
        diesel::delete(others).execute(conn)?;
        Ok(Ended::of(ids))
    })
}

/// Deletes every session of a user (inside the caller's transaction); their ids.
fn delete_sessions_of(conn: &mut AnyConnection, user_id: &str) -> QueryResult<Vec<String>> {
    let ids = sessions::table
        .filter(sessions::user_id.eq(user_id))
        .select(sessions::id)
        .load(conn)?;
    diesel::delete(sessions::table.filter(sessions::user_id.eq(user_id))).execute(conn)?;
    Ok(ids)
}

/// Removes sessions that expired before `now`; how many.
pub(crate) fn delete_expired_sessions(
    conn: &mut AnyConnection,
    now: i64,
) -> Result<usize, StoreError> {
    Ok(diesel::delete(sessions::table.filter(sessions::expires_at.le(now))).execute(conn)?)
}

/// A transaction that takes the write lock at its start. SQLite's default `BEGIN` would read
/// first and fail with SQLITE_BUSY when it later needs to write beside another writer.
fn write_transaction<T>(
    conn: &mut AnyConnection,
    work: impl FnOnce(&mut AnyConnection) -> QueryResult<T>,
) -> Result<T, StoreError> {
    let begin = match conn {
        AnyConnection::Sqlite(_) => "BEGIN IMMEDIATE",
        AnyConnection::Postgresql(_) => "BEGIN",
    };
    conn.batch_execute(begin)?;
    match work(conn).and_then(|value| conn.batch_execute("COMMIT").map(|()| value)) {
        Ok(value) => Ok(value),
        Err(e) => {
            // Best effort: a connection whose rollback fails is broken and the pool drops it.
            let _ = conn.batch_execute("ROLLBACK");
            Err(e.into())
        }
    }
}
