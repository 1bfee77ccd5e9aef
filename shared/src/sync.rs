//! Locks that survive a panic elsewhere.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, even when a thread panicked while holding it: every value
/// pacer keeps behind a std mutex (counters, caches, maps) is whole after
/// each statement, so what a panicking holder left is still usable, and a
/// poisoned lock must not spread one failure to every later caller.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
