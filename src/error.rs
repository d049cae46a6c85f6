//! The one error type of the crate.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::codec::CodecError;

/// What can go wrong in a chest. Every variant names what failed and where.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on `path` failed.
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// What the chest was doing, e.g. "write value file".
        action: &'static str,
        /// The error from the operating system.
        source: io::Error,
    },
    /// The disk (or the user's quota) is full. Nothing stored before was touched; the value that
    /// was being written stays in memory.
    DiskFull {
        /// The file that could not be written.
        path: PathBuf,
        /// The error from the operating system.
        source: io::Error,
    },
    /// Bytes read from `path` failed a check (length, checksum, magic, key). No value is
    /// returned from damaged bytes.
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },
    /// Another writer holds the chest's lock file at `path` (read-only handles take no lock).
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The chest at `path` was created for other key or value types, or another codec.
    TypeMismatch {
        /// The chest's metadata file.
        path: PathBuf,
        /// What this handle asked for: codec, key type and value type.
        expected: String,
        /// What the chest records.
        found: String,
    },
    /// The chest at `path` was written in a format version this build cannot read.
    UnsupportedFormat {
        /// The file carrying the version.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// The directory exists, holds files, and is not a chest.
    NotAChest {
        /// The directory.
        path: PathBuf,
    },
    /// A key or value could not be encoded. The chest is unchanged.
    Encode {
        /// What was being encoded: "key", or "value of key" followed by the key's digest.
        what: String,
        /// The codec's error.
        source: CodecError,
    },
    /// Bytes that passed their checksum could not be decoded into the requested type.
    Decode {
        /// The file the bytes came from.
        path: PathBuf,
        /// The codec's error.
        source: CodecError,
    },
    /// A write was attempted on a handle opened with
    /// [`read_only`](crate::ChestBuilder::read_only).
    ReadOnly {
        /// The chest's directory.
        path: PathBuf,
    },
    /// The entry holds another kind of value than the one asked for: a raw array read with
    /// [`get`](crate::Chest::get), a serialized value read as an array, or an array of another
    /// element type or number of dimensions. Nothing is reinterpreted.
    KindMismatch {
        /// The entry's value file (the path it would have, when the value is only in memory).
        path: PathBuf,
        /// What was asked for.
        expected: String,
        /// What the entry holds.
        found: String,
    },
    /// The builder was given options that do not fit together.
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// Writing spilled values panicked (a bug, or a key's `Serialize`, `Hash` or `Eq` that
    /// panicked there), so the disk tier may have stopped half-way through a batch. The chest
    /// then refuses every change and flush with this error, while reads go on; what was
    /// written before stays on disk, as after a crash. Drop the chest and open it again.
    WriterPanicked {
        /// The chest's directory.
        path: PathBuf,
        /// What the panic said.
        message: String,
    },
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a caught panic's payload says, when it is a message (`panic!` with a literal or a
/// format string).
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

impl Error {
    /// An I/O error on `path`; a full disk or quota becomes [`Error::DiskFull`].
    pub(crate) fn io(path: impl AsRef<Path>, action: &'static str, source: io::Error) -> Self {
        let path = path.as_ref().to_path_buf();
        match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                Error::DiskFull { path, source }
            }
            _ => Error::Io {
                path,
                action,
                source,
            },
        }
    }

    /// Bytes at `path` failed a check.
    pub(crate) fn corrupt(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.as_ref().to_path_buf(),
            reason: reason.into(),
        }
    }

    /// True when the error says the disk is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::DiskFull { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io {
                path,
                action,
                source,
            } => write!(f, "{action} failed for {}: {source}", path.display()),
            Error::DiskFull { path, .. } => write!(
                f,
                "disk full: no space left to write {}; entries stored before are intact",
                path.display()
            ),
            Error::Corrupt { path, reason } => {
                write!(f, "corrupt data in {}: {reason}", path.display())
            }
            Error::Locked { path } => write!(
                f,
                "chest is locked by another writer (lock file {})",
                path.display()
            ),
            Error::TypeMismatch {
                path,
                expected,
                found,
            } => write!(
                f,
                "chest at {} holds {found}, but was opened as {expected}",
                path.display()
            ),
            Error::UnsupportedFormat { path, version } => write!(
                f,
                "{} has format version {version}, which this build of spillchest cannot read",
                path.display()
            ),
            Error::NotAChest { path } => write!(
                f,
                "{} is not a chest: it holds other files and no chest metadata",
                path.display()
            ),
            Error::Encode { what, source } => write!(f, "cannot encode {what}: {source}"),
            Error::Decode { path, source } => {
                write!(f, "cannot decode bytes from {}: {source}", path.display())
            }
            Error::ReadOnly { path } => {
                write!(f, "chest at {} was opened read-only", path.display())
            }
            Error::KindMismatch {
                path,
                expected,
                found,
            } => write!(
                f,
                "{} holds {found}, but {expected} was asked for",
                path.display()
            ),
            Error::InvalidConfig { reason } => write!(f, "invalid chest options: {reason}"),
            Error::WriterPanicked { path, message } => write!(
                f,
                "writing the spilled values of the chest at {} panicked ({message}); it refuses \
                 changes from now on: open it again",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::DiskFull { source, .. } => Some(source),
            Error::Encode { source, .. } | Error::Decode { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disk_becomes_its_own_variant_and_says_so() {
        let e = Error::io("/x/y", "write", io::Error::from(io::ErrorKind::StorageFull));
        assert!(e.is_disk_full());
        assert!(e.to_string().contains("disk full"), "{e}");
        let e = Error::io("/x/y", "write", io::Error::from(io::ErrorKind::NotFound));
        assert!(!e.is_disk_full());
        assert!(e.to_string().contains("/x/y"), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
