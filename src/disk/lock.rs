//! The chest's lock file, locked with the standard library's `File::try_lock` and
//! `File::try_lock_shared` (stable since Rust 1.89; they shadow the old `fs2` trait methods of
//! the same names, which this crate does not use). The lock is released when the file closes.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How a handle holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockMode {
    /// One writer, no other handle.
    Exclusive,
    /// Any number of read-only handles, no writer.
    Shared,
}

/// A held lock on a chest's lock file.
#[derive(Debug)]
pub(crate) struct LockFile {
    path: PathBuf,
    file: File,
}

impl LockFile {
    /// Locks `path` (creating it when `create`), waiting up to `wait` for a conflicting holder
    /// to let go. Gives [`Error::Locked`] when the wait runs out.
    pub(crate) fn acquire(
        path: &Path,
        mode: LockMode,
        wait: Duration,
        create: bool,
    ) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(create)
            .create(create)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, "open lock file", e))?;
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(1);
        loop {
            let attempt = match mode {
                LockMode::Exclusive => file.try_lock(),
                LockMode::Shared => file.try_lock_shared(),
            };
            match attempt {
                Ok(()) => {
                    return Ok(LockFile {
                        path: path.to_path_buf(),
                        file,
                    });
                }
                Err(TryLockError::WouldBlock) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::Locked {
                            path: path.to_path_buf(),
                        });
                    }
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(TryLockError::Error(e)) => return Err(Error::io(path, "lock", e)),
            }
        }
    }

    /// Releases the lock, reporting an error the operating system gives.
    pub(crate) fn release(self) -> Result<()> {
        self.file
            .unlock()
            .map_err(|e| Error::io(&self.path, "unlock", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_and_shared_shares() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let writer = LockFile::acquire(&path, LockMode::Exclusive, Duration::ZERO, true).unwrap();
        let err = LockFile::acquire(&path, LockMode::Exclusive, Duration::ZERO, true).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(LockFile::acquire(&path, LockMode::Shared, Duration::ZERO, false).is_err());
        writer.release().unwrap();
        let r1 = LockFile::acquire(&path, LockMode::Shared, Duration::ZERO, false).unwrap();
        let _r2 = LockFile::acquire(&path, LockMode::Shared, Duration::ZERO, false).unwrap();
        assert!(LockFile::acquire(&path, LockMode::Exclusive, Duration::ZERO, true).is_err());
        drop(r1);
    }

    #[test]
    fn a_waiting_writer_gets_the_lock_when_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let holder = LockFile::acquire(&path, LockMode::Exclusive, Duration::ZERO, true).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(holder);
        });
        LockFile::acquire(&path, LockMode::Exclusive, Duration::from_secs(10), true).unwrap();
        releaser.join().unwrap();
    }
}
