//! Writes that could not be applied (a full disk, an owner that refused them): which sequence
//! numbers, so that a flush fails exactly when a write it covers failed, whenever that write's
//! batch failed; and how many of each namespace, so that each function counts its own in
//! `stats().errors`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;

/// Separate failed ranges kept; beyond that the two oldest merge, so a flush may report a
/// failure for a write between them that was applied (never the reverse).
const MAX_RANGES: usize = 256;

#[derive(Default)]
pub(super) struct Failures {
  /// Failed sequence numbers as disjoint ranges `[lo, hi]`, oldest first.
  ranges: VecDeque<(u64, u64)>,
  /// Why the last failed batch failed.
  reason: String,
  /// Writes that failed, by namespace.
  by_ns: HashMap<[u8; 8], u64>,
}

impl Failures {
  /// Records that the batch of sequence numbers `lo..=hi` was not applied; `namespaces` are
  /// those of its writes, one item per write.
  pub(super) fn record(&mut self, lo: u64, hi: u64, reason: String, namespaces: impl Iterator<Item = [u8; 8]>) {
    match self.ranges.back_mut() {
      Some(last) if last.1 + 1 >= lo => last.1 = last.1.max(hi),
      _ => self.ranges.push_back((lo, hi)),
    }
    if self.ranges.len() > MAX_RANGES {
      let (lo, _) = self.ranges.pop_front().expect("more than one range");
      self.ranges.front_mut().expect("more than one range").0 = lo;
    }
    self.reason = reason;
    for ns in namespaces {
      *self.by_ns.entry(ns).or_default() += 1;
    }
  }

  /// Why a write with a sequence number in `from + 1..=to` failed, if one did.
  pub(super) fn within(&self, from: u64, to: u64) -> Option<&str> {
    self
      .ranges
      .iter()
      .rev()
      .take_while(|&&(_, hi)| hi > from)
      .any(|&(lo, _)| lo <= to)
      .then_some(self.reason.as_str())
  }

  /// Why the last failed batch failed ("" if none did).
  pub(super) fn reason(&self) -> &str {
    &self.reason
  }

  pub(super) fn of_namespace(&self, ns: [u8; 8]) -> u64 {
    self.by_ns.get(&ns).copied().unwrap_or(0)
  }
}

/// How much one handle of the store (a memoized function) was told about failed writes: the
/// writes its last flush covered, and the failures of its namespace it counted. See
/// [`DiskStore::flush_reporting`](super::DiskStore::flush_reporting) and
/// [`DiskStore::take_failures`](super::DiskStore::take_failures).
pub struct FailureCursor {
  pub(super) ns: [u8; 8],
  /// Every write up to this sequence number was covered by a flush of this handle.
  pub(super) flushed: AtomicU64,
  /// The store's count of failed batches when `counted` was last brought up to date.
  pub(super) epoch: AtomicU64,
  /// Failed writes of `ns` this handle counted.
  pub(super) counted: AtomicU64,
}

impl FailureCursor {
  pub(super) fn new(ns: [u8; 8], flushed: u64, epoch: u64, counted: u64) -> Self {
    FailureCursor {
      ns,
      flushed: AtomicU64::new(flushed),
      epoch: AtomicU64::new(epoch),
      counted: AtomicU64::new(counted),
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn a_flush_fails_exactly_when_one_of_its_writes_failed() {
    let mut f = Failures::default();
    assert_eq!(f.within(0, 100), None);
    f.record(10, 20, "full".into(), std::iter::empty());
    f.record(21, 25, "full".into(), std::iter::empty());
    f.record(40, 40, "full".into(), std::iter::empty());
    assert_eq!(f.ranges.len(), 2, "adjacent batches make one range");
    assert_eq!(f.within(0, 9), None);
    assert_eq!(f.within(0, 10), Some("full"));
    assert_eq!(f.within(9, 12), Some("full"));
    assert_eq!(
      f.within(25, 39),
      None,
      "writes after a failure and before the next are fine"
    );
    assert_eq!(f.within(24, 30), Some("full"));
    assert_eq!(f.within(39, 50), Some("full"));
    assert_eq!(f.within(40, 50), None);
  }

  #[test]
  fn many_failures_merge_into_wider_ranges_that_still_cover_every_failed_write() {
    let mut f = Failures::default();
    for i in 0..1000u64 {
      f.record(i * 10 + 1, i * 10 + 1, "x".into(), [[1; 8]].into_iter());
    }
    assert!(f.ranges.len() <= MAX_RANGES);
    for i in 0..1000u64 {
      assert!(f.within(i * 10, i * 10 + 1).is_some(), "write {} failed", i * 10 + 1);
    }
    assert_eq!(f.within(9991, 20_000), None);
    assert_eq!(f.of_namespace([1; 8]), 1000);
    assert_eq!(f.of_namespace([2; 8]), 0);
  }
}
