//! The chest's lock file, locked exclusively by the one writer with the standard library's
//! `File::try_lock` (stable since Rust 1.89; it shadows the old `fs2` trait method of the same
//! name, which this crate does not use). Read-only handles take no lock: they follow what the
//! writer appends to the index (`follow.rs`), so readers and the writer never wait for each
//! other. The lock is released when the file closes.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The writer's lock on a chest's lock file.
#[derive(Debug)]
pub(crate) struct LockFile {
    path: PathBuf,
    file: File,
}

impl LockFile {
    /// Locks `path` exclusively (creating it if absent), waiting up to `wait` for another
    /// writer to let go. Gives [`Error::Locked`] when the wait runs out.
    pub(crate) fn acquire(path: &Path, wait: Duration) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, "open lock file", e))?;
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
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
    fn one_writer_at_a_time_and_the_lock_is_free_again_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let writer = LockFile::acquire(&path, Duration::ZERO).unwrap();
        let err = LockFile::acquire(&path, Duration::ZERO).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        writer.release().unwrap();
        let again = LockFile::acquire(&path, Duration::ZERO).unwrap();
        assert!(LockFile::acquire(&path, Duration::ZERO).is_err());
        drop(again);
        LockFile::acquire(&path, Duration::ZERO).unwrap();
    }

    #[test]
    fn a_waiting_writer_gets_the_lock_when_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let holder = LockFile::acquire(&path, Duration::ZERO).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(holder);
        });
        LockFile::acquire(&path, Duration::from_secs(10)).unwrap();
        releaser.join().unwrap();
    }
}
