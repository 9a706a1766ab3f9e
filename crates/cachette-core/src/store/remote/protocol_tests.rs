//! The lease protocol of `docs/locks.md`, one behaviour a test, each run on Redis and on every SQL
//! database: both kinds of server must keep the same contract.

use std::time::Duration;

use super::testing::{on_every_server, Case};
use super::{new_token, Acquired, Attempt, Lease};
use crate::key::Digest;

/// The lease every test takes: renewed every 200 ms while held.
const LEASE: Duration = Duration::from_millis(600);
/// Longer than any lease here: how long a caller that must get an answer may wait.
const PATIENCE: Duration = Duration::from_secs(10);

#[test]
fn a_miss_takes_the_lease_and_a_second_caller_waits_for_the_holder() {
  on_every_server("miss-takes-lease", |c| async move {
    let d = c.digest("k");
    let _held = c.locked(&d, LEASE, PATIENCE, false, "first caller").await;
    // Shorter than the lease: the second caller can only have waited for the holder.
    let r = c.acquire(&d, LEASE, LEASE / 3, false).await;
    assert!(matches!(r, Acquired::TimedOut), "{}: {r:?}", c.url);
    assert_eq!(c.waiters(), 1, "{}", c.url);
  });
}

#[test]
fn a_held_lease_is_renewed_so_a_waiter_never_takes_it_over() {
  on_every_server("lease-renewed", |c| async move {
    let d = c.digest("k");
    let _held = c.locked(&d, LEASE, PATIENCE, false, "holder").await;
    // Two and a half lease lengths: an unrenewed lease would have been taken over.
    let r = c.acquire(&d, LEASE, LEASE * 5 / 2, false).await;
    assert!(matches!(r, Acquired::TimedOut), "{}: {r:?}", c.url);
  });
}

#[test]
fn a_commit_by_the_holder_stores_the_value() {
  on_every_server("commit-stores", |c| async move {
    let d = c.digest("k");
    let l = c.locked(&d, LEASE, PATIENCE, false, "holder").await;
    assert!(c.commit(l, b"v1").await, "{}: the holder's commit is refused", c.url);
    assert_eq!(c.value(&d).await.as_deref(), Some(&b"v1"[..]), "{}", c.url);
    assert_eq!(c.len().await, 1, "{}", c.url);
  });
}

#[test]
fn a_stored_value_is_returned_instead_of_the_lease() {
  on_every_server("hit-returns-value", |c| async move {
    let d = c.digest("k");
    c.put(&d, b"v1", c.forever()).await;
    let r = c.acquire(&d, LEASE, PATIENCE, false).await;
    assert!(matches!(&r, Acquired::Value(_, v) if v == b"v1"), "{}: {r:?}", c.url);
    // Nobody holds the lease: a forced caller takes it without waiting.
    c.locked(&d, LEASE, Duration::ZERO, true, "refresh after the hit").await;
  });
}

#[test]
fn a_forced_acquire_takes_the_lease_despite_a_stored_value() {
  on_every_server("forced-acquire", |c| async move {
    let d = c.digest("k");
    c.put(&d, b"v1", c.forever()).await;
    c.locked(&d, LEASE, PATIENCE, true, "refresh").await;
  });
}

#[test]
fn clear_locks_frees_every_lease_of_the_namespace_and_counts_them() {
  on_every_server("clear-locks", |c| async move {
    let (d1, d2) = (c.digest("k1"), c.digest("k2"));
    let _l1 = c.locked(&d1, LEASE, PATIENCE, false, "first key").await;
    let _l2 = c.locked(&d2, LEASE, PATIENCE, false, "second key").await;
    assert_eq!(c.clear_locks().await, 2, "{}", c.url);
    // No wait at all: a lease still held would time the callers out at once.
    c.locked(&d1, LEASE, Duration::ZERO, false, "first key, freed").await;
    c.locked(&d2, LEASE, Duration::ZERO, false, "second key, freed").await;
  });
}

/// Takes the lease of `d` that `old` lost and commits under it: `old`'s commit after that must be
/// refused and leave the new value.
async fn only_the_new_holder_commits(c: &Case, d: &Digest, old: Lease) {
  let new = c.locked(d, LEASE, PATIENCE, false, "new holder").await;
  assert!(c.commit(new, b"new").await, "{}", c.url);
  assert!(!c.commit(old, b"old").await, "{}: the lost lease still commits", c.url);
  assert_eq!(c.value(d).await.as_deref(), Some(&b"new"[..]), "{}", c.url);
}

#[test]
fn a_commit_after_the_lease_was_cleared_writes_nothing() {
  on_every_server("commit-after-clear-locks", |c| async move {
    let d = c.digest("k");
    let old = c.locked(&d, LEASE, PATIENCE, false, "old holder").await;
    assert_eq!(c.clear_locks().await, 1, "{}", c.url);
    only_the_new_holder_commits(&c, &d, old).await;
  });
}

#[test]
fn a_caller_that_waited_for_the_holder_that_aborted_reads_its_error() {
  on_every_server("waited-reads-error", |c| async move {
    let d = c.digest("k");
    let l = c.locked(&d, LEASE, PATIENCE, false, "holder").await;
    let holder = l.token;
    c.abort(l, Some(b"boom")).await;
    // The next look of a caller that waited for `holder` (the waiting itself is in
    // redis::tests::every_waiter_gets_the_error_of_the_holder_that_aborted).
    let (ns, lease_ms) = (c.ks.id(), LEASE.as_millis() as u64);
    let look = on_server!(&*c.store.server, s => s.attempt(ns, &d, &new_token(), lease_ms, Some(&holder), true).await);
    let r = look.unwrap_or_else(|e| panic!("{}: {e}", c.url));
    assert!(matches!(&r, Attempt::Failed(e) if e == b"boom"), "{}: {r:?}", c.url);
  });
}

#[test]
fn an_abort_stores_nothing_and_the_next_caller_takes_the_lease() {
  on_every_server("abort-stores-nothing", |c| async move {
    let d = c.digest("k");
    let l = c.locked(&d, LEASE, PATIENCE, false, "holder").await;
    c.abort(l, Some(b"boom")).await;
    assert_eq!(c.value(&d).await, None, "{}", c.url);
    // No wait: the aborted lease must be gone, not merely expiring.
    c.locked(&d, LEASE, Duration::ZERO, false, "next caller").await;
  });
}

#[test]
fn a_waiter_gets_the_value_the_holder_commits() {
  on_every_server("waiter-gets-value", |c| async move {
    let d = c.digest("k");
    let l = c.locked(&d, LEASE, PATIENCE, false, "holder").await;
    let waiter = c.spawn_acquire(&d, LEASE, PATIENCE);
    c.waiting(1).await;
    assert!(c.commit(l, b"ok").await, "{}", c.url);
    let r = waiter.await.expect("join");
    assert!(matches!(&r, Acquired::Value(_, v) if v == b"ok"), "{}: {r:?}", c.url);
  });
}

#[test]
fn an_abandoned_lease_expires_and_a_waiter_takes_over() {
  on_every_server("abandoned-lease", |c| async move {
    let d = c.digest("k");
    // The holder "dies": its renewal stops, nobody releases the lease.
    drop(c.locked(&d, LEASE, PATIENCE, false, "holder").await);
    // The waiter polls meanwhile: polling must not extend the lease, or this times out.
    let r = c.acquire(&d, LEASE, PATIENCE, false).await;
    assert!(matches!(r, Acquired::Locked(_)), "{}: {r:?}", c.url);
  });
}

#[test]
fn a_commit_after_the_lease_was_taken_over_writes_nothing() {
  on_every_server("commit-after-takeover", |c| async move {
    let d = c.digest("k");
    let old = c.locked(&d, LEASE, PATIENCE, false, "old holder").await;
    // It stops renewing: the next caller waits for the lease to expire, then takes it over.
    old.stop_renewing();
    only_the_new_holder_commits(&c, &d, old).await;
  });
}

#[test]
fn clear_empties_its_namespace_of_entries_and_leases_and_no_other() {
  on_every_server("clear", |c| async move {
    let other = c.beside("clear-neighbour").await;
    let (d, held) = (c.digest("k"), c.digest("held"));
    c.put(&d, b"v", c.forever()).await;
    other.put(&other.digest("k"), b"kept", other.forever()).await;
    let _l = c.locked(&held, LEASE, PATIENCE, false, "holder").await;
    c.clear().await;
    assert_eq!(c.value(&d).await, None, "{}", c.url);
    assert_eq!(c.len().await, 0, "{}", c.url);
    c.locked(&held, LEASE, Duration::ZERO, false, "lease after clear").await;
    assert_eq!(
      other.value(&other.digest("k")).await.as_deref(),
      Some(&b"kept"[..]),
      "{}",
      c.url
    );
    assert_eq!(other.len().await, 1, "{}", c.url);
    other.clear().await;
  });
}
