//! Wall-clock time in milliseconds, injectable so TTL tests need no sleeping.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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

/// The time [`process`] reports instead of the system's, or -1: set by [`set_test_time`].
static TEST_TIME: AtomicI64 = AtomicI64::new(-1);

/// The clock of the stores a process opens through the binding: the system clock, unless a
/// test stopped it with [`set_test_time`] (so a JS test of TTL logic moves time in the core too).
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessClock;

impl Clock for ProcessClock {
  fn now_ms(&self) -> u64 {
    match TEST_TIME.load(Ordering::Relaxed) {
      t if t >= 0 => t as u64,
      _ => SystemClock.now_ms(),
    }
  }
}

/// The process clock, as a trait object.
pub fn process() -> Arc<dyn Clock> {
  Arc::new(ProcessClock)
}

/// Stops the [`ProcessClock`] at `ms`, or gives it the system's time again (`None`). For tests.
pub fn set_test_time(ms: Option<u64>) {
  TEST_TIME.store(ms.map_or(-1, |m| m.min(i64::MAX as u64) as i64), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn the_process_clock_follows_a_test_time_and_then_the_system_again() {
    set_test_time(Some(1234));
    assert_eq!(ProcessClock.now_ms(), 1234);
    set_test_time(None);
    let now = SystemClock.now_ms();
    assert!(ProcessClock.now_ms() >= now);
  }
}
