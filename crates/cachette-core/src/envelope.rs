//! The envelope every persisted entry is wrapped in.
//!
//! ```text
//! 0   magic        2 bytes  0xCA 0xC7
//! 2   version      1 byte   FORMAT_VERSION
//! 3   flags        1 byte   bit 0: stale_at_ms follows, bit 1: expires_ms follows; others 0
//! 4   created_ms   u64 BE   wall clock, ms since the Unix epoch
//! ..  stale_at_ms  u64 BE   only with flag bit 0: past it the value is stale (absent: never)
//! ..  expires_ms   u64 BE   only with flag bit 1: past it the value is gone (absent: never)
//! ..  check        16 bytes the digest's last 16 bytes (stores index by its first 16)
//! ..  payload      the rest, up to the checksum
//! ..  crc32        u32 BE   over every byte before it
//! ```
//! An entry with no expiry adds 32 bytes to its payload, one with both times 48. A read that
//! fails any check (length, magic, version, flags, digest, checksum) is a miss, never an error
//! and never another key's value.
//!
//! With an `integrityKey`, the payload is the value followed by a keyed MAC over the namespace,
//! the digest, this header and the value ([`crate::integrity`]); the envelope itself is the same.

use crate::key::{Digest, DIGEST_LEN, STORE_KEY_LEN};

/// Written into every entry; entries of other versions read as misses.
pub const FORMAT_VERSION: u8 = 2;
const MAGIC: [u8; 2] = [0xca, 0xc7];
const HAS_STALE: u8 = 1;
const HAS_EXPIRES: u8 = 2;
/// Digest bytes an entry repeats: those its store key does not hold.
const CHECK_LEN: usize = DIGEST_LEN - STORE_KEY_LEN;
/// Bytes an envelope adds to its payload at least (no stale or expiry time).
const MIN_OVERHEAD: usize = 4 + 8 + CHECK_LEN + 4;
/// "Never" for `stale_at_ms` and `expires_ms`.
pub const NEVER: u64 = u64::MAX;
/// The longest header (both times): what [`header_into`] may write.
pub const MAX_HEADER_LEN: usize = 12 + 16 + CHECK_LEN;

/// Timestamps of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
  pub created_ms: u64,
  pub stale_at_ms: u64,
  pub expires_ms: u64,
}

impl Times {
  /// An entry that never goes stale.
  pub fn forever(now_ms: u64) -> Self {
    Times {
      created_ms: now_ms,
      stale_at_ms: NEVER,
      expires_ms: NEVER,
    }
  }

  fn flags(&self) -> u8 {
    (if self.stale_at_ms != NEVER { HAS_STALE } else { 0 }) | (if self.expires_ms != NEVER { HAS_EXPIRES } else { 0 })
  }
}

/// Freshness of an entry at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
  Fresh,
  Stale,
  Expired,
}

impl Times {
  /// Judges the entry at `now_ms`. An entry created more than five minutes in the future
  /// (a clock that jumped back) is stale, so it gets refreshed instead of living forever.
  pub fn freshness(&self, now_ms: u64) -> Freshness {
    if now_ms >= self.expires_ms {
      Freshness::Expired
    } else if now_ms >= self.stale_at_ms || self.created_ms > now_ms.saturating_add(300_000) {
      Freshness::Stale
    } else {
      Freshness::Fresh
    }
  }
}

/// Bytes of the header (everything before the payload) of an entry with flags `flags`.
fn header_len(flags: u8) -> usize {
  let times = usize::from(flags & HAS_STALE != 0) + usize::from(flags & HAS_EXPIRES != 0);
  12 + 8 * times + CHECK_LEN
}

/// The length of the envelope of a `payload_len`-byte payload with times `times`.
pub fn sealed_len(times: Times, payload_len: usize) -> usize {
  header_len(times.flags()) + payload_len + 4
}

/// Wraps `payload` for storage.
pub fn seal(digest: &Digest, times: Times, payload: &[u8]) -> Vec<u8> {
  let mut out = vec![0u8; sealed_len(times, payload.len())];
  seal_into(digest, times, payload, &mut out);
  out
}

/// Writes the header an entry of `digest` with times `times` starts with (everything before
/// its payload) into `out`, and returns its length (at most [`MAX_HEADER_LEN`]).
///
/// # Panics
/// When `out` is shorter than that header.
pub fn header_into(digest: &Digest, times: Times, out: &mut [u8]) -> usize {
  let flags = times.flags();
  out[..2].copy_from_slice(&MAGIC);
  out[2] = FORMAT_VERSION;
  out[3] = flags;
  out[4..12].copy_from_slice(&times.created_ms.to_be_bytes());
  let mut at = 12;
  for (flag, t) in [(HAS_STALE, times.stale_at_ms), (HAS_EXPIRES, times.expires_ms)] {
    if flags & flag != 0 {
      out[at..at + 8].copy_from_slice(&t.to_be_bytes());
      at += 8;
    }
  }
  out[at..at + CHECK_LEN].copy_from_slice(&digest[STORE_KEY_LEN..]);
  at + CHECK_LEN
}

/// Wraps `payload` for storage into `out`, which is [`sealed_len`] bytes long.
///
/// # Panics
/// When `out` has another length.
pub fn seal_into(digest: &Digest, times: Times, payload: &[u8], out: &mut [u8]) {
  assert_eq!(
    out.len(),
    sealed_len(times, payload.len()),
    "envelope buffer of the wrong length"
  );
  let at = header_into(digest, times, out);
  let end = at + payload.len();
  out[at..end].copy_from_slice(payload);
  let crc = crc32fast::hash(&out[..end]);
  out[end..].copy_from_slice(&crc.to_be_bytes());
}

fn u64_at(b: &[u8], at: usize) -> u64 {
  let mut x = [0u8; 8];
  x.copy_from_slice(&b[at..at + 8]);
  u64::from_be_bytes(x)
}

/// The times of an entry and the length of its header, without checking the digest or
/// checksum; `None` when it is too short, foreign or of another version.
fn parse(bytes: &[u8]) -> Option<(Times, usize)> {
  if bytes.len() < MIN_OVERHEAD || bytes[..2] != MAGIC || bytes[2] != FORMAT_VERSION {
    return None;
  }
  let flags = bytes[3];
  if flags & !(HAS_STALE | HAS_EXPIRES) != 0 {
    return None;
  }
  let header = header_len(flags);
  if bytes.len() < header + 4 {
    return None;
  }
  let mut at = 12;
  let mut next = |flag: u8| {
    if flags & flag == 0 {
      return NEVER;
    }
    at += 8;
    u64_at(bytes, at - 8)
  };
  let stale_at_ms = next(HAS_STALE);
  let expires_ms = next(HAS_EXPIRES);
  let times = Times {
    created_ms: u64_at(bytes, 4),
    stale_at_ms,
    expires_ms,
  };
  Some((times, header))
}

/// Reads only the timestamps, without checking the digest or checksum (compaction filter).
pub fn peek_times(bytes: &[u8]) -> Option<Times> {
  parse(bytes).map(|(times, _)| times)
}

/// Checks an envelope read for `digest` and returns its times and the byte range of its
/// payload, or `None` when it is truncated, foreign, of another version, or corrupted.
pub fn open_range(digest: &Digest, bytes: &[u8]) -> Option<(Times, std::ops::Range<usize>)> {
  let (times, header) = parse(bytes)?;
  if bytes[header - CHECK_LEN..header] != digest[STORE_KEY_LEN..] {
    return None;
  }
  let end = bytes.len() - 4;
  let crc = u32::from_be_bytes([bytes[end], bytes[end + 1], bytes[end + 2], bytes[end + 3]]);
  if crc32fast::hash(&bytes[..end]) != crc {
    return None;
  }
  Some((times, header..end))
}

/// [`open_range`], with the payload as a slice.
pub fn open<'a>(digest: &Digest, bytes: &'a [u8]) -> Option<(Times, &'a [u8])> {
  open_range(digest, bytes).map(|(times, range)| (times, &bytes[range]))
}

#[cfg(test)]
mod tests {
  use super::*;

  const D: Digest = [7u8; 32];

  #[test]
  fn round_trips_payload_and_times() {
    let t = Times {
      created_ms: 5,
      stale_at_ms: 10,
      expires_ms: 20,
    };
    let sealed = seal(&D, t, b"hello");
    let (times, payload) = open(&D, &sealed).unwrap();
    assert_eq!(times, t);
    assert_eq!(payload, b"hello");
  }

  #[test]
  fn any_flipped_bit_is_a_miss() {
    let sealed = seal(&D, Times::forever(1), b"payload bytes");
    for i in 0..sealed.len() {
      for bit in 0..8 {
        let mut bad = sealed.clone();
        bad[i] ^= 1 << bit;
        assert!(open(&D, &bad).is_none(), "flip at byte {i} bit {bit} was accepted");
      }
    }
  }

  #[test]
  fn truncated_foreign_and_future_versions_are_misses() {
    let sealed = seal(&D, Times::forever(1), b"x");
    for n in 0..sealed.len() {
      assert!(open(&D, &sealed[..n]).is_none());
    }
    assert!(open(&[8u8; 32], &sealed).is_none(), "another key's entry was served");
    let mut next = sealed.clone();
    next[2] = FORMAT_VERSION + 1;
    assert!(open(&D, &next).is_none());
  }

  #[test]
  fn only_the_times_an_entry_has_are_written() {
    let payload = b"twelve bytes";
    for (stale_at_ms, expires_ms, overhead) in [(NEVER, NEVER, 32), (10, NEVER, 40), (NEVER, 20, 40), (10, 20, 48)] {
      let t = Times {
        created_ms: 5,
        stale_at_ms,
        expires_ms,
      };
      let sealed = seal(&D, t, payload);
      assert_eq!(sealed.len(), payload.len() + overhead);
      assert_eq!(sealed_len(t, payload.len()), sealed.len());
      let (times, range) = open_range(&D, &sealed).unwrap();
      assert_eq!(times, t);
      assert_eq!(&sealed[range.clone()], payload);
      assert_eq!(peek_times(&sealed), Some(t));
      let mut header = [0u8; MAX_HEADER_LEN];
      let n = header_into(&D, t, &mut header);
      assert_eq!(
        &header[..n],
        &sealed[..range.start],
        "header_into writes the sealed header"
      );
    }
    let empty = seal(&D, Times::forever(1), b"");
    assert_eq!(open(&D, &empty).map(|(_, p)| p.len()), Some(0));
  }

  #[test]
  fn freshness_follows_stale_and_expiry_times() {
    let t = Times {
      created_ms: 100,
      stale_at_ms: 200,
      expires_ms: 300,
    };
    assert_eq!(t.freshness(150), Freshness::Fresh);
    assert_eq!(t.freshness(200), Freshness::Stale);
    assert_eq!(t.freshness(300), Freshness::Expired);
    let future = Times {
      created_ms: 10_000_000,
      stale_at_ms: NEVER,
      expires_ms: NEVER,
    };
    assert_eq!(future.freshness(1_000), Freshness::Stale);
  }

  /// Random and damaged envelopes through every reader of raw bytes (the chaos suite's T16(c)
  /// drives the same code through the addon with more cases): no panic, payload ranges inside
  /// the input, and the compaction filter's `peek_times` agreeing with `open` on what it accepts.
  /// `CACHETTE_FUZZ_CASES` sets the count.
  #[test]
  fn random_and_damaged_envelopes_never_panic_nor_point_outside_their_bytes() {
    let cases: u64 = std::env::var("CACHETTE_FUZZ_CASES")
      .ok()
      .and_then(|n| n.parse().ok())
      .unwrap_or(20_000);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      x
    };
    let times = [
      Times::forever(1),
      Times {
        created_ms: 5,
        stale_at_ms: 10,
        expires_ms: 20,
      },
    ];
    for i in 0..cases {
      let len = (next() % 96) as usize;
      let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
      if i % 2 == 0 {
        bytes = seal(&D, times[(i / 2 % 2) as usize], &bytes);
        for _ in 0..1 + next() % 3 {
          let at = (next() as usize) % bytes.len();
          bytes[at] ^= 1 << (next() % 8);
        }
        if i % 8 == 0 {
          bytes.truncate((next() as usize) % bytes.len());
        }
      } else if i % 4 == 1 && bytes.len() >= 4 {
        bytes[..4].copy_from_slice(&[0xca, 0xc7, FORMAT_VERSION, (next() % 4) as u8]);
      }
      if let Some((t, range)) = open_range(&D, &bytes) {
        assert!(range.start <= range.end && range.end <= bytes.len(), "case {i}");
        assert_eq!(peek_times(&bytes), Some(t), "case {i}");
      }
    }
  }
}
