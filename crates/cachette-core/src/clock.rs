//! Wall-clock time in milliseconds, injectable so TTL tests need no sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
  fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
  fn now_ms(&self) -> u64 {
    SystemTime::now()
      .duration_since(UNIX_EPOCH)
      .map(|d| d.as_millis() as u64)
      .unwrap_or(0)
  }
}

/// A clock that moves only when told to: the one fake the tests use.
#[derive(Debug, Default, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
  pub fn new(start_ms: u64) -> Self {
    ManualClock(Arc::new(AtomicU64::new(start_ms)))
  }
  pub fn advance(&self, ms: u64) {
    self.0.fetch_add(ms, Ordering::SeqCst);
  }
  pub fn set(&self, ms: u64) {
    self.0.store(ms, Ordering::SeqCst);
  }
}

impl Clock for ManualClock {
  fn now_ms(&self) -> u64 {
    self.0.load(Ordering::SeqCst)
  }
}

/// The shared system clock, as a trait object.
pub fn system() -> Arc<dyn Clock> {
  Arc::new(SystemClock)
}
