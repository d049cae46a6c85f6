//! `spillchest ls DIR [--limit N] [--json]`.

use std::io::Write;
use std::path::Path;

use serde_json::json;
use spillchest::{ChestInfo, EntryInfo, EntryPlace};

use crate::failure::{Failure, OK};
use crate::keys::{KeyDecoder, ShownKey};

/// Prints one line per entry of the chest at `dir`, in key order, at most `limit` of them.
pub fn run(
    dir: &Path,
    limit: Option<usize>,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, Failure> {
    let info = ChestInfo::open(dir)?;
    let s = info.summary();
    let decoder = KeyDecoder::for_chest(&s.codec, &s.key_type);
    let mut entries: Vec<(ShownKey, EntryInfo<'_>)> =
        info.entries().map(|e| (decoder.decode(e.key), e)).collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.digest.cmp(&b.1.digest)));
    let total = entries.len();
    entries.truncate(limit.unwrap_or(total));
    if json {
        writeln!(out, "[")?;
        for (i, (key, e)) in entries.iter().enumerate() {
            let separator = if i + 1 < entries.len() { "," } else { "" };
            let doc = entry_json(dir, key, e);
            writeln!(out, "{doc}{separator}")?;
        }
        writeln!(out, "]")?;
    } else {
        let width = entries
            .iter()
            .map(|(k, _)| k.to_string().chars().count())
            .max()
            .unwrap_or(0)
            .min(48);
        for (key, e) in &entries {
            let key = key.to_string();
            writeln!(
                out,
                "{key:<width$}  {:>10}  {}",
                e.disk_bytes,
                place(dir, &e.place)
            )?;
        }
    }
    if entries.len() < total {
        eprintln!("spillchest: listed {} of {total} entries", entries.len());
    }
    drop(entries);
    info.close()?;
    Ok(OK)
}

/// Where a value lives, relative to the chest's directory: `file values/ab/<digest>.val` or
/// `segment segments/00000001.seg @16`.
fn place(dir: &Path, place: &EntryPlace) -> String {
    match place {
        EntryPlace::File { path } => format!("file {}", relative(dir, path)),
        EntryPlace::Segment { path, offset, .. } => {
            format!("segment {} @{offset}", relative(dir, path))
        }
        _ => "elsewhere".to_string(),
    }
}

/// `path` relative to the chest's directory when it lies inside it.
pub fn relative(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir).unwrap_or(path).display().to_string()
}

fn entry_json(dir: &Path, key: &ShownKey, e: &EntryInfo<'_>) -> serde_json::Value {
    let mut doc = json!({
        "key": key.to_json(),
        "key_digest": e.digest.to_string(),
        "disk_bytes": e.disk_bytes,
        "value_bytes": e.raw_len,
        "stored_bytes": e.stored_len,
        "compressed": e.compressed,
        "seq": e.seq,
    });
    let (kind, path, segment, offset) = match &e.place {
        EntryPlace::File { path } => ("file", relative(dir, path), None, None),
        EntryPlace::Segment { path, id, offset } => {
            ("segment", relative(dir, path), Some(*id), Some(*offset))
        }
        _ => ("elsewhere", String::new(), None, None),
    };
    doc["place"] = kind.into();
    doc["path"] = path.into();
    if let (Some(id), Some(offset)) = (segment, offset) {
        doc["segment"] = id.into();
        doc["offset"] = offset.into();
    }
    doc
}
