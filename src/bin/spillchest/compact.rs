//! `spillchest compact DIR`.

use std::io::Write;
use std::path::Path;

use crate::failure::{Failure, OK};
use crate::human;

/// Reclaims the dead space of the chest at `dir` and prints the bytes before and after.
pub fn run(dir: &Path, out: &mut dyn Write) -> Result<u8, Failure> {
    let r = spillchest::compact_path(dir)?;
    let sized = |n: u64| format!("{n} bytes ({})", human::bytes(n));
    writeln!(out, "before    {}", sized(r.bytes_before))?;
    writeln!(out, "after     {}", sized(r.bytes_after))?;
    writeln!(
        out,
        "reclaimed {}: {} segments rewritten ({} records moved), {} empty segments deleted, \
         index rewritten; {} entries",
        sized(r.bytes_before.saturating_sub(r.bytes_after)),
        r.segments_rewritten,
        r.records_moved,
        r.segments_deleted,
        r.entries
    )?;
    Ok(OK)
}
