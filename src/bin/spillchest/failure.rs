//! Exit statuses, and what the tool says when a command cannot do its work.

use std::io;
use std::path::Path;

use spillchest::Error;

/// Success: the command did its work and found nothing wrong.
pub const OK: u8 = 0;
/// Damage: `verify` found damaged entries or files, `repair` could not recover something, or a
/// command stopped at damaged data.
pub const DAMAGED: u8 = 1;
/// The chest is locked by a writer (only `compact` and `repair` need the lock).
pub const LOCKED: u8 = 2;
/// The path is not a chest (missing, not a directory, no chest metadata), is in a format this
/// build cannot read, or could not be read or written.
pub const UNUSABLE: u8 = 3;
/// The command line is wrong (unknown command or option, missing directory).
pub const USAGE: u8 = 4;

/// The exit statuses, for `--help`.
pub const EXIT_STATUSES: &str = "\
Exit status:
  0  success; nothing damaged
  1  damage: verify found damaged entries or files, repair could not recover
     everything, or a command stopped at damaged data
  2  the chest is locked: compact or repair found a writer holding it (stats, ls
     and verify run beside a writer); the message names the lock file
  3  not a chest (missing, not a directory, no chest metadata), a format this
     build cannot read, or an I/O error
  4  bad command line";

/// Why a command could not finish.
#[derive(Debug)]
pub enum Failure {
    /// The library refused or failed.
    Chest(Error),
    /// Writing the output failed.
    Output(io::Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Chest(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Output(e)
    }
}

impl Failure {
    /// Prints what went wrong with the chest at `dir` to stderr and returns the exit status.
    pub fn report(self, dir: &Path) -> u8 {
        let (status, message) = match self {
            // A reader that stopped reading (`spillchest ls DIR | head`) is not an error.
            Failure::Output(e) if e.kind() == io::ErrorKind::BrokenPipe => return OK,
            Failure::Output(e) => (UNUSABLE, format!("cannot write the output: {e}")),
            Failure::Chest(e) => describe(dir, &e),
        };
        eprintln!("spillchest: {message}");
        status
    }
}

/// The exit status and message for a library error on the chest at `dir`.
fn describe(dir: &Path, error: &Error) -> (u8, String) {
    let shown = dir.display();
    match error {
        Error::Locked { path } => (
            LOCKED,
            format!(
                "{shown} is locked by another process: its lock file {} is held. \
                 Try again once that process has closed the chest.",
                path.display()
            ),
        ),
        Error::NotAChest { .. } if !dir.exists() => (UNUSABLE, format!("{shown} does not exist")),
        Error::NotAChest { .. } if !dir.is_dir() => (
            UNUSABLE,
            format!("{shown} is not a chest: it is a file, not a directory"),
        ),
        Error::NotAChest { .. } => (
            UNUSABLE,
            format!("{shown} is not a chest: it has no chest metadata file (meta)"),
        ),
        Error::Corrupt { .. } => (
            DAMAGED,
            format!(
                "{error}. Run `spillchest verify {shown}` to see all damage, \
                 `spillchest repair {shown}` to rebuild the index from the files."
            ),
        ),
        other => (UNUSABLE, other.to_string()),
    }
}
