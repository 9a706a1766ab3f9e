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
  pub(super) async fn pool(&self) -> CoreResult<&AnyPool> {
    self
      .pool
      .get_or_try_init(|| async {
        sqlx::any::install_default_drivers();
        let mut url = self.url.clone();
        if self.dialect == Dialect::Sqlite && !url.contains("mode=") {
          url.push_str(if url.contains('?') { "&mode=rwc" } else { "?mode=rwc" });
        }
        let opts = AnyConnectOptions::from_str(&url).map_err(|e| self.unavailable(e))?;
        let sqlite = self.dialect == Dialect::Sqlite;
        let pool = AnyPoolOptions::new()
          .max_connections(if sqlite { 4 } else { 8 })
          .acquire_timeout(Duration::from_secs(5))
          .after_connect(move |conn, _| {
            Box::pin(async move {
              if sqlite {
                // WAL lets readers run beside the one writer; writers wait up to 10 s for each other.
                sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
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
    let Ok(mut slot) = self.reaper.lock() else { return };
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
    let r = sqlx::query(&self.sql.reap).bind(ms(now_ms())).execute(pool).await;
    Ok(r.map_err(|e| self.failed(e))?.rows_affected())
  }
}

/// The reaper's time: the system clock, since one server serves stores of any clock. It only
/// reclaims space; whether an entry is expired is judged by each read, on its store's clock.
fn now_ms() -> u64 {
  use crate::clock::Clock;
  crate::clock::SystemClock.now_ms()
}
