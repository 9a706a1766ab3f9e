//! The names of one cache key's Redis keys and of the message that announces it settled. Every key
//! of a namespace carries the namespace's hash tag, so each script touches one Redis Cluster slot.
//!
//! For prefix `P` and namespace id `N` (16 hex digits), key `K` (the first 128 bits of the
//! digest, hex) and lease token `T` (hex):
//!
//! | key | type | what |
//! |---|---|---|
//! | `P{N}:v:K` | string | the entry envelope, with `PX` = its expiry |
//! | `P{N}:l:K` | string | the lease: holder token, with `PX` = lease length |
//! | `P{N}:e:T` | string | the serialized error of the holder `T` that failed, kept one lease long |
//! | `P{N}:i` | sorted set | the namespace's entry keys, scored by expiry (for `clear()` and `size`) |
//! | `P{N}:L` | set | the namespace's lease keys (for `clearLocks()`) |
//!
//! The message announcing that `K` of `N` settled is `NK` (hex).

use super::super::{key_part, Token};
use crate::key::Digest;

/// The prefix of every key of namespace `ns`: `P{N}:`.
pub(super) fn base(prefix: &str, ns: [u8; 8]) -> String {
  format!("{prefix}{{{}}}:", hex(&ns))
}

/// The Redis keys of one cache key, and the message that announces it settled.
pub(super) struct Names {
  base: String,
  pub(super) key: [u8; 16],
  pub(super) value: String,
  pub(super) lease: String,
  pub(super) index: String,
  pub(super) leases: String,
  pub(super) message: String,
}

impl Names {
  pub(super) fn new(prefix: &str, ns: [u8; 8], digest: &Digest) -> Names {
    let base = base(prefix, ns);
    let key = key_part(digest);
    let k = hex(&key);
    Names {
      value: format!("{base}v:{k}"),
      lease: format!("{base}l:{k}"),
      index: format!("{base}i"),
      leases: format!("{base}L"),
      message: format!("{}{k}", hex(&ns)),
      base,
      key,
    }
  }

  /// The key of the error that holder `token` failed with (`None`: a key that never exists).
  pub(super) fn error(&self, token: Option<&Token>) -> String {
    format!("{}e:{}", self.base, token.map_or_else(|| "-".to_owned(), |t| hex(t)))
  }
}

/// The namespace and key a settle message names; `None` for any other message.
pub(super) fn parse_message(p: &[u8]) -> Option<([u8; 8], [u8; 16])> {
  if p.len() != 48 {
    return None;
  }
  Some((unhex::<8>(&p[..16])?, unhex::<16>(&p[16..])?))
}

/// The index score of an entry: its expiry.
pub(super) fn score(expires_ms: u64) -> String {
  if expires_ms == crate::envelope::NEVER {
    "+inf".into()
  } else {
    expires_ms.to_string()
  }
}

pub(super) fn hex(bytes: &[u8]) -> String {
  use std::fmt::Write;
  bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
    let _ = write!(s, "{b:02x}");
    s
  })
}

fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
  if s.len() != N * 2 {
    return None;
  }
  let mut out = [0u8; N];
  for (i, o) in out.iter_mut().enumerate() {
    let d = |c: u8| (c as char).to_digit(16);
    *o = (d(s[2 * i])? * 16 + d(s[2 * i + 1])?) as u8;
  }
  Some(out)
}
