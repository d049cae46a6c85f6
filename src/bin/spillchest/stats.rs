//! `spillchest stats DIR [--json]`.

use std::io::Write;
use std::path::Path;

use serde_json::json;
use spillchest::{ChestInfo, ChestSummary};

use crate::failure::{Failure, OK};
use crate::human;

/// Prints what the chest at `dir` holds and how big it is.
pub fn run(dir: &Path, json: bool, out: &mut dyn Write) -> Result<u8, Failure> {
    let info = ChestInfo::open(dir)?;
    let s = info.summary();
    let index_problem = info.index_problem();
    let damaged_on_open = info.damage_on_open().len();
    if json {
        let doc = json!({
            "path": dir.display().to_string(),
            "format_version": s.format_version,
            "codec": s.codec,
            "key_type": s.key_type,
            "value_type": s.value_type,
            "created_unix_ms": s.created_unix_ms,
            "created": human::rfc3339(s.created_unix_ms),
            "last_flush_unix_ms": s.last_flush_unix_ms,
            "last_flush": s.last_flush_unix_ms.map(human::rfc3339),
            "entries": s.entries,
            "value_bytes": s.value_bytes,
            "stored_bytes": s.stored_bytes,
            "compressed_entries": s.compressed_entries,
            "disk_bytes": s.disk_bytes,
            "live_disk_bytes": s.live_disk_bytes,
            "dead_bytes": s.dead_bytes,
            "value_file_bytes": s.value_file_bytes,
            "segment_bytes": s.segment_bytes,
            "index_bytes": s.index_bytes,
            "value_files": s.value_files,
            "segments": s.segments,
            "index_problem": index_problem,
            "damaged_on_open": damaged_on_open,
        });
        serde_json::to_writer_pretty(&mut *out, &doc).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        write_text(dir, s, out)?;
        if let Some(problem) = index_problem {
            writeln!(
                out,
                "{:<16}{problem} (run `spillchest verify`)",
                "index problem"
            )?;
        }
        if damaged_on_open > 0 {
            writeln!(
                out,
                "{:<16}{damaged_on_open} damaged or stale files left out (run `spillchest verify`)",
                "damage"
            )?;
        }
    }
    info.close()?;
    Ok(OK)
}

fn write_text(dir: &Path, s: &ChestSummary, out: &mut dyn Write) -> std::io::Result<()> {
    let row = |out: &mut dyn Write, name: &str, value: String| writeln!(out, "{name:<16}{value}");
    let sized = |n: u64| format!("{n} bytes ({})", human::bytes(n));
    row(out, "chest", dir.display().to_string())?;
    row(out, "format version", s.format_version.to_string())?;
    row(out, "codec", s.codec.clone())?;
    row(out, "key type", s.key_type.clone())?;
    row(out, "value type", s.value_type.clone())?;
    row(out, "created", human::utc(s.created_unix_ms))?;
    let flushed = s.last_flush_unix_ms.map_or("never".to_string(), human::utc);
    row(out, "last flush", flushed)?;
    row(out, "entries", s.entries.to_string())?;
    row(out, "live values", sized(s.value_bytes))?;
    let compression = if s.compressed_entries == 0 {
        "none".to_string()
    } else {
        format!(
            "lz4 on {} of {} entries; stored {} of {} encoded bytes",
            s.compressed_entries, s.entries, s.stored_bytes, s.value_bytes
        )
    };
    row(out, "compression", compression)?;
    row(out, "on disk", sized(s.disk_bytes + s.index_bytes))?;
    row(
        out,
        "  value files",
        format!("{} holding {}", s.value_files, sized(s.value_file_bytes)),
    )?;
    row(
        out,
        "  segments",
        format!("{} holding {}", s.segments, sized(s.segment_bytes)),
    )?;
    row(out, "  index", sized(s.index_bytes))?;
    row(out, "live on disk", sized(s.live_disk_bytes))?;
    let dead = s.dead_bytes;
    let hint = if dead > 0 {
        " (`spillchest compact` reclaims it)"
    } else {
        ""
    };
    row(out, "dead on disk", format!("{}{hint}", sized(dead)))
}
