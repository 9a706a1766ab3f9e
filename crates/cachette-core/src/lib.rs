//! cachette-core: the cache logic of cachette, free of any Node.js binding.
//!
//! * [`key`]: canonical argument encoding and 256-bit digests.
//! * [`envelope`]: the checked, versioned wrapper of every persisted entry.
//! * [`integrity`]: keyed MACs on persisted entries (`integrityKey`).
//! * [`shard_map`]: a sharded LRU map with byte bounds and TTL (`shared: true`).
//! * [`single_flight`]: in-process single flight with moka's `get_with` contract.
//! * [`store`]: the store trait and its backends.
//! * [`file_lock`]: kernel byte-range locks for cross-process calculation locks.
//! * [`owners`]: who holds calculation locks, and releasing a gone owner's locks everywhere.
//! * [`blocking`]: blocking waits off the caller's thread, on the runtime's pool ([`runtime`]).
//! * [`clock`]: the injectable clock every entry time is judged by.

pub mod blocking;
pub mod clock;
pub mod envelope;
pub mod error;
pub mod file_lock;
pub mod integrity;
pub mod key;
pub mod owners;
pub mod runtime;
pub mod shard_map;
pub mod single_flight;
pub mod store;
#[cfg(test)]
mod test_dir;

pub use error::{CoreError, CoreResult};
