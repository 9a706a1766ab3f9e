//! The one tokio runtime of the core, started on first use: the remote stores' I/O runs on its
//! worker thread, and every wait that blocks (a contended calculation lock, a flush) on its
//! blocking pool ([`crate::blocking`]).

use std::sync::OnceLock;

use tokio::runtime::Runtime;

/// Most threads the blocking pool runs at once (each may wait a whole `lockTimeout`); beyond
/// them, waits start in order as threads free up.
pub const MAX_BLOCKING_THREADS: usize = 64;

/// The runtime: one worker thread for I/O, up to [`MAX_BLOCKING_THREADS`] for blocking waits
/// (idle ones exit after ten seconds).
pub fn runtime() -> &'static Runtime {
  static RT: OnceLock<Runtime> = OnceLock::new();
  RT.get_or_init(|| {
    tokio::runtime::Builder::new_multi_thread()
      .worker_threads(1)
      .max_blocking_threads(MAX_BLOCKING_THREADS)
      .thread_keep_alive(std::time::Duration::from_secs(10))
      .thread_name("cachette-io")
      .enable_all()
      .build()
      .expect("cachette: cannot start the I/O runtime")
  })
}
