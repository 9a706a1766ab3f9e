//! Per-JS-thread tables of open stores, so the hot-path functions are free functions that take
//! a number: a free function's call costs a fraction of a class method's, whose receiver is
//! unwrapped and its type tag checked on every call.

use std::cell::RefCell;
use std::sync::Arc;
use std::thread::LocalKey;

use napi::Error;

use cachette_core::CoreError;

use crate::{coded, invalid, Code};

/// One thread's open objects by handle. Slots are never reused: a handle kept after `close()`
/// names no other object.
pub type Table<T> = RefCell<Vec<Option<Arc<T>>>>;

/// The object of `handle` in this thread's `table`, or `ERR_CLOSED`.
pub fn get<T>(table: &'static LocalKey<Table<T>>, handle: u32) -> Result<Arc<T>, Error<Code>> {
  table
    .with(|t| t.borrow().get(handle as usize).cloned().flatten())
    .ok_or_else(|| coded(CoreError::Closed))
}

/// An object's place in its thread's table, once a handle was asked for.
#[derive(Default)]
pub struct Slot(Option<u32>);

impl Slot {
  /// The handle, registering `make()` in `table` the first time.
  pub fn handle<T>(
    &mut self,
    table: &'static LocalKey<Table<T>>,
    make: impl FnOnce() -> Result<Arc<T>, Error<Code>>,
  ) -> Result<u32, Error<Code>> {
    if let Some(slot) = self.0 {
      return Ok(slot);
    }
    let value = make()?;
    let slot = table.with(|t| {
      let mut t = t.borrow_mut();
      t.push(Some(value));
      t.len() - 1
    });
    let slot = u32::try_from(slot).map_err(|_| invalid("too many open stores"))?;
    self.0 = Some(slot);
    Ok(slot)
  }

  /// Empties the slot (if the thread's table still exists: a finalizer may run at thread exit).
  pub fn release<T>(&mut self, table: &'static LocalKey<Table<T>>) {
    if let Some(slot) = self.0.take() {
      let _ = table.try_with(|t| {
        if let Some(x) = t.borrow_mut().get_mut(slot as usize) {
          *x = None;
        }
      });
    }
  }
}
