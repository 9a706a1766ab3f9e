//! The one pool of a database: created on first use, handed out only once the tables exist, and
//! starting the reaper that deletes expired rows every [`REAP_EVERY`] while the server is open.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::AnyPool;

use super::{ms, Dialect, SqlServer};
use crate::error::{CoreError, CoreResult};
use crate::store::remote::runtime;

const REAP_EVERY: Duration = Duration::from_secs(60);

impl SqlServer {
  /// The pool, connected and with its tables made (the first call of each pool does both).
  pub(super) async fn pool(&self) -> CoreResult<AnyPool> {
    let cell = self.pool.lock().clone();
    cell
      .get_or_try_init(|| async {
        sqlx::any::install_default_drivers();
        let mut url = self.url.clone();
        if self.dialect == Dialect::Sqlite && !url.contains("mode=") {
          url.push_str(if url.contains('?') { "&mode=rwc" } else { "?mode=rwc" });
        }
        let opts = AnyConnectOptions::from_str(&url).map_err(|e| self.unavailable(e))?;
        let sqlite = self.dialect == Dialect::Sqlite;
        // A statement waiting for another writer gives up when the operation does.
        let busy = format!("PRAGMA busy_timeout = {}", self.timeout.as_millis().max(1));
        let pool = AnyPoolOptions::new()
          .max_connections(if sqlite { 4 } else { 8 })
          // A backstop: each operation is bounded by the server's timeout (`Server::bounded`).
          .acquire_timeout(self.timeout * 2)
          .after_connect(move |conn, _| {
            let busy = busy.clone();
            Box::pin(async move {
              if sqlite {
                // WAL lets readers run beside the one writer; writers wait for each other as
                // long as an operation may take (backendTimeout).
                sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                sqlx::query(&busy).execute(&mut *conn).await?;
                sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
              }
              Ok(())
            })
          })
          .connect_with(opts)
          .await
          .map_err(|e| self.unavailable(e))?;
        self.create_tables(&pool).await?;
        Ok::<_, CoreError>(pool)
      })
      .await
      .cloned()
  }

  /// Drops the pool (the breaker opened: its connections may hang on sockets that never
  /// answer); the next operation makes a new one. The old one closes in the background.
  pub(crate) fn reconnect(&self) {
    let old = std::mem::take(&mut *self.pool.lock());
    if let Some(r) = self.reaper.lock().take() {
      r.abort();
    }
    if let Some(pool) = old.get().cloned() {
      runtime().spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), pool.close()).await;
      });
    }
  }

  /// Creates the tables. Several processes may race here on first use; a statement that loses
  /// such a race is retried, and then finds the table there.
  async fn create_tables(&self, pool: &AnyPool) -> CoreResult<()> {
    for stmt in &self.sql.ddl {
      let mut tries = 0;
      loop {
        match sqlx::query(stmt).execute(pool).await {
          Ok(_) => break,
          Err(_) if tries < 5 => {
            tries += 1;
            tokio::time::sleep(Duration::from_millis(20 * tries)).await;
          }
          Err(e) => return Err(self.failed(e)),
        }
      }
    }
    self.start_reaper(pool.clone());
    Ok(())
  }

  /// Deletes expired rows now and then every [`REAP_EVERY`], for as long as the server is open.
  fn start_reaper(&self, pool: AnyPool) {
    let mut slot = self.reaper.lock();
    if slot.is_some() {
      return;
    }
    let reap = self.sql.reap.clone();
    let task = runtime().spawn(async move {
      loop {
        let _ = sqlx::query(&reap).bind(ms(now_ms())).execute(&pool).await;
        tokio::time::sleep(REAP_EVERY).await;
      }
    });
    *slot = Some(task.abort_handle());
  }

  /// Deletes every expired row now (the reaper does this every minute); returns how many.
  #[cfg(test)]
  pub(crate) async fn reap(&self) -> CoreResult<u64> {
    let pool = self.pool().await?;
    let r = sqlx::query(&self.sql.reap).bind(ms(now_ms())).execute(&pool).await;
    Ok(r.map_err(|e| self.failed(e))?.rows_affected())
  }
}

/// The reaper's time: the system clock, since one server serves stores of any clock. It only
/// reclaims space; whether an entry is expired is judged by each read, on its store's clock.
fn now_ms() -> u64 {
  use crate::clock::Clock;
  crate::clock::SystemClock.now_ms()
}
