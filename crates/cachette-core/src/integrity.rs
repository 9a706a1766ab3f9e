//! Keyed MACs on persisted entries: the `integrityKey` option of the disk, Redis and SQL stores.
//!
//! With a key, the payload of every entry written is the value followed by a [`TAG_LEN`]-byte
//! tag: BLAKE3 in keyed mode, keyed by `derive_key(CONTEXT, integrityKey)`, over
//!
//! ```text
//! namespace id (8 bytes) ‖ digest (32 bytes) ‖ the entry's envelope header ‖ value
//! ```
//!
//! The header is the one [`envelope::header_into`] writes (format version, flags, created, stale
//! and expiry times, digest check), so the tag binds the value to its key, its namespace and its
//! times. A read checks the tag before the value is used: an entry whose tag is missing or wrong
//! is a miss, counted by the store, never an error. That rejects an entry forged or altered by a
//! writer of the shared server or directory who lacks the key, one copied from another key or
//! namespace (a swap, or a replay under another key), one whose times were moved, and one
//! written without the key.
//!
//! It does not hide values (no confidentiality: whoever reads the store reads them), and an
//! entry of the same key written earlier with the key can be put back until it expires.
//!
//! A [`Checker`] remembers the entries it verified or signed lately (up to [`MEMO_BYTES`]): a
//! read of bytes identical to those, for the same namespace, key and times, skips the MAC, which
//! on a 1 KiB value costs about as much as the rest of a disk hit. Only identical bytes are
//! spared: anything else a store hands back is verified.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::envelope::{self, Times, MAX_HEADER_LEN};
use crate::key::{Digest, DigestHashing};

/// Bytes of the tag after the value: the whole BLAKE3 output.
pub const TAG_LEN: usize = 32;
/// BLAKE3 derive-key context of the MAC key: changing it invalidates every tagged entry.
pub const CONTEXT: &str = "cachette 2026 entry integrity v1";
/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// The MAC key of one `integrityKey`.
#[derive(Clone)]
pub struct IntegrityKey {
  key: [u8; 32],
}

impl std::fmt::Debug for IntegrityKey {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.write_str("IntegrityKey(..)")
  }
}

impl IntegrityKey {
  /// Derives the MAC key from the user's secret (`blake3::derive_key`).
  ///
  /// # Errors
  /// `InvalidConfig` when the secret is shorter than [`MIN_SECRET_LEN`] bytes.
  pub fn derive(secret: &[u8]) -> crate::CoreResult<Self> {
    if secret.len() < MIN_SECRET_LEN {
      return Err(crate::CoreError::InvalidConfig {
        reason: format!("integrityKey must be at least {MIN_SECRET_LEN} bytes"),
      });
    }
    Ok(IntegrityKey {
      key: blake3::derive_key(CONTEXT, secret),
    })
  }

  fn mac(&self, ns: [u8; 8], digest: &Digest, times: Times, value: &[u8]) -> blake3::Hash {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = envelope::header_into(digest, times, &mut header);
    let mut h = blake3::Hasher::new_keyed(&self.key);
    h.update(&ns).update(digest).update(&header[..n]).update(value);
    h.finalize()
  }

  /// The payload to store for `value`: the value, then its tag.
  pub fn sign(&self, ns: [u8; 8], digest: &Digest, times: Times, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + TAG_LEN);
    out.extend_from_slice(value);
    out.extend_from_slice(self.mac(ns, digest, times, value).as_bytes());
    out
  }

  /// The value of a payload read for (`ns`, `digest`) with times `times`, or `None` when its tag
  /// is missing or wrong. The tags are compared in constant time.
  pub fn verify<'a>(&self, ns: [u8; 8], digest: &Digest, times: Times, payload: &'a [u8]) -> Option<&'a [u8]> {
    let cut = payload.len().checked_sub(TAG_LEN)?;
    let (value, tag) = payload.split_at(cut);
    let tag: [u8; TAG_LEN] = tag.try_into().ok()?;
    (self.mac(ns, digest, times, value) == blake3::Hash::from_bytes(tag)).then_some(value)
  }
}

/// Bytes of verified entries a [`Checker`] remembers; when they would exceed it, it forgets
/// them all and starts again (a cheaper bookkeeping than an LRU order on every hit).
pub const MEMO_BYTES: usize = 4 << 20;
/// Entries larger than this are verified on every read (remembering them would cost more memory
/// than the MAC costs time).
const MEMO_ENTRY_MAX: usize = 64 << 10;

/// An entry known good: its namespace, times and payload (value ‖ tag).
struct Known {
  ns: [u8; 8],
  times: Times,
  payload: Box<[u8]>,
}

/// Entries known good, by digest.
#[derive(Default)]
struct Memo {
  known: HashMap<Digest, Known, DigestHashing>,
  bytes: usize,
}

/// Signs and checks the entries of one namespace with an [`IntegrityKey`], remembering the
/// entries it verified lately so that reading them again costs a comparison, not a MAC.
pub struct Checker {
  key: IntegrityKey,
  memo: Mutex<Memo>,
}

impl Checker {
  pub fn new(key: IntegrityKey) -> Self {
    Checker {
      key,
      memo: Mutex::default(),
    }
  }

  fn remember(&self, ns: [u8; 8], digest: &Digest, times: Times, payload: &[u8]) {
    if payload.len() > MEMO_ENTRY_MAX {
      return;
    }
    let mut m = self.memo.lock();
    if m.bytes + payload.len() > MEMO_BYTES {
      *m = Memo::default();
    }
    m.bytes += payload.len();
    let known = Known {
      ns,
      times,
      payload: payload.into(),
    };
    if let Some(old) = m.known.insert(*digest, known) {
      m.bytes -= old.payload.len();
    }
  }

  /// [`IntegrityKey::sign`]; the entry is remembered as good.
  pub fn sign(&self, ns: [u8; 8], digest: &Digest, times: Times, value: &[u8]) -> Vec<u8> {
    let payload = self.key.sign(ns, digest, times, value);
    self.remember(ns, digest, times, &payload);
    payload
  }

  /// [`IntegrityKey::verify`], without the MAC for the very bytes verified or signed lately.
  pub fn verify<'a>(&self, ns: [u8; 8], digest: &Digest, times: Times, payload: &'a [u8]) -> Option<&'a [u8]> {
    let known = matches!(
      self.memo.lock().known.get(digest),
      Some(k) if k.ns == ns && k.times == times && *k.payload == *payload
    );
    if known {
      return Some(&payload[..payload.len() - TAG_LEN]);
    }
    let value = self.key.verify(ns, digest, times, payload)?;
    self.remember(ns, digest, times, payload);
    Some(value)
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::envelope::NEVER;

  const NS: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
  const D: Digest = [9u8; 32];
  const T: Times = Times {
    created_ms: 1_000,
    stale_at_ms: 2_000,
    expires_ms: 3_000,
  };

  fn key(secret: &str) -> IntegrityKey {
    IntegrityKey::derive(secret.as_bytes()).unwrap()
  }

  #[test]
  fn a_signed_value_verifies_under_its_own_key_namespace_digest_and_times() {
    let k = key("a secret of at least thirty-two bytes");
    let signed = k.sign(NS, &D, T, b"value");
    assert_eq!(signed.len(), 5 + TAG_LEN);
    assert_eq!(k.verify(NS, &D, T, &signed), Some(&b"value"[..]));
    let empty = k.sign(NS, &D, T, b"");
    assert_eq!(k.verify(NS, &D, T, &empty), Some(&b""[..]));
  }

  #[test]
  fn a_tag_binds_the_value_to_its_key_namespace_and_times() {
    let k = key("a secret of at least thirty-two bytes");
    let signed = k.sign(NS, &D, T, b"value");
    let mut other_digest = D;
    other_digest[0] ^= 1;
    assert_eq!(k.verify(NS, &other_digest, T, &signed), None, "swapped to another key");
    let mut tail = D;
    tail[31] ^= 1;
    assert_eq!(k.verify(NS, &tail, T, &signed), None, "another digest tail");
    assert_eq!(k.verify([0; 8], &D, T, &signed), None, "another namespace");
    for moved in [
      Times { created_ms: 999, ..T },
      Times {
        stale_at_ms: NEVER,
        ..T
      },
      Times { expires_ms: 9_000, ..T },
    ] {
      assert_eq!(k.verify(NS, &D, moved, &signed), None, "times moved: {moved:?}");
    }
  }

  #[test]
  fn forged_altered_truncated_and_unkeyed_payloads_are_rejected() {
    let k = key("a secret of at least thirty-two bytes");
    let signed = k.sign(NS, &D, T, b"the value");
    for i in 0..signed.len() {
      let mut bad = signed.clone();
      bad[i] ^= 0x40;
      assert_eq!(k.verify(NS, &D, T, &bad), None, "byte {i} altered");
    }
    for n in 0..signed.len() {
      assert_eq!(k.verify(NS, &D, T, &signed[..n]), None, "truncated to {n}");
    }
    assert_eq!(k.verify(NS, &D, T, b"the value"), None, "written without the key");
    let forged = key("another secret, also thirty-two bytes").sign(NS, &D, T, b"the value");
    assert_eq!(k.verify(NS, &D, T, &forged), None, "signed with another key");
  }

  #[test]
  fn a_secret_shorter_than_32_bytes_is_refused() {
    assert!(IntegrityKey::derive(&[7u8; 31]).is_err());
    assert!(IntegrityKey::derive(&[7u8; 32]).is_ok());
    assert_eq!(
      format!("{:?}", key("a secret of at least thirty-two bytes")),
      "IntegrityKey(..)"
    );
  }

  #[test]
  fn a_checker_spares_the_mac_only_for_the_very_bytes_it_verified() {
    let c = Checker::new(key("a secret of at least thirty-two bytes"));
    let signed = c.sign(NS, &D, T, b"value");
    assert_eq!(
      c.verify(NS, &D, T, &signed),
      Some(&b"value"[..]),
      "remembered when signed"
    );
    let mut altered = signed.clone();
    altered[1] ^= 1;
    assert_eq!(c.verify(NS, &D, T, &altered), None, "other bytes are verified");
    assert_eq!(c.verify([0; 8], &D, T, &signed), None, "another namespace is verified");
    assert_eq!(
      c.verify(NS, &D, Times { created_ms: 1, ..T }, &signed),
      None,
      "other times are verified"
    );
    assert_eq!(c.verify(NS, &D, T, &signed[..4]), None);
    // Read fresh from a store, by a checker that did not sign it: verified, then remembered.
    let other = Checker::new(key("a secret of at least thirty-two bytes"));
    assert_eq!(other.verify(NS, &D, T, &signed), Some(&b"value"[..]));
    assert_eq!(other.verify(NS, &D, T, &signed), Some(&b"value"[..]));
    assert_eq!(other.verify(NS, &D, T, &altered), None);
  }

  #[test]
  fn a_full_memo_starts_again_and_still_verifies() {
    let c = Checker::new(key("a secret of at least thirty-two bytes"));
    let value = vec![1u8; 60 << 10];
    let mut digests = Vec::new();
    for i in 0..(MEMO_BYTES / value.len() + 8) {
      let mut d = D;
      d[..8].copy_from_slice(&(i as u64).to_le_bytes());
      let signed = c.sign(NS, &d, T, &value);
      assert_eq!(c.verify(NS, &d, T, &signed).map(<[u8]>::len), Some(value.len()));
      digests.push((d, signed));
    }
    assert!(c.memo.lock().bytes <= MEMO_BYTES);
    for (d, signed) in &digests {
      assert_eq!(
        c.verify(NS, d, T, signed).map(<[u8]>::len),
        Some(value.len()),
        "forgotten ones verify again"
      );
    }
  }
}
