//! napi-rs binding of cachette-core: argument conversion and error-code mapping only.
//! Every cache decision lives in the core; see `src-ts/native.ts` for the one place that
//! imports this addon.
#![deny(clippy::all)]

use napi::bindgen_prelude::*;
use napi::Env;
use napi_derive::napi;

use cachette_core::clock::{self, Clock};
use cachette_core::envelope::{Freshness, Times, NEVER};
use cachette_core::key::{Digest, Keyspace, DIGEST_LEN};
use cachette_core::store::LockOutcome;
use cachette_core::{owners, CoreError};

mod handles;
pub mod raw;
pub mod remote;
pub mod store;

/// The status of every error this binding throws: the core's stable code (`ERR_LOCK_TIMEOUT`),
/// which JS reads as `error.code`.
pub struct Code(&'static str);

impl AsRef<str> for Code {
  fn as_ref(&self) -> &str {
    self.0
  }
}

/// The error of a core failure, its code as the JS `code`.
fn coded(e: CoreError) -> Error<Code> {
  Error::new(Code(e.code()), e.to_string())
}

/// A call the TypeScript layer should never make (a short buffer, a wrong type).
fn invalid(msg: &str) -> Error<Code> {
  Error::new(Code("ERR_INVALID_ARGUMENT"), msg.to_owned())
}

/// A Node-API failure (creating a promise, a callback): the runtime, not the cache.
fn napi_failure(e: Error) -> Error<Code> {
  Error::new(Code("ERR_BACKEND_IO"), e.reason.clone())
}

/// A fresh id for the calling thread's JS environment. When that environment is torn down
/// (a terminated worker), every calculation lock it held is released so a waiter takes over.
#[napi]
pub fn register_owner(env: Env) -> Result<u32, Code> {
  let id = owners::next_owner();
  env
    .add_env_cleanup_hook(id, owners::release_everywhere)
    .map_err(napi_failure)?;
  u32::try_from(id).map_err(|_| invalid("too many JS threads"))
}

/// Stops the stores' clock at `ms` (a test of TTL logic), or gives it the system's time again (-1).
#[napi]
pub fn set_test_time(ms: f64) {
  clock::set_test_time((ms >= 0.0).then_some(ms as u64));
}

/// Bytes the JS side allocates for `io`, the buffer each call shares with native code.
#[napi]
pub const IO_BYTES: u32 = 48;
/// Offsets in `io`: the digest fills bytes 0–31, then whether the entry read is not fresh (1)…
#[napi]
pub const IO_FRESHNESS: u32 = DIGEST_LEN as u32;
/// …1 when `readOrLock` found a value stored while it waited for the lock…
#[napi]
pub const IO_WAITED: u32 = DIGEST_LEN as u32 + 1;
/// …where the payload starts in the bytes `remoteOpen` checked (a u32, little-endian)…
#[napi]
pub const IO_START: u32 = 36;
/// …and when the entry read was created (an f64, little-endian, ms since the epoch).
#[napi]
pub const IO_CREATED: u32 = 40;

const FRESHNESS_AT: usize = IO_FRESHNESS as usize;
const WAITED_AT: usize = IO_WAITED as usize;
const START_AT: usize = IO_START as usize;
const CREATED_AT: usize = IO_CREATED as usize;

/// How a claim of a key's calculation lock ended, as the hot-path functions return it (a value
/// found is its payload length, 0 and up).
#[napi]
pub enum ClaimState {
  /// A value is there (the remote stores' acquire).
  Value = 0,
  /// The caller holds the lock: compute.
  Acquired = -1,
  /// `lockTimeout` passed while another caller held it.
  TimedOut = -2,
  /// Another caller finished without a value.
  Settled = -3,
  /// Another caller failed: its serialized error is to be taken.
  Failed = -4,
  /// No lock applies (stores without locks; never returned by native code).
  Unlocked = -5,
}

fn digest_of(io: &[u8]) -> Result<Digest, Code> {
  io.get(..DIGEST_LEN)
    .and_then(|d| d.try_into().ok())
    .ok_or_else(|| invalid("io buffer too small"))
}

/// Hashes encoded arguments with `keyspace` into the digest bytes of `io`.
fn hash_into(keyspace: &Keyspace, key: &[u8], io: &mut [u8]) -> Result<(), Code> {
  io.get_mut(..DIGEST_LEN)
    .ok_or_else(|| invalid("io buffer too small"))?
    .copy_from_slice(&keyspace.digest_encoded(key));
  Ok(())
}

fn times(stale_at_ms: f64, expires_ms: f64, now_ms: f64) -> Times {
  let at = |x: f64| if x.is_finite() && x >= 0.0 { x as u64 } else { NEVER };
  Times {
    created_ms: now_ms.max(0.0) as u64,
    stale_at_ms: at(stale_at_ms),
    expires_ms: at(expires_ms),
  }
}

fn now_ms() -> u64 {
  clock::ProcessClock.now_ms()
}

/// Records what a read found in `io` and copies the payload into `scratch` when it fits.
/// Returns the payload length.
fn copy_found(io: &mut [u8], scratch: &mut [u8], now: u64, times: Times, payload: &[u8]) -> i64 {
  io[FRESHNESS_AT] = u8::from(times.freshness(now) != Freshness::Fresh);
  io[CREATED_AT..CREATED_AT + 8].copy_from_slice(&(times.created_ms as f64).to_le_bytes());
  if let Some(dst) = scratch.get_mut(..payload.len()) {
    dst.copy_from_slice(payload);
  }
  payload.len() as i64
}

/// The state of a calculation lock request, as JS sees it.
#[napi(object)]
pub struct LockResult {
  /// A [`ClaimState`]: `Acquired`, `Settled` (another caller finished: read again), `Failed`
  /// (`error` is its serialized error) or `TimedOut`.
  pub state: i32,
  /// The other caller's serialized error, when it failed.
  pub error: Option<Buffer>,
}

fn lock_result(o: LockOutcome) -> LockResult {
  match o {
    LockOutcome::Acquired => LockResult {
      state: ClaimState::Acquired as i32,
      error: None,
    },
    LockOutcome::Settled(None) => LockResult {
      state: ClaimState::Settled as i32,
      error: None,
    },
    LockOutcome::Settled(Some(e)) => LockResult {
      state: ClaimState::Failed as i32,
      error: Some(e.into()),
    },
    LockOutcome::TimedOut => LockResult {
      state: ClaimState::TimedOut as i32,
      error: None,
    },
  }
}

/// Outcome of an asynchronous operation: `null` on success, else a code and a message.
#[napi(object)]
pub struct Failure {
  pub code: String,
  pub message: String,
}

fn failure(e: CoreError) -> Failure {
  Failure {
    code: e.code().to_owned(),
    message: e.to_string(),
  }
}
