//! Server URLs for tests: the environment's, or the standard local ports.

pub fn redis_url() -> String {
  std::env::var("CACHETTE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}
pub fn pg_url() -> String {
  std::env::var("CACHETTE_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}
pub fn mysql_url() -> String {
  std::env::var("CACHETTE_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// Returns once `n` `acquire` calls on `s` (counted from its opening) have seen a holder and
/// wait for it; panics after 10 s.
pub async fn waiting(s: &super::RemoteStore, n: usize) {
  let started = std::time::Instant::now();
  while s.waiting.load(std::sync::atomic::Ordering::SeqCst) < n {
    assert!(
      started.elapsed() < std::time::Duration::from_secs(10),
      "fewer than {n} waiters"
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
  }
}

/// Acquires the lease of `d` (waiting at most `wait`); panics, naming `what`, if another
/// outcome comes back.
pub async fn locked(
  s: &super::RemoteStore,
  d: &crate::key::Digest,
  lease: std::time::Duration,
  wait: std::time::Duration,
  force: bool,
  what: &str,
) -> super::Lease {
  match s.acquire(d, lease, wait, force).await.expect("acquire") {
    super::Acquired::Locked(l) => l,
    other => panic!("{what}: expected the lease, got {other:?}"),
  }
}
