//! The envelope every persisted entry is wrapped in.
//!
//! ```text
//! 0   magic        2 bytes  0xCA 0xC7
//! 2   version      1 byte   FORMAT_VERSION
//! 3   flags        1 byte   reserved, 0
//! 4   created_ms   u64 BE   wall clock, ms since the Unix epoch
//! 12  stale_at_ms  u64 BE   past it the value is stale (u64::MAX: never)
//! 20  expires_ms   u64 BE   past it the value is gone (u64::MAX: never)
//! 28  digest       32 bytes the full key digest, compared on read
//! 60  payload_len  u32 BE
//! 64  payload
//! ..  crc32        u32 BE   over every byte before it
//! ```
//! A read that fails any check (length, magic, version, digest, checksum) is a miss, never an
//! error and never another key's value.

use crate::key::{Digest, DIGEST_LEN};

/// Written into every entry; entries of other versions read as misses.
pub const FORMAT_VERSION: u8 = 1;
const MAGIC: [u8; 2] = [0xca, 0xc7];
/// Bytes before the payload.
pub const HEADER_LEN: usize = 64;
/// Bytes an envelope adds to its payload.
pub const OVERHEAD: usize = HEADER_LEN + 4;
/// "Never" for `stale_at_ms` and `expires_ms`.
pub const NEVER: u64 = u64::MAX;

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

/// Wraps `payload` for storage.
pub fn seal(digest: &Digest, times: Times, payload: &[u8]) -> Vec<u8> {
  let mut out = vec![0u8; OVERHEAD + payload.len()];
  seal_into(digest, times, payload, &mut out);
  out
}

/// Wraps `payload` for storage into `out`, which is `OVERHEAD + payload.len()` bytes long.
///
/// # Panics
/// When `out` has another length.
pub fn seal_into(digest: &Digest, times: Times, payload: &[u8], out: &mut [u8]) {
  assert_eq!(
    out.len(),
    OVERHEAD + payload.len(),
    "envelope buffer of the wrong length"
  );
  let end = HEADER_LEN + payload.len();
  out[..2].copy_from_slice(&MAGIC);
  out[2] = FORMAT_VERSION;
  out[3] = 0;
  out[4..12].copy_from_slice(&times.created_ms.to_be_bytes());
  out[12..20].copy_from_slice(&times.stale_at_ms.to_be_bytes());
  out[20..28].copy_from_slice(&times.expires_ms.to_be_bytes());
  out[28..28 + DIGEST_LEN].copy_from_slice(digest);
  out[60..HEADER_LEN].copy_from_slice(&(payload.len() as u32).to_be_bytes());
  out[HEADER_LEN..end].copy_from_slice(payload);
  let crc = crc32fast::hash(&out[..end]);
  out[end..].copy_from_slice(&crc.to_be_bytes());
}

fn u64_at(b: &[u8], at: usize) -> u64 {
  let mut x = [0u8; 8];
  x.copy_from_slice(&b[at..at + 8]);
  u64::from_be_bytes(x)
}

/// Reads only the timestamps, without checking the digest or checksum (compaction filter).
pub fn peek_times(bytes: &[u8]) -> Option<Times> {
  if bytes.len() < OVERHEAD || bytes[..2] != MAGIC || bytes[2] != FORMAT_VERSION {
    return None;
  }
  Some(Times {
    created_ms: u64_at(bytes, 4),
    stale_at_ms: u64_at(bytes, 12),
    expires_ms: u64_at(bytes, 20),
  })
}

/// Checks an envelope read for `digest` and returns its times and payload,
/// or `None` when it is truncated, foreign, of another version, or corrupted.
pub fn open<'a>(digest: &Digest, bytes: &'a [u8]) -> Option<(Times, &'a [u8])> {
  let times = peek_times(bytes)?;
  if bytes[28..28 + DIGEST_LEN] != digest[..] {
    return None;
  }
  let len = u32::from_be_bytes([bytes[60], bytes[61], bytes[62], bytes[63]]) as usize;
  if len != bytes.len() - OVERHEAD {
    return None;
  }
  let body = &bytes[..HEADER_LEN + len];
  let crc = u32::from_be_bytes([
    bytes[HEADER_LEN + len],
    bytes[HEADER_LEN + len + 1],
    bytes[HEADER_LEN + len + 2],
    bytes[HEADER_LEN + len + 3],
  ]);
  if crc32fast::hash(body) != crc {
    return None;
  }
  Some((times, &bytes[HEADER_LEN..HEADER_LEN + len]))
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
    let mut v2 = sealed.clone();
    v2[2] = FORMAT_VERSION + 1;
    assert!(open(&D, &v2).is_none());
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
}
