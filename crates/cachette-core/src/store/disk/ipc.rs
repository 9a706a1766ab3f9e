//! The owner/guest protocol of a disk cache directory shared by several processes.
//!
//! The process that holds RocksDB's `LOCK` (the owner) answers the others (guests) over a
//! Unix socket in the cache directory (mode 0600, in a 0700 directory). Frames are a 32-bit
//! big-endian length and a body; bodies start with an op byte. The protocol carries raw store
//! operations; envelopes are checked by the reader, so a guest trusts no more than an owner.

use std::io::{self, Read, Write};

use crate::error::{CoreError, CoreResult};

/// Largest frame: its length is a 32-bit number. A frame's memory is committed as its bytes
/// arrive (a large zeroed allocation is mapped lazily), so a large length alone costs nothing.
pub const MAX_FRAME: usize = u32::MAX as usize;

/// Largest sealed value the disk store takes, in the owner and in guests alike: a guest's
/// frame holds it with its key and a few bytes of header. (RocksDB takes no more either.)
pub const MAX_VALUE: usize = MAX_FRAME - 1024;

pub const OP_GET: u8 = 1;
pub const OP_WRITE: u8 = 2;
pub const OP_COUNT: u8 = 3;

pub const ST_OK: u8 = 0;
pub const ST_FOUND: u8 = 1;
pub const ST_ERROR: u8 = 2;

/// One mutation, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
  Put(Vec<u8>, Vec<u8>),
  Delete(Vec<u8>),
  /// Deletes keys in `[from, to)`.
  DeleteRange(Vec<u8>, Vec<u8>),
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
  if body.len() > MAX_FRAME {
    return Err(io::Error::new(io::ErrorKind::InvalidInput, "frame too large"));
  }
  w.write_all(&(body.len() as u32).to_be_bytes())?;
  w.write_all(body)?;
  w.flush()
}

/// Reads one frame; `Ok(None)` on a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
  let mut len = [0u8; 4];
  match r.read_exact(&mut len) {
    Ok(()) => {}
    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
    Err(e) => return Err(e),
  }
  let len = u32::from_be_bytes(len) as usize;
  let mut body = vec![0u8; len];
  r.read_exact(&mut body)?;
  Ok(Some(body))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
  out.extend_from_slice(&(b.len() as u32).to_be_bytes());
  out.extend_from_slice(b);
}

/// A cursor over a received body that fails instead of panicking on short input.
pub struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
  pub fn new(b: &'a [u8]) -> Self {
    Cursor(b)
  }
  fn bad() -> CoreError {
    CoreError::io("malformed frame from the other process")
  }
  pub fn u8(&mut self) -> CoreResult<u8> {
    let (&b, rest) = self.0.split_first().ok_or_else(Self::bad)?;
    self.0 = rest;
    Ok(b)
  }
  pub fn u32(&mut self) -> CoreResult<u32> {
    let b = self.take(4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
  }
  pub fn u64(&mut self) -> CoreResult<u64> {
    let b = self.take(8)?;
    let mut x = [0u8; 8];
    x.copy_from_slice(b);
    Ok(u64::from_be_bytes(x))
  }
  pub fn take(&mut self, n: usize) -> CoreResult<&'a [u8]> {
    if self.0.len() < n {
      return Err(Self::bad());
    }
    let (a, rest) = self.0.split_at(n);
    self.0 = rest;
    Ok(a)
  }
  pub fn bytes(&mut self) -> CoreResult<&'a [u8]> {
    let n = self.u32()? as usize;
    self.take(n)
  }
  pub fn rest(&mut self) -> &'a [u8] {
    std::mem::take(&mut self.0)
  }
}

/// Encodes a WRITE request.
pub fn encode_write(ops: &[WriteOp], sync: bool) -> Vec<u8> {
  let mut out = vec![OP_WRITE, u8::from(sync)];
  out.extend_from_slice(&(ops.len() as u32).to_be_bytes());
  for op in ops {
    match op {
      WriteOp::Put(k, v) => {
        out.push(0);
        put_bytes(&mut out, k);
        put_bytes(&mut out, v);
      }
      WriteOp::Delete(k) => {
        out.push(1);
        put_bytes(&mut out, k);
        put_bytes(&mut out, &[]);
      }
      WriteOp::DeleteRange(a, b) => {
        out.push(2);
        put_bytes(&mut out, a);
        put_bytes(&mut out, b);
      }
    }
  }
  out
}

/// Decodes the body of a WRITE request (after its op byte).
pub fn decode_write(c: &mut Cursor<'_>) -> CoreResult<(Vec<WriteOp>, bool)> {
  let sync = c.u8()? != 0;
  let n = c.u32()? as usize;
  let mut ops = Vec::with_capacity(n.min(65_536));
  for _ in 0..n {
    let kind = c.u8()?;
    let a = c.bytes()?.to_vec();
    let b = c.bytes()?.to_vec();
    ops.push(match kind {
      0 => WriteOp::Put(a, b),
      1 => WriteOp::Delete(a),
      2 => WriteOp::DeleteRange(a, b),
      _ => return Err(Cursor::bad()),
    });
  }
  Ok((ops, sync))
}

/// Encodes an error response: the reason of an I/O error (the guest's error says what failed),
/// the whole message of any other.
pub fn error_response(e: &CoreError) -> Vec<u8> {
  let mut out = vec![ST_ERROR];
  match e {
    CoreError::Io { reason } => out.extend_from_slice(reason.as_bytes()),
    e => out.extend_from_slice(e.to_string().as_bytes()),
  }
  out
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn write_requests_round_trip() {
    let ops = vec![
      WriteOp::Put(b"k".to_vec(), b"v".to_vec()),
      WriteOp::Delete(b"d".to_vec()),
      WriteOp::DeleteRange(b"a".to_vec(), b"b".to_vec()),
    ];
    let body = encode_write(&ops, true);
    let mut c = Cursor::new(&body[1..]);
    assert_eq!(decode_write(&mut c).unwrap(), (ops, true));
  }

  #[test]
  fn truncated_bodies_fail_cleanly() {
    let body = encode_write(&[WriteOp::Put(b"key".to_vec(), b"value".to_vec())], false);
    for n in 1..body.len() {
      let mut c = Cursor::new(&body[1..n]);
      assert!(decode_write(&mut c).is_err(), "accepted a body cut at {n}");
    }
  }

  #[test]
  fn frames_round_trip_and_a_frame_cut_short_fails() {
    let mut buf = Vec::new();
    write_frame(&mut buf, b"hello").unwrap();
    assert_eq!(read_frame(&mut &buf[..]).unwrap().unwrap(), b"hello");
    assert!(read_frame(&mut &[][..]).unwrap().is_none());
    // A length announcing more than follows: an error, not a hang or an allocation failure.
    let mut huge = (MAX_FRAME as u32).to_be_bytes().to_vec();
    huge.extend_from_slice(b"a few bytes");
    assert!(read_frame(&mut &huge[..]).is_err());
  }

  #[test]
  fn frames_larger_than_256_mib_round_trip() {
    let body = vec![7u8; (256 << 20) + 1];
    let mut buf = Vec::new();
    write_frame(&mut buf, &body).unwrap();
    assert!(read_frame(&mut &buf[..]).unwrap().unwrap() == body);
  }
}
