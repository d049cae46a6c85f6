//! Failure injection for tests (cargo feature `fault-injection`; never enable it in
//! production). Every write, fsync and rename the chest does on its files passes through one
//! hook; [`fail_nth`] makes the n-th such operation of a kind, counted from the call, fail
//! with an I/O error, as a failing disk would. The state is global to the process, so a test
//! that uses it should be the only test in its binary.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// A kind of file operation that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// Creating a file or writing bytes to one.
    Write,
    /// An fsync of a file or directory.
    Sync,
    /// Renaming a file into place.
    Rename,
}

impl FaultKind {
    fn code(self) -> u8 {
        match self {
            FaultKind::Write => 1,
            FaultKind::Sync => 2,
            FaultKind::Rename => 3,
        }
    }
}

/// Which kind is armed (0: none).
static ARMED: AtomicU8 = AtomicU8::new(0);
/// Operations of the armed kind still to let through before one fails.
static COUNTDOWN: AtomicU64 = AtomicU64::new(0);
/// Operations of the armed kind seen since it was armed.
static SEEN: AtomicU64 = AtomicU64::new(0);

/// Makes the `n`-th operation of `kind` from now fail (`n` counts from 1); later ones succeed.
pub fn fail_nth(kind: FaultKind, n: u64) {
    SEEN.store(0, Ordering::SeqCst);
    COUNTDOWN.store(n.max(1), Ordering::SeqCst);
    ARMED.store(kind.code(), Ordering::SeqCst);
}

/// Disarms any pending failure.
pub fn clear() {
    ARMED.store(0, Ordering::SeqCst);
}

/// Operations of the armed kind seen since [`fail_nth`], including the one that failed.
pub fn seen() -> u64 {
    SEEN.load(Ordering::SeqCst)
}

/// The hook: called before every operation of `kind`.
pub(crate) fn check(kind: FaultKind) -> std::io::Result<()> {
    if ARMED.load(Ordering::SeqCst) != kind.code() {
        return Ok(());
    }
    SEEN.fetch_add(1, Ordering::SeqCst);
    if COUNTDOWN.fetch_sub(1, Ordering::SeqCst) == 1 {
        ARMED.store(0, Ordering::SeqCst);
        return Err(std::io::Error::other(format!("injected {kind:?} failure")));
    }
    Ok(())
}
