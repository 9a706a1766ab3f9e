//! The SQL store: SQLite (a file in WAL mode), PostgreSQL and MySQL/MariaDB, on `sqlx`.
//!
//! Two tables per `table` option `T` (default `cachette`), created on first use:
//!
//! ```sql
//! T        (ns BINARY(8), k BINARY(16), v BLOB,  expires_at BIGINT, PRIMARY KEY (ns, k))
//! T_locks  (ns BINARY(8), k BINARY(16), owner BINARY(16), expires_at BIGINT, error BLOB NULL,
//!           PRIMARY KEY (ns, k))
//! ```
//! (`BYTEA` on PostgreSQL.) `v` holds the entry envelope; `T.expires_at` is the entry's expiry in
//! ms since the epoch (`i64::MAX`: never) and expired rows are deleted by a reaper every minute.
//! `T_locks.expires_at` is a lease expiry on the **database's** clock, so machines with skewed
//! clocks agree on it. Every value is bound as a parameter; only the validated table name is
//! spliced into statements.

mod dialect;
mod pool;
#[cfg(test)]
mod tests;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyPool, Row};
use tokio::sync::OnceCell;

pub use self::dialect::valid_table;
use self::dialect::{Dialect, Sql};
use super::{key_part, Attempt, ServerSpec, Token, Wakeups};
use crate::error::{CoreError, CoreResult};
use crate::key::Digest;

const NEVER_SQL: i64 = i64::MAX;

/// One database: a pool per URL and process, shared by every namespace and worker thread.
pub(crate) struct SqlServer {
  shown: String,
  dialect: Dialect,
  url: String,
  sql: Sql,
  /// The pool, made by the first operation that needs it; replaced by [`SqlServer::reconnect`].
  pool: Mutex<Arc<OnceCell<AnyPool>>>,
  timeout: Duration,
  wakeups: Arc<Wakeups>,
  reaper: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for SqlServer {
  fn drop(&mut self) {
    if let Some(r) = self.reaper.lock().take() {
      r.abort();
    }
  }
}

fn ms(d: u64) -> i64 {
  i64::try_from(d).unwrap_or(NEVER_SQL)
}

impl SqlServer {
  pub(crate) fn new(spec: &ServerSpec) -> CoreResult<Self> {
    let url = spec.urls[0].clone();
    let scheme = url.split("://").next().unwrap_or_default().to_ascii_lowercase();
    let dialect = match scheme.as_str() {
      "postgres" | "postgresql" => Dialect::Postgres,
      "mysql" | "mariadb" => Dialect::MySql,
      _ => Dialect::Sqlite,
    };
    if !valid_table(&spec.prefix) {
      return Err(CoreError::InvalidConfig {
        reason: format!(
          "table {:?} is not a plain SQL identifier (a letter or _, then letters, digits or _, at most 48)",
          spec.prefix
        ),
      });
    }
    let url = if dialect == Dialect::MySql && scheme == "mariadb" {
      format!("mysql{}", &url[scheme.len()..])
    } else {
      url
    };
    AnyConnectOptions::from_str(&url).map_err(|e| CoreError::InvalidConfig {
      reason: format!("{}: {e}", super::redact(&url)),
    })?;
    Ok(SqlServer {
      shown: super::redact(&url),
      dialect,
      sql: Sql::new(dialect, &spec.prefix),
      url,
      pool: Mutex::default(),
      timeout: spec.timeout,
      wakeups: Arc::new(Wakeups::default()),
      reaper: Mutex::new(None),
    })
  }

  pub(crate) fn wakeups(&self) -> &Wakeups {
    &self.wakeups
  }

  pub(crate) fn shown(&self) -> &str {
    &self.shown
  }

  fn unavailable(&self, e: impl std::fmt::Display) -> CoreError {
    CoreError::ServerUnavailable {
      server: self.shown.clone(),
      reason: e.to_string(),
    }
  }

  fn failed(&self, e: sqlx::Error) -> CoreError {
    match e {
      // A broken stream (a connection cut mid-message) may also surface as a protocol error.
      sqlx::Error::Io(_)
      | sqlx::Error::PoolTimedOut
      | sqlx::Error::PoolClosed
      | sqlx::Error::Tls(_)
      | sqlx::Error::Protocol(_)
      | sqlx::Error::WorkerCrashed => self.unavailable(e),
      e => CoreError::io(format!("{}: {e}", self.shown)),
    }
  }

  pub(crate) fn direct_read(&self, ns: [u8; 8]) -> Option<super::DirectRead> {
    (self.dialect == Dialect::Postgres).then(|| super::DirectRead::Postgres {
      url: self.url.clone(),
      query: self.sql.get.clone(),
      ns,
    })
  }

  pub(crate) async fn get(&self, ns: [u8; 8], digest: &Digest) -> CoreResult<Option<Vec<u8>>> {
    let pool = self.pool().await?;
    let row = sqlx::query(&self.sql.get)
      .bind(&ns[..])
      .bind(&key_part(digest)[..])
      .fetch_optional(&pool)
      .await
      .map_err(|e| self.failed(e))?;
    row
      .map(|r| r.try_get::<Vec<u8>, _>(0))
      .transpose()
      .map_err(|e| self.failed(e))
  }

  pub(crate) async fn attempt(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    token: &Token,
    lease_ms: u64,
    waited_for: Option<&Token>,
    want_value: bool,
  ) -> CoreResult<Attempt> {
    let pool = self.pool().await?;
    let k = key_part(digest);
    if want_value {
      if let Some(v) = self.get(ns, digest).await? {
        return Ok(Attempt::Value(v));
      }
    }
    if let Some(h) = waited_for {
      let e = sqlx::query(&self.sql.failed_of)
        .bind(&ns[..])
        .bind(&k[..])
        .bind(&h[..])
        .fetch_optional(&pool)
        .await
        .map_err(|e| self.failed(e))?;
      if let Some(r) = e {
        return Ok(Attempt::Failed(r.try_get::<Vec<u8>, _>(0).map_err(|e| self.failed(e))?));
      }
    }
    sqlx::query(&self.sql.take)
      .bind(&ns[..])
      .bind(&k[..])
      .bind(&token[..])
      .bind(ms(lease_ms))
      .execute(&pool)
      .await
      .map_err(|e| self.failed(e))?;
    let row = sqlx::query(&self.sql.holder)
      .bind(&ns[..])
      .bind(&k[..])
      .fetch_optional(&pool)
      .await
      .map_err(|e| self.failed(e))?;
    let Some(row) = row else {
      // Released between the two statements: look again at once.
      return Ok(Attempt::Wait {
        holder: waited_for.copied().unwrap_or_default(),
        remaining_ms: 0,
      });
    };
    let owner: Vec<u8> = row.try_get(0).map_err(|e| self.failed(e))?;
    let remaining: i64 = row.try_get(1).map_err(|e| self.failed(e))?;
    if owner == token[..] {
      // Double-checked: a holder may have stored the value and released just before we took it.
      if want_value {
        if let Some(v) = self.get(ns, digest).await? {
          sqlx::query(&self.sql.abort)
            .bind(&ns[..])
            .bind(&k[..])
            .bind(&token[..])
            .execute(&pool)
            .await
            .map_err(|e| self.failed(e))?;
          return Ok(Attempt::Value(v));
        }
      }
      return Ok(Attempt::Locked);
    }
    let mut holder = [0u8; 16];
    let n = owner.len().min(16);
    holder[..n].copy_from_slice(&owner[..n]);
    Ok(Attempt::Wait {
      holder,
      remaining_ms: remaining.max(0) as u64,
    })
  }

  pub(crate) async fn renew(&self, ns: [u8; 8], digest: &Digest, token: &Token, lease_ms: u64) -> CoreResult<bool> {
    let pool = self.pool().await?;
    let r = sqlx::query(&self.sql.renew)
      .bind(ms(lease_ms))
      .bind(&ns[..])
      .bind(&key_part(digest)[..])
      .bind(&token[..])
      .execute(&pool)
      .await
      .map_err(|e| self.failed(e))?;
    Ok(r.rows_affected() == 1)
  }

  pub(crate) async fn commit(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    token: &Token,
    envelope: &[u8],
    expires_ms: u64,
    _now_ms: u64,
  ) -> CoreResult<bool> {
    let pool = self.pool().await?;
    let k = key_part(digest);
    let done = if let Some(commit) = &self.sql.commit {
      let r = sqlx::query(commit)
        .bind(&ns[..])
        .bind(&k[..])
        .bind(&token[..])
        .bind(envelope)
        .bind(ms(expires_ms))
        .execute(&pool)
        .await
        .map_err(|e| self.failed(e))?;
      r.rows_affected() == 1
    } else {
      let mut tx = pool.begin().await.map_err(|e| self.failed(e))?;
      let r = sqlx::query(&self.sql.release)
        .bind(&ns[..])
        .bind(&k[..])
        .bind(&token[..])
        .execute(&mut *tx)
        .await
        .map_err(|e| self.failed(e))?;
      let owned = r.rows_affected() == 1;
      if owned {
        sqlx::query(&self.sql.upsert)
          .bind(&ns[..])
          .bind(&k[..])
          .bind(envelope)
          .bind(ms(expires_ms))
          .execute(&mut *tx)
          .await
          .map_err(|e| self.failed(e))?;
      }
      tx.commit().await.map_err(|e| self.failed(e))?;
      owned
    };
    self.wakeups.wake(ns, k);
    Ok(done)
  }

  pub(crate) async fn abort(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    token: &Token,
    error: Option<&[u8]>,
    _keep_ms: u64,
  ) -> CoreResult<()> {
    let pool = self.pool().await?;
    let k = key_part(digest);
    let q = match error {
      Some(e) => sqlx::query(&self.sql.abort_error).bind(e),
      None => sqlx::query(&self.sql.abort),
    };
    q.bind(&ns[..])
      .bind(&k[..])
      .bind(&token[..])
      .execute(&pool)
      .await
      .map_err(|e| self.failed(e))?;
    self.wakeups.wake(ns, k);
    Ok(())
  }

  pub(crate) async fn put(
    &self,
    ns: [u8; 8],
    digest: &Digest,
    envelope: &[u8],
    expires_ms: u64,
    _now_ms: u64,
  ) -> CoreResult<()> {
    let pool = self.pool().await?;
    let k = key_part(digest);
    sqlx::query(&self.sql.upsert)
      .bind(&ns[..])
      .bind(&k[..])
      .bind(envelope)
      .bind(ms(expires_ms))
      .execute(&pool)
      .await
      .map_err(|e| self.failed(e))?;
    self.wakeups.wake(ns, k);
    Ok(())
  }

  pub(crate) async fn delete(&self, ns: [u8; 8], digest: &Digest) -> CoreResult<bool> {
    let pool = self.pool().await?;
    let k = key_part(digest);
    let r = sqlx::query(&self.sql.delete)
      .bind(&ns[..])
      .bind(&k[..])
      .execute(&pool)
      .await
      .map_err(|e| self.failed(e))?;
    sqlx::query(&self.sql.delete_lock)
      .bind(&ns[..])
      .bind(&k[..])
      .execute(&pool)
      .await
      .map_err(|e| self.failed(e))?;
    self.wakeups.wake(ns, k);
    Ok(r.rows_affected() > 0)
  }

  pub(crate) async fn clear(&self, ns: [u8; 8]) -> CoreResult<()> {
    let pool = self.pool().await?;
    for q in [&self.sql.clear, &self.sql.clear_locks] {
      sqlx::query(q)
        .bind(&ns[..])
        .execute(&pool)
        .await
        .map_err(|e| self.failed(e))?;
    }
    self.wakeups.wake_all();
    Ok(())
  }

  pub(crate) async fn clear_locks(&self, ns: [u8; 8]) -> CoreResult<u64> {
    let pool = self.pool().await?;
    let r = sqlx::query(&self.sql.clear_locks)
      .bind(&ns[..])
      .execute(&pool)
      .await
      .map_err(|e| self.failed(e))?;
    self.wakeups.wake_all();
    Ok(r.rows_affected())
  }

  pub(crate) async fn len(&self, ns: [u8; 8], now: u64) -> CoreResult<u64> {
    let pool = self.pool().await?;
    let n: i64 = sqlx::query_scalar(&self.sql.count)
      .bind(&ns[..])
      .bind(ms(now))
      .fetch_one(&pool)
      .await
      .map_err(|e| self.failed(e))?;
    Ok(n.max(0) as u64)
  }
}
