//! `spillchest`: look inside a chest directory without writing a program. `stats` says what
//! it holds and how big it is, `ls` lists its entries, `verify` checks every byte, `compact`
//! reclaims dead space and `repair` rebuilds the index from the files.
//!
//! It uses only the library's public API ([`spillchest::ChestInfo`],
//! [`spillchest::compact_path`], [`spillchest::repair`]), so it works on a chest of any key
//! and value types. Exit statuses are in [`failure`] and in `--help`.

mod compact;
mod failure;
mod human;
mod keys;
mod ls;
mod repair;
mod stats;
mod verify;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use failure::EXIT_STATUSES;

/// Inspect, verify, compact and repair a spillchest chest directory.
#[derive(Debug, Parser)]
#[command(name = "spillchest", version, after_help = EXIT_STATUSES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Entries, bytes of live values and on disk, files, format version, key and value types,
    /// compression and last flush time.
    #[command(after_help = EXIT_STATUSES)]
    Stats {
        /// The chest's directory.
        dir: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One line per entry: the key (decoded when the key type is a string or an integer,
    /// otherwise its hex digest), its bytes on disk, and where it lives.
    #[command(after_help = EXIT_STATUSES)]
    Ls {
        /// The chest's directory.
        dir: PathBuf,
        /// List at most N entries (in key order).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Print a JSON array, one entry object per line, instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check every stored value and every segment record; print a summary and each damaged
    /// entry. Exits 1 when anything is damaged.
    #[command(after_help = EXIT_STATUSES)]
    Verify {
        /// The chest's directory.
        dir: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Reclaim dead space: rewrite every segment holding overwritten or removed values, and the
    /// index. Prints the bytes before and after.
    #[command(after_help = EXIT_STATUSES)]
    Compact {
        /// The chest's directory.
        dir: PathBuf,
    },
    /// Rebuild the index from the value files and segments, removing damaged files and
    /// reporting what could not be recovered (exit 1 when something could not).
    #[command(after_help = EXIT_STATUSES)]
    Repair {
        /// The chest's directory.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0; usage errors get this tool's own
            // status, so that 2 always means "locked".
            let status = if e.use_stderr() {
                failure::USAGE
            } else {
                failure::OK
            };
            let _ = e.print();
            return ExitCode::from(status);
        }
    };
    let mut stdout = std::io::stdout().lock();
    let (dir, outcome) = match &cli.command {
        Command::Stats { dir, json } => (dir, stats::run(dir, *json, &mut stdout)),
        Command::Ls { dir, limit, json } => (dir, ls::run(dir, *limit, *json, &mut stdout)),
        Command::Verify { dir, json } => (dir, verify::run(dir, *json, &mut stdout)),
        Command::Compact { dir } => (dir, compact::run(dir, &mut stdout)),
        Command::Repair { dir } => (dir, repair::run(dir, &mut stdout)),
    };
    let status = match outcome.and_then(|status| {
        stdout.flush()?;
        Ok(status)
    }) {
        Ok(status) => status,
        Err(failure) => failure.report(dir),
    };
    ExitCode::from(status)
}
