//! The 256-bit digest of a call's arguments, keyed by its namespace.
//!
//! The arguments arrive already encoded in the canonical, type-tagged format of
//! `docs/key-encoding.md` (the JavaScript layer walks them: it sees Maps, Sets and prototypes for
//! free). Two argument lists get the same digest only if they are equal by value under the rules
//! there; `docs/key-vectors.tsv` lists encodings and digests both layers are tested against.

/// Digest length in bytes (BLAKE3, 256 bits). Stores index by the first [`STORE_KEY_LEN`] bytes
/// and keep the other 16 in each entry, so a truncated-prefix collision is still detected on read.
pub const DIGEST_LEN: usize = 32;
/// Bytes of the digest used as the storage key.
pub const STORE_KEY_LEN: usize = 16;
/// BLAKE3 derive-key context: changing it changes every key (format version 1).
pub const KEY_CONTEXT: &str = "cachette 2026 canonical argument key v1";

/// A 256-bit key digest.
pub type Digest = [u8; DIGEST_LEN];

/// Hashes a digest, or a store key that ends with a digest's first 16 bytes, by 8 of its last 16
/// bytes: digests are uniform already, so SipHash would only add cost to every map lookup.
#[derive(Default)]
pub struct DigestHasher(u64);

/// Builds [`DigestHasher`]s, for maps keyed by digests.
pub type DigestHashing = std::hash::BuildHasherDefault<DigestHasher>;

impl std::hash::Hasher for DigestHasher {
  fn finish(&self) -> u64 {
    self.0
  }
  fn write(&mut self, bytes: &[u8]) {
    // An array is hashed as its length, then its bytes: the length mixes in a constant.
    let mut b = [0u8; 8];
    let from = bytes.len().saturating_sub(16);
    let take = &bytes[from..bytes.len().min(from + 8)];
    b[..take.len()].copy_from_slice(take);
    self.0 ^= u64::from_le_bytes(b);
  }
}

/// A namespace with its derived hashing key, built once per memoized function.
#[derive(Clone)]
pub struct Keyspace {
  key: [u8; 32],
  id: [u8; 8],
}

impl Keyspace {
  /// Prepares hashing for `namespace`: the digest of arguments is BLAKE3 keyed by
  /// `derive_key(KEY_CONTEXT, namespace)`, so the namespace is mixed into every digest.
  /// `namespace` is the name's WTF-8 bytes (UTF-8, with a lone surrogate as its own three
  /// bytes), so every JS string names its own namespace: `'\u{D800}'` is not `'\u{FFFD}'`.
  pub fn new(namespace: impl AsRef<[u8]>) -> Self {
    let namespace = namespace.as_ref();
    let key = blake3::derive_key(KEY_CONTEXT, namespace);
    let ns_digest = blake3::derive_key("cachette 2026 namespace id v1", namespace);
    let mut id = [0u8; 8];
    id.copy_from_slice(&ns_digest[..8]);
    Keyspace { key, id }
  }

  /// An 8-byte identifier of the namespace; stores prefix keys with it so `clear()` is a range delete.
  pub fn id(&self) -> [u8; 8] {
    self.id
  }

  /// Digest of encoded arguments (`docs/key-encoding.md`).
  pub fn digest_encoded(&self, encoded: &[u8]) -> Digest {
    *blake3::keyed_hash(&self.key, encoded).as_bytes()
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  /// The vectors of `docs/key-vectors.tsv`: namespace, the arguments (as JavaScript), their
  /// encoding and their digest. The JavaScript encoder is tested against the same file.
  const VECTORS: &str = include_str!("../../../docs/key-vectors.tsv");

  fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
      .step_by(2)
      .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
      .collect()
  }

  fn vectors() -> Vec<(&'static str, &'static str, Vec<u8>, Vec<u8>)> {
    VECTORS
      .lines()
      .filter(|l| !l.starts_with('#') && !l.is_empty())
      .map(|l| {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(f.len(), 4, "{l}");
        (f[0], f[1], unhex(f[2]), unhex(f[3]))
      })
      .collect()
  }

  #[test]
  fn every_key_vector_hashes_to_its_stated_digest() {
    let v = vectors();
    assert!(v.len() >= 10);
    for (ns, args, encoding, digest) in v {
      assert_eq!(
        Keyspace::new(ns).digest_encoded(&encoding).to_vec(),
        digest,
        "{ns} {args}"
      );
    }
  }

  #[test]
  fn the_namespace_is_mixed_into_every_digest_and_id() {
    let v = vectors();
    let (users, orders) = (
      v.iter().find(|x| x.0 == "users").expect("users"),
      v.iter().find(|x| x.0 == "orders").expect("orders"),
    );
    assert_eq!(users.2, orders.2, "one encoding");
    assert_ne!(users.3, orders.3, "two digests");
    assert_ne!(Keyspace::new("users").id(), Keyspace::new("orders").id());
    // A namespace boundary cannot be spliced: ("ab", "c") is not ("a", "bc").
    assert_ne!(
      Keyspace::new("ab").digest_encoded(b"c"),
      Keyspace::new("a").digest_encoded(b"bc")
    );
  }

  #[test]
  fn namespaces_that_differ_only_in_lone_surrogates_are_distinct() {
    // WTF-8 of '\u{D800}', '\u{DBFF}' and the UTF-8 of '\u{FFFD}' (what a lossy conversion gives).
    let names: [&[u8]; 3] = [&[0xED, 0xA0, 0x80], &[0xED, 0xAF, 0xBF], "\u{FFFD}".as_bytes()];
    for (i, a) in names.iter().enumerate() {
      for b in &names[i + 1..] {
        assert_ne!(Keyspace::new(a).id(), Keyspace::new(b).id());
        assert_ne!(
          Keyspace::new(a).digest_encoded(b"x"),
          Keyspace::new(b).digest_encoded(b"x")
        );
      }
    }
  }

  #[test]
  fn the_docs_example_is_the_first_vector() {
    let (ns, args, encoding, digest) = vectors().remove(0);
    assert_eq!((ns, args), ("docs", "[1, 'a']"));
    // docs/key-encoding.md: count 2, number 1.0, string "a" as one UTF-16 unit.
    assert_eq!(encoding, unhex("00000002043ff000000000000006000000010061"));
    assert_eq!(
      digest,
      unhex("1b9dff7e42daab98ce76290dca803f2d7c570a351a2e502583a6dbb6b647dd17")
    );
  }
}
