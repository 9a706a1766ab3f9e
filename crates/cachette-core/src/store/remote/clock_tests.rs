//! Entry times are judged by the store's clock, never the system's: on Redis and on every SQL
//! database, moving a manual clock alone makes an entry stale, expired, a miss and uncounted.

use std::time::Duration;

use super::testing::on_every_server_at_manual_time;
use super::Acquired;
use crate::clock::Clock;
use crate::envelope::{Freshness, Times};

const MINUTE: u64 = 60_000;

/// Times of an entry made at `now`: stale after a minute, expired after `expires_after` ms. The
/// server's own expiry (`PX`, `expires_at`) is as far off: it never fires during a test.
fn times(now: u64, expires_after: u64) -> Times {
  Times {
    created_ms: now,
    stale_at_ms: now + MINUTE,
    expires_ms: now + expires_after,
  }
}

#[test]
fn an_entry_reads_fresh_then_stale_then_as_a_miss_as_the_clock_passes_its_times() {
  on_every_server_at_manual_time("clock-freshness", |c, clock| async move {
    let d = c.digest("k");
    c.put(&d, b"v", times(clock.now_ms(), 2 * MINUTE)).await;
    // Stale after a minute, yet still returned; a miss after two.
    for (minutes, expected) in [(0, Some(Freshness::Fresh)), (1, Some(Freshness::Stale)), (2, None)] {
      let got = c.get(&d).await.map(|(t, v)| (t.freshness(clock.now_ms()), v));
      assert_eq!(got, expected.map(|f| (f, b"v".to_vec())), "{}: {minutes} min on", c.url);
      clock.advance(MINUTE);
    }
  });
}

#[test]
fn acquire_takes_the_lease_of_an_entry_the_clock_has_expired() {
  on_every_server_at_manual_time("clock-acquire", |c, clock| async move {
    let (d, lease) = (c.digest("k"), Duration::from_secs(5));
    c.put(&d, b"v", times(clock.now_ms(), 2 * MINUTE)).await;
    let r = c.acquire(&d, lease, Duration::ZERO, false).await;
    assert!(
      matches!(&r, Acquired::Value(_, v) if v == b"v"),
      "{}: before its expiry: {r:?}",
      c.url
    );
    clock.advance(2 * MINUTE);
    c.locked(&d, lease, Duration::ZERO, false, "after its expiry").await;
  });
}

#[test]
fn len_does_not_count_an_entry_the_clock_has_expired() {
  on_every_server_at_manual_time("clock-len", |c, clock| async move {
    c.put(&c.digest("short"), b"v", times(clock.now_ms(), 2 * MINUTE)).await;
    c.put(&c.digest("long"), b"v", times(clock.now_ms(), 10 * MINUTE)).await;
    assert_eq!(c.len().await, 2, "{}", c.url);
    clock.advance(2 * MINUTE);
    assert_eq!(c.len().await, 1, "{}", c.url);
  });
}
