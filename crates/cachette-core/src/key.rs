//! Canonical, type-tagged encoding of call arguments and their 256-bit digest.
//!
//! The byte format is specified in `docs/key-encoding.md`; any language that follows it
//! computes the same digest. Two argument lists get the same digest only if they are equal
//! by value under the rules there: look-alikes such as `NaN`/`null`, `1n`/`1`, `'1'`/`1`,
//! `undefined`/`null`, `Map`/`{}`, or a lone surrogate and U+FFFD, never share a key.

use crate::error::{CoreError, CoreResult};

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

/// Subtypes of binary arguments; a `Uint8Array` and a `Buffer` with the same bytes are distinct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BytesKind {
  Buffer = 0,
  ArrayBuffer = 1,
  Int8Array = 2,
  Uint8Array = 3,
  Uint8ClampedArray = 4,
  Int16Array = 5,
  Uint16Array = 6,
  Int32Array = 7,
  Uint32Array = 8,
  Float32Array = 9,
  Float64Array = 10,
  BigInt64Array = 11,
  BigUint64Array = 12,
  DataView = 13,
  Float16Array = 14,
}

/// The value model of a key. Strings are UTF-16 code units, exactly as JavaScript holds them.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyValue {
  Undefined,
  Null,
  Bool(bool),
  Number(f64),
  /// Sign (true = negative) and big-endian magnitude without leading zero bytes.
  BigInt {
    negative: bool,
    magnitude: Vec<u8>,
  },
  String(Vec<u16>),
  /// `None` marks an array hole, distinct from `undefined`.
  Array(Vec<Option<KeyValue>>),
  /// Own enumerable string-keyed properties, in any order: encoding sorts them.
  Object(Vec<(Vec<u16>, KeyValue)>),
  Date(f64),
  /// Entries in insertion order.
  Map(Vec<(KeyValue, KeyValue)>),
  /// Values in insertion order.
  Set(Vec<KeyValue>),
  Bytes {
    kind: BytesKind,
    bytes: Vec<u8>,
  },
  RegExp {
    source: Vec<u16>,
    flags: Vec<u16>,
  },
}

mod tag {
  pub const UNDEFINED: u8 = 0x00;
  pub const NULL: u8 = 0x01;
  pub const FALSE: u8 = 0x02;
  pub const TRUE: u8 = 0x03;
  pub const NUMBER: u8 = 0x04;
  pub const BIGINT: u8 = 0x05;
  pub const STRING: u8 = 0x06;
  pub const ARRAY: u8 = 0x07;
  pub const OBJECT: u8 = 0x08;
  pub const DATE: u8 = 0x09;
  pub const MAP: u8 = 0x0a;
  pub const SET: u8 = 0x0b;
  pub const BYTES: u8 = 0x0c;
  pub const REGEXP: u8 = 0x0d;
  pub const HOLE: u8 = 0x0e;
}

/// The one NaN bit pattern every NaN is written as.
const CANONICAL_NAN: u64 = 0x7ff8_0000_0000_0000;

fn put_len(out: &mut Vec<u8>, len: usize) -> CoreResult<()> {
  let len = u32::try_from(len).map_err(|_| CoreError::UnkeyableArgument {
    path: "args".into(),
    reason: "a string, array or collection is longer than 2^32-1".into(),
  })?;
  out.extend_from_slice(&len.to_be_bytes());
  Ok(())
}

fn put_f64(out: &mut Vec<u8>, x: f64) {
  let bits = if x.is_nan() { CANONICAL_NAN } else { x.to_bits() };
  out.extend_from_slice(&bits.to_be_bytes());
}

fn put_utf16(out: &mut Vec<u8>, s: &[u16]) -> CoreResult<()> {
  put_len(out, s.len())?;
  out.reserve(s.len() * 2);
  for unit in s {
    out.extend_from_slice(&unit.to_be_bytes());
  }
  Ok(())
}

impl KeyValue {
  /// Builds a string value from Rust text (tests and custom keys).
  pub fn str(s: &str) -> Self {
    KeyValue::String(s.encode_utf16().collect())
  }

  /// Appends the canonical encoding of this value to `out`.
  ///
  /// # Errors
  /// `UnkeyableArgument` when a length does not fit in 32 bits.
  pub fn encode(&self, out: &mut Vec<u8>) -> CoreResult<()> {
    match self {
      KeyValue::Undefined => out.push(tag::UNDEFINED),
      KeyValue::Null => out.push(tag::NULL),
      KeyValue::Bool(false) => out.push(tag::FALSE),
      KeyValue::Bool(true) => out.push(tag::TRUE),
      KeyValue::Number(x) => {
        out.push(tag::NUMBER);
        put_f64(out, *x);
      }
      KeyValue::BigInt { negative, magnitude } => {
        let start = magnitude.iter().position(|b| *b != 0).unwrap_or(magnitude.len());
        let magnitude = &magnitude[start..];
        out.push(tag::BIGINT);
        // Zero has one encoding, whatever sign it was given.
        out.push(u8::from(*negative && !magnitude.is_empty()));
        put_len(out, magnitude.len())?;
        out.extend_from_slice(magnitude);
      }
      KeyValue::String(s) => {
        out.push(tag::STRING);
        put_utf16(out, s)?;
      }
      KeyValue::Array(items) => {
        out.push(tag::ARRAY);
        put_len(out, items.len())?;
        for item in items {
          match item {
            Some(v) => v.encode(out)?,
            None => out.push(tag::HOLE),
          }
        }
      }
      KeyValue::Object(entries) => {
        out.push(tag::OBJECT);
        put_len(out, entries.len())?;
        let mut sorted: Vec<&(Vec<u16>, KeyValue)> = entries.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, value) in sorted {
          put_utf16(out, name)?;
          value.encode(out)?;
        }
      }
      KeyValue::Date(t) => {
        out.push(tag::DATE);
        put_f64(out, *t);
      }
      KeyValue::Map(entries) => {
        out.push(tag::MAP);
        put_len(out, entries.len())?;
        for (k, v) in entries {
          k.encode(out)?;
          v.encode(out)?;
        }
      }
      KeyValue::Set(items) => {
        out.push(tag::SET);
        put_len(out, items.len())?;
        for item in items {
          item.encode(out)?;
        }
      }
      KeyValue::Bytes { kind, bytes } => {
        out.push(tag::BYTES);
        out.push(*kind as u8);
        put_len(out, bytes.len())?;
        out.extend_from_slice(bytes);
      }
      KeyValue::RegExp { source, flags } => {
        out.push(tag::REGEXP);
        put_utf16(out, source)?;
        put_utf16(out, flags)?;
      }
    }
    Ok(())
  }
}

/// Encodes an argument list: a 32-bit count, then each argument.
///
/// # Errors
/// `UnkeyableArgument` when a length does not fit in 32 bits.
pub fn encode_args(args: &[KeyValue]) -> CoreResult<Vec<u8>> {
  let mut out = Vec::with_capacity(16);
  put_len(&mut out, args.len())?;
  for a in args {
    a.encode(&mut out)?;
  }
  Ok(out)
}

/// A namespace with its derived hashing key, built once per memoized function.
#[derive(Clone)]
pub struct Keyspace {
  name: String,
  key: [u8; 32],
  id: [u8; 8],
}

impl Keyspace {
  /// Prepares hashing for `namespace`: the digest of arguments is BLAKE3 keyed by
  /// `derive_key(KEY_CONTEXT, namespace)`, so the namespace is mixed into every digest.
  pub fn new(namespace: &str) -> Self {
    let key = blake3::derive_key(KEY_CONTEXT, namespace.as_bytes());
    let ns_digest = blake3::derive_key("cachette 2026 namespace id v1", namespace.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&ns_digest[..8]);
    Keyspace {
      name: namespace.to_owned(),
      key,
      id,
    }
  }

  /// The namespace this keyspace hashes for.
  pub fn name(&self) -> &str {
    &self.name
  }

  /// An 8-byte identifier of the namespace; stores prefix keys with it so `clear()` is a range delete.
  pub fn id(&self) -> [u8; 8] {
    self.id
  }

  /// Digest of already encoded arguments (see [`encode_args`]).
  pub fn digest_encoded(&self, encoded: &[u8]) -> Digest {
    *blake3::keyed_hash(&self.key, encoded).as_bytes()
  }

  /// Digest of an argument list.
  ///
  /// # Errors
  /// `UnkeyableArgument` when a length does not fit in 32 bits.
  pub fn digest(&self, args: &[KeyValue]) -> CoreResult<Digest> {
    Ok(self.digest_encoded(&encode_args(args)?))
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  /// The digest docs/key-encoding.md gives for namespace "docs" and arguments (1, "a").
  const DOCS_EXAMPLE_DIGEST: &str = "1b9dff7e42daab98ce76290dca803f2d7c570a351a2e502583a6dbb6b647dd17";

  fn d(args: &[KeyValue]) -> Digest {
    Keyspace::new("ns").digest(args).unwrap()
  }

  #[test]
  fn look_alikes_get_different_keys() {
    use KeyValue::*;
    let pairs: Vec<(KeyValue, KeyValue)> = vec![
      (Number(f64::NAN), Null),
      (
        BigInt {
          negative: false,
          magnitude: vec![1],
        },
        Number(1.0),
      ),
      (KeyValue::str("1"), Number(1.0)),
      (Undefined, Null),
      (Map(vec![]), Object(vec![])),
      (Set(vec![]), Array(vec![])),
      (String(vec![0xD800]), String(vec![0xFFFD])),
      (Number(-0.0), Number(0.0)),
      (Date(0.0), Number(0.0)),
      (Array(vec![None]), Array(vec![Some(Undefined)])),
      (Bool(false), Number(0.0)),
      (
        Bytes {
          kind: BytesKind::Buffer,
          bytes: vec![1],
        },
        Bytes {
          kind: BytesKind::Uint8Array,
          bytes: vec![1],
        },
      ),
      (KeyValue::str(""), Undefined),
    ];
    for (a, b) in pairs {
      assert_ne!(
        d(std::slice::from_ref(&a)),
        d(std::slice::from_ref(&b)),
        "{a:?} vs {b:?}"
      );
    }
  }

  #[test]
  fn plain_objects_ignore_property_order() {
    let ab = KeyValue::Object(vec![
      ("a".encode_utf16().collect(), KeyValue::Number(1.0)),
      ("b".encode_utf16().collect(), KeyValue::Number(2.0)),
    ]);
    let ba = KeyValue::Object(vec![
      ("b".encode_utf16().collect(), KeyValue::Number(2.0)),
      ("a".encode_utf16().collect(), KeyValue::Number(1.0)),
    ]);
    assert_eq!(d(&[ab]), d(&[ba]));
  }

  #[test]
  fn every_nan_is_one_key() {
    let other_nan = f64::from_bits(0x7ff0_0000_0000_0001);
    assert!(other_nan.is_nan());
    assert_eq!(d(&[KeyValue::Number(f64::NAN)]), d(&[KeyValue::Number(other_nan)]));
  }

  #[test]
  fn bigint_zero_and_leading_zeros_are_canonical() {
    let zero = KeyValue::BigInt {
      negative: false,
      magnitude: vec![],
    };
    let neg_zero = KeyValue::BigInt {
      negative: true,
      magnitude: vec![0],
    };
    assert_eq!(d(&[zero]), d(&[neg_zero]));
    let a = KeyValue::BigInt {
      negative: false,
      magnitude: vec![0, 0, 5],
    };
    let b = KeyValue::BigInt {
      negative: false,
      magnitude: vec![5],
    };
    assert_eq!(d(&[a]), d(&[b]));
  }

  #[test]
  fn argument_boundaries_are_unambiguous() {
    // ('ab', 'c') vs ('a', 'bc') and one array argument vs two arguments.
    assert_ne!(
      d(&[KeyValue::str("ab"), KeyValue::str("c")]),
      d(&[KeyValue::str("a"), KeyValue::str("bc")])
    );
    let one = KeyValue::Array(vec![Some(KeyValue::Number(1.0)), Some(KeyValue::Number(2.0))]);
    assert_ne!(d(&[one]), d(&[KeyValue::Number(1.0), KeyValue::Number(2.0)]));
    assert_ne!(d(&[]), d(&[KeyValue::Undefined]));
  }

  #[test]
  fn namespace_is_mixed_into_the_digest() {
    let args = [KeyValue::Number(1.0)];
    let a = Keyspace::new("users").digest(&args).unwrap();
    let b = Keyspace::new("orders").digest(&args).unwrap();
    assert_ne!(a, b);
    assert_ne!(Keyspace::new("users").id(), Keyspace::new("orders").id());
    // Namespace boundary: ("ab" namespace, 'c') must not equal ("a" namespace, 'bc')-like splices.
    let x = Keyspace::new("ab").digest(&[KeyValue::str("c")]).unwrap();
    let y = Keyspace::new("a").digest(&[KeyValue::str("bc")]).unwrap();
    assert_ne!(x, y);
  }

  #[test]
  fn encoding_matches_the_documented_bytes() {
    // docs/key-encoding.md, example: f(1, "a") -> count 2, number 1.0, string "a".
    let encoded = encode_args(&[KeyValue::Number(1.0), KeyValue::str("a")]).unwrap();
    let expected: Vec<u8> = vec![
      0, 0, 0, 2, // two arguments
      0x04, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, // number 1.0
      0x06, 0, 0, 0, 1, 0x00, 0x61, // string "a" as one UTF-16 unit
    ];
    assert_eq!(encoded, expected);
    let hex: String = Keyspace::new("docs")
      .digest_encoded(&encoded)
      .iter()
      .map(|b| format!("{b:02x}"))
      .collect();
    assert_eq!(hex, DOCS_EXAMPLE_DIGEST, "docs/key-encoding.md states this digest");
  }
}
