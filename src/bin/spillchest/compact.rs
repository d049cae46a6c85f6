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
        "reclaimed {}: {} rewritten ({} moved), {} deleted, index rewritten; {}",
        sized(r.bytes_before.saturating_sub(r.bytes_after)),
        human::count(r.segments_rewritten, "segment"),
        human::count(r.records_moved, "record"),
        human::count(r.segments_deleted, "empty segment"),
        human::count(r.entries, "entry"),
    )?;
    Ok(OK)
}
