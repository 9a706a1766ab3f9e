//! The hot-path functions (`storeGet`, `storeGetHashed`, `storeReadOrLock`, `storePut`,
//! `storePutAndRelease`, and the remote stores' `remoteHash` and `remoteOpen`) as plain Node-API
//! callbacks. A `#[napi]` function registers every
//! Buffer argument in napi-rs's process-wide borrow table and opens a borrow scope per call,
//! which costs more than a whole hit; these read their arguments with three Node-API calls
//! each and hand the same slices to the functions in `lib.rs`.
//!
//! They are internal (native.ts is their only caller): arguments are checked, and a wrong one
//! throws `ERR_INVALID_ARGUMENT`, but nothing here is a public API.

use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;

use crate::{Code, IO_BYTES};

type Callback = unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value;

/// Adds the hot-path functions to the module's exports.
#[napi(module_exports)]
pub fn register_hot_path(exports: Object, env: Env) -> Result<()> {
  let functions: [(&str, Callback); 7] = [
    ("storeGet", store_get),
    ("storeGetHashed", store_get_hashed),
    ("storeReadOrLock", store_read_or_lock),
    ("storePut", store_put),
    ("storePutAndRelease", store_put_and_release),
    ("remoteHash", remote_hash),
    ("remoteOpen", remote_open),
  ];
  for (name, cb) in functions {
    let cname = CString::new(name).map_err(|e| Error::from_reason(e.to_string()))?;
    let mut f = ptr::null_mut();
    // SAFETY: plain Node-API calls on this module's env, during its initialisation.
    unsafe {
      check(sys::napi_create_function(
        env.raw(),
        cname.as_ptr(),
        name.len() as isize,
        Some(cb),
        ptr::null_mut(),
        &mut f,
      ))?;
      check(sys::napi_set_named_property(
        env.raw(),
        exports.raw(),
        cname.as_ptr(),
        f,
      ))?;
    }
  }
  Ok(())
}

fn check(status: sys::napi_status) -> Result<()> {
  if status == sys::Status::napi_ok {
    Ok(())
  } else {
    Err(Error::from_reason("cannot register the hot-path functions"))
  }
}

/// One call's arguments, read from its callback info.
struct Args<const N: usize> {
  env: sys::napi_env,
  argv: [sys::napi_value; N],
}

impl<const N: usize> Args<N> {
  /// # Safety
  /// `env` and `info` must be those Node-API passed to the running callback.
  unsafe fn read(env: sys::napi_env, info: sys::napi_callback_info) -> Result<Self, Code> {
    let mut argc = N;
    let mut argv = [ptr::null_mut(); N];
    let status = sys::napi_get_cb_info(
      env,
      info,
      &mut argc,
      argv.as_mut_ptr(),
      ptr::null_mut(),
      ptr::null_mut(),
    );
    if status != sys::Status::napi_ok || argc < N {
      return Err(crate::invalid("missing arguments"));
    }
    Ok(Args { env, argv })
  }

  fn u32(&self, i: usize) -> Result<u32, Code> {
    let mut v = 0u32;
    // SAFETY: argv[i] is a live value of this call.
    let status = unsafe { sys::napi_get_value_uint32(self.env, self.argv[i], &mut v) };
    if status != sys::Status::napi_ok {
      return Err(crate::invalid("expected a number"));
    }
    Ok(v)
  }

  fn f64(&self, i: usize) -> Result<f64, Code> {
    let mut v = 0f64;
    // SAFETY: argv[i] is a live value of this call.
    let status = unsafe { sys::napi_get_value_double(self.env, self.argv[i], &mut v) };
    if status != sys::Status::napi_ok {
      return Err(crate::invalid("expected a number"));
    }
    Ok(v)
  }

  /// The bytes of the Uint8Array (or Buffer) argument `i`, as a pointer and length.
  fn bytes(&self, i: usize) -> Result<(*mut u8, usize), Code> {
    let mut kind = sys::TypedarrayType::int8_array;
    let mut len = 0usize;
    let mut data = ptr::null_mut();
    // SAFETY: argv[i] is a live value of this call; the out-pointers are valid.
    let status = unsafe {
      sys::napi_get_typedarray_info(
        self.env,
        self.argv[i],
        &mut kind,
        &mut len,
        &mut data,
        ptr::null_mut(),
        ptr::null_mut(),
      )
    };
    if status != sys::Status::napi_ok || kind != sys::TypedarrayType::uint8_array {
      return Err(crate::invalid("expected a Buffer"));
    }
    Ok((
      if len == 0 {
        ptr::NonNull::dangling().as_ptr()
      } else {
        data.cast()
      },
      len,
    ))
  }
}

/// Refuses buffers of one call that overlap when one of them (`mutable[i]`) is written to.
fn disjoint(parts: &[(*mut u8, usize)], mutable: &[bool]) -> Result<(), Code> {
  for (i, &(a, alen)) in parts.iter().enumerate() {
    for (j, &(b, blen)) in parts.iter().enumerate().skip(i + 1) {
      let overlap = (a as usize) < (b as usize) + blen && (b as usize) < (a as usize) + alen;
      if overlap && alen > 0 && blen > 0 && (mutable[i] || mutable[j]) {
        return Err(crate::invalid("overlapping buffers"));
      }
    }
  }
  Ok(())
}

/// # Safety
/// The pointer and length come from `Args::bytes` of a value alive for this call, and no other
/// live slice overlaps it mutably (see `disjoint`).
unsafe fn slice<'a>((p, len): (*mut u8, usize)) -> &'a [u8] {
  std::slice::from_raw_parts(p, len)
}

/// # Safety
/// As [`slice`], and no other slice of this call overlaps it at all.
unsafe fn slice_mut<'a>((p, len): (*mut u8, usize)) -> &'a mut [u8] {
  std::slice::from_raw_parts_mut(p, len)
}

fn io_checked(io: (*mut u8, usize)) -> Result<(*mut u8, usize), Code> {
  if io.1 < IO_BYTES as usize {
    return Err(crate::invalid("io buffer too small"));
  }
  Ok(io)
}

/// Runs `body` and turns its result (or a panic) into what the callback returns: a thrown
/// error carries its code as the JS `code`.
///
/// # Safety
/// `env` must be the running callback's.
unsafe fn finish(env: sys::napi_env, body: impl FnOnce() -> Result<Option<f64>, Code>) -> sys::napi_value {
  let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
    Err(Error::new(
      Code("ERR_BACKEND_IO"),
      "internal error in the cache core".to_owned(),
    ))
  });
  let mut out = ptr::null_mut();
  match outcome {
    Ok(Some(n)) => {
      sys::napi_create_double(env, n, &mut out);
    }
    Ok(None) => {
      sys::napi_get_undefined(env, &mut out);
    }
    Err(e) => {
      let msg = CString::new(e.reason.replace('\0', " ")).unwrap_or_default();
      let code = CString::new(e.status.as_ref()).unwrap_or_default();
      sys::napi_throw_error(env, code.as_ptr().cast::<c_char>(), msg.as_ptr());
      return ptr::null_mut();
    }
  }
  out
}

/// The first `len` bytes of `bytes` (a key encoded at the start of a reused buffer).
fn prefix((p, len): (*mut u8, usize), n: u32) -> Result<(*mut u8, usize), Code> {
  let n = n as usize;
  if n > len {
    return Err(crate::invalid("key length beyond its buffer"));
  }
  Ok((p, n))
}

/// `storeGet(handle, key, keyLength, io, scratch)`: see `lib.rs`.
unsafe extern "C" fn store_get(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
  finish(env, || {
    let a = Args::<5>::read(env, info)?;
    let (key, io, scratch) = (prefix(a.bytes(1)?, a.u32(2)?)?, io_checked(a.bytes(3)?)?, a.bytes(4)?);
    disjoint(&[key, io, scratch], &[false, true, true])?;
    let n = crate::store::store_get(a.u32(0)?, slice(key), slice_mut(io), slice_mut(scratch))?;
    Ok(Some(n as f64))
  })
}

/// `storeGetHashed(handle, io, scratch)`.
unsafe extern "C" fn store_get_hashed(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
  finish(env, || {
    let a = Args::<3>::read(env, info)?;
    let (io, scratch) = (io_checked(a.bytes(1)?)?, a.bytes(2)?);
    disjoint(&[io, scratch], &[true, true])?;
    let n = crate::store::store_get_hashed(a.u32(0)?, slice_mut(io), slice_mut(scratch))?;
    Ok(Some(n as f64))
  })
}

/// `storeReadOrLock(handle, key, keyLength, io, scratch, owner, timeoutMs)`.
unsafe extern "C" fn store_read_or_lock(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
  finish(env, || {
    let a = Args::<7>::read(env, info)?;
    let (key, io, scratch) = (prefix(a.bytes(1)?, a.u32(2)?)?, io_checked(a.bytes(3)?)?, a.bytes(4)?);
    disjoint(&[key, io, scratch], &[false, true, true])?;
    let n = crate::store::store_read_or_lock(
      a.u32(0)?,
      slice(key),
      slice_mut(io),
      slice_mut(scratch),
      a.u32(5)?,
      a.f64(6)?,
    )?;
    Ok(Some(n as f64))
  })
}

/// `storePut(handle, io, payload, staleAtMs, expiresMs, nowMs)`.
unsafe extern "C" fn store_put(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
  finish(env, || {
    let a = Args::<6>::read(env, info)?;
    let (io, payload) = (io_checked(a.bytes(1)?)?, a.bytes(2)?);
    let t = (a.f64(3)?, a.f64(4)?, a.f64(5)?);
    let failed = crate::store::store_put(a.u32(0)?, slice(io), slice(payload), t, None)?;
    Ok(Some(failed as f64))
  })
}

/// `storePutAndRelease(handle, io, payload, staleAtMs, expiresMs, nowMs, owner)`.
unsafe extern "C" fn store_put_and_release(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
  finish(env, || {
    let a = Args::<7>::read(env, info)?;
    let (io, payload) = (io_checked(a.bytes(1)?)?, a.bytes(2)?);
    let t = (a.f64(3)?, a.f64(4)?, a.f64(5)?);
    let failed = crate::store::store_put(a.u32(0)?, slice(io), slice(payload), t, Some(a.u32(6)?))?;
    Ok(Some(failed as f64))
  })
}

/// `remoteHash(handle, key, io)`: see remote.rs.
unsafe extern "C" fn remote_hash(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
  finish(env, || {
    let a = Args::<3>::read(env, info)?;
    let (key, io) = (a.bytes(1)?, io_checked(a.bytes(2)?)?);
    disjoint(&[key, io], &[false, true])?;
    crate::remote::remote_hash(a.u32(0)?, slice(key), slice_mut(io))?;
    Ok(None)
  })
}

/// `remoteOpen(handle, io, bytes)`: see remote.rs.
unsafe extern "C" fn remote_open(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
  finish(env, || {
    let a = Args::<3>::read(env, info)?;
    let (io, bytes) = (io_checked(a.bytes(1)?)?, a.bytes(2)?);
    disjoint(&[io, bytes], &[true, false])?;
    let end = crate::remote::remote_open(a.u32(0)?, slice_mut(io), slice(bytes))?;
    Ok(Some(end as f64))
  })
}
