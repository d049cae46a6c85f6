//! The synchronisation primitives of the chest's core, from one place, so that a test build can
//! swap them for a model checker's.
//!
//! Normally these are `parking_lot`'s locks and condition variables and the standard library's
//! atomics and threads, and the chest's hasher (`hash.rs`). Built with `RUSTFLAGS="--cfg shuttle"` (only `tests/shuttle.rs`
//! is), they are [shuttle]'s: every lock, wait, notification, atomic access and thread start of
//! the core becomes a point where shuttle's scheduler picks the next thread, so a test explores
//! many interleavings of the real code and can replay a failing one. The shuttle versions keep
//! `parking_lot`'s shape (`lock()` returns a guard, `Condvar::wait(&mut guard)`), so the core's
//! code is the same in both builds; only its `use` lines name this module.
//!
//! What the shuttle build does not model: weak memory (shuttle runs every atomic as `SeqCst`;
//! that would take loom), and time (`Condvar::wait_for` waits for a notification, like `wait`:
//! a wait that only a timeout would end shows up as a deadlock, which is the stricter check).
//! The process-wide LRU tick in `memory/order.rs` stays a standard atomic: it is a counter
//! bumped under a shard lock whose only use is to order keys, and shuttle would add nothing
//! but a scheduling point inside a step that the shard lock already delimits.
//!
//! [shuttle]: https://docs.rs/shuttle

#[cfg(not(shuttle))]
pub(crate) use crate::hash::State as RandomState;
#[cfg(not(shuttle))]
pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
#[cfg(not(shuttle))]
pub(crate) use std::sync::{Arc, atomic};
#[cfg(not(shuttle))]
pub(crate) use std::thread;

#[cfg(shuttle)]
pub(crate) use model::{Condvar, Mutex, MutexGuard, RandomState, RwLock};
#[cfg(shuttle)]
pub(crate) use shuttle::sync::{Arc, atomic};
#[cfg(shuttle)]
pub(crate) use shuttle::thread;

/// Shuttle's primitives with `parking_lot`'s shape.
#[cfg(shuttle)]
mod model {
    use std::ops::{Deref, DerefMut};
    use std::sync::PoisonError;
    use std::time::Duration;

    /// The shard hasher. A fixed key instead of `RandomState`'s random one, so that a key lands
    /// in the same shard on every run and a failing schedule replays the same execution.
    pub(crate) type RandomState = std::hash::BuildHasherDefault<std::hash::DefaultHasher>;

    /// A mutex that hands out its data even after a panic under the lock, like `parking_lot`'s.
    #[derive(Default)]
    pub(crate) struct Mutex<T: ?Sized>(shuttle::sync::Mutex<T>);

    /// The guard of [`Mutex`]. It holds shuttle's guard except while a [`Condvar`] waits with it
    /// or [`MutexGuard::unlocked`] runs, and the mutex, to lock it again after `unlocked`.
    pub(crate) struct MutexGuard<'a, T: ?Sized>(
        Option<shuttle::sync::MutexGuard<'a, T>>,
        &'a shuttle::sync::Mutex<T>,
    );

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(shuttle::sync::Mutex::new(value))
        }
    }

    impl<T: ?Sized> Mutex<T> {
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(
                Some(self.0.lock().unwrap_or_else(PoisonError::into_inner)),
                &self.0,
            )
        }
    }

    impl<T: ?Sized> MutexGuard<'_, T> {
        /// Unlocks, runs `f`, locks again (also when `f` panics), as `parking_lot`'s does.
        pub(crate) fn unlocked<U>(guard: &mut Self, f: impl FnOnce() -> U) -> U {
            /// Locks the mutex again when dropped, so an unwinding `f` leaves the guard whole.
            struct Relock<'g, 'a, T: ?Sized>(&'g mut MutexGuard<'a, T>);
            impl<T: ?Sized> Drop for Relock<'_, '_, T> {
                fn drop(&mut self) {
                    let again = self.0.1.lock().unwrap_or_else(PoisonError::into_inner);
                    self.0.0 = Some(again);
                }
            }
            drop(guard.0.take().expect(GUARD_TAKEN));
            let _relock = Relock(guard);
            f()
        }
    }

    const GUARD_TAKEN: &str = "a guard is only empty inside Condvar::wait, which borrows it";

    impl<T: ?Sized> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0.as_deref().expect(GUARD_TAKEN)
        }
    }

    impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0.as_deref_mut().expect(GUARD_TAKEN)
        }
    }

    /// A condition variable waited on with a borrowed guard.
    #[derive(Default)]
    pub(crate) struct Condvar(shuttle::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(shuttle::sync::Condvar::new())
        }

        /// Unlocks, waits for a notification, locks again.
        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.0.take().expect(GUARD_TAKEN);
            guard.0 = Some(self.0.wait(inner).unwrap_or_else(PoisonError::into_inner));
        }

        /// As [`wait`](Self::wait): shuttle has no clock, so the timeout never fires.
        pub(crate) fn wait_for<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            timeout: Duration,
        ) -> shuttle::sync::WaitTimeoutResult {
            let inner = guard.0.take().expect(GUARD_TAKEN);
            let (inner, result) = self
                .0
                .wait_timeout(inner, timeout)
                .unwrap_or_else(PoisonError::into_inner);
            guard.0 = Some(inner);
            result
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }

    /// A reader-writer lock that hands out its data even after a panic under the lock.
    pub(crate) struct RwLock<T: ?Sized>(shuttle::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(value: T) -> Self {
            RwLock(shuttle::sync::RwLock::new(value))
        }
    }

    impl<T: ?Sized> RwLock<T> {
        pub(crate) fn read(&self) -> shuttle::sync::RwLockReadGuard<'_, T> {
            self.0.read().unwrap_or_else(PoisonError::into_inner)
        }

        pub(crate) fn write(&self) -> shuttle::sync::RwLockWriteGuard<'_, T> {
            self.0.write().unwrap_or_else(PoisonError::into_inner)
        }
    }
}
