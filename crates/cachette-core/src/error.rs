//! Errors of the core. Each variant carries the data a user needs to act on it;
//! the binding maps each variant to a stable `ERR_*` code.

use std::fmt;
use std::path::PathBuf;

/// Every failure the core reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
  /// An argument has no stable value identity (function, symbol, class instance, cycle...).
  UnkeyableArgument { path: String, reason: String },
  /// Waited `waited_ms` for another caller's computation of the same key.
  LockTimeout { waited_ms: u64 },
  /// The store could not be opened or reached.
  StoreUnavailable { path: PathBuf, reason: String },
  /// The directory is owned by another process and that owner could not be reached in time.
  StoreLocked { path: PathBuf },
  /// A Redis or SQL server could not be reached, or the connection broke (`server` has no password).
  ServerUnavailable { server: String, reason: String },
  /// A store option is invalid (a URL, a table name).
  InvalidConfig { reason: String },
  /// A read or write failed inside an open store.
  Io { reason: String },
  /// The store was closed.
  Closed,
  /// Another thread's computation of this key failed; the payload is that thread's serialized error.
  ComputationFailed { error: Vec<u8> },
}

/// Shorthand used across the core.
pub type CoreResult<T> = Result<T, CoreError>;

impl CoreError {
  /// The stable code the JS layer exposes as `error.code`.
  pub fn code(&self) -> &'static str {
    match self {
      CoreError::UnkeyableArgument { .. } => "ERR_UNKEYABLE_ARGUMENT",
      CoreError::LockTimeout { .. } => "ERR_LOCK_TIMEOUT",
      CoreError::StoreUnavailable { .. } => "ERR_BACKEND_UNAVAILABLE",
      CoreError::StoreLocked { .. } => "ERR_STORE_LOCKED",
      CoreError::ServerUnavailable { .. } => "ERR_BACKEND_UNAVAILABLE",
      CoreError::InvalidConfig { .. } => "ERR_INVALID_OPTION",
      CoreError::Io { .. } => "ERR_BACKEND_IO",
      CoreError::Closed => "ERR_CLOSED",
      CoreError::ComputationFailed { .. } => "ERR_COMPUTATION_FAILED",
    }
  }

  pub(crate) fn io(reason: impl fmt::Display) -> Self {
    CoreError::Io {
      reason: reason.to_string(),
    }
  }
}

impl fmt::Display for CoreError {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match self {
      CoreError::UnkeyableArgument { path, reason } => write!(
        f,
        "cannot build a cache key from {path}: {reason}; pass a `key` option that maps the arguments to plain values"
      ),
      CoreError::LockTimeout { waited_ms } => write!(
        f,
        "waited {waited_ms} ms for another caller computing the same key; raise `lockTimeout` or make the function faster"
      ),
      CoreError::StoreUnavailable { path, reason } => {
        write!(f, "cache store at {} is unavailable: {reason}", path.display())
      }
      CoreError::StoreLocked { path } => write!(
        f,
        "cache directory {} is owned by another process that did not answer; retry, or give this process its own `path`",
        path.display()
      ),
      CoreError::ServerUnavailable { server, reason } => {
        write!(f, "cache server {server} is unavailable: {reason}")
      }
      CoreError::InvalidConfig { reason } => write!(f, "invalid cache store option: {reason}"),
      CoreError::Io { reason } => write!(f, "cache store I/O failed: {reason}"),
      CoreError::Closed => write!(f, "the cache was closed; create a new one to keep caching"),
      CoreError::ComputationFailed { .. } => {
        write!(f, "the computation of this key failed in another thread")
      }
    }
  }
}

impl std::error::Error for CoreError {}
