//! Checks of the on-disk formats, for tools and fuzzers: each function parses bytes as they
//! would be read from a chest's directory and says what they hold or why they are refused. None
//! of them panics or allocates more than a small multiple of its input, whatever the bytes.
//! The layouts are described in `docs/design.md`.

use crate::disk::{index_log, meta, segment, value_file};

/// What a valid value file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValueFileSummary {
    /// The encoded key.
    pub key: Vec<u8>,
    /// Bytes stored after the header.
    pub stored_len: u64,
    /// Length of the encoded value (after decompression).
    pub raw_len: u64,
    /// True when the payload is LZ4-compressed.
    pub compressed: bool,
}

/// Checks a whole value file: header, key, lengths, checksums, and decompression.
///
/// # Errors
/// A sentence naming the first check that failed.
pub fn check_value_file(bytes: &[u8]) -> Result<ValueFileSummary, String> {
    let parsed = value_file::parse(bytes)?;
    let header = &parsed.header;
    if header.compressed {
        crate::codec::lz4_decompress(parsed.payload, header.raw_len)?;
    }
    Ok(ValueFileSummary {
        key: parsed.key.to_vec(),
        stored_len: header.payload_len,
        raw_len: header.raw_len,
        compressed: header.compressed,
    })
}

/// What replaying an index log found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexSummary {
    /// Keys with a value file after replay.
    pub keys: usize,
    /// Records applied.
    pub records: u64,
    /// Bytes of header and valid records.
    pub valid_len: u64,
    /// Why replay stopped before the end (a torn tail), if it did.
    pub torn_tail: Option<String>,
}

/// Replays an index log.
///
/// # Errors
/// When the header is not an index header, or names a version this build cannot read.
pub fn check_index_log(bytes: &[u8]) -> Result<IndexSummary, String> {
    match index_log::check_header(bytes) {
        Ok(_) => {}
        Err(None) => return Err("not an index log (bad magic)".into()),
        Err(Some(v)) => return Err(format!("unsupported index version {v}")),
    }
    let replay = index_log::replay(bytes);
    Ok(IndexSummary {
        keys: replay.entries.len(),
        records: replay.records,
        valid_len: replay.valid_len,
        torn_tail: replay.torn_tail,
    })
}

/// What a chest's metadata file records.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetaSummary {
    /// The codec's name.
    pub codec: String,
    /// The key type's name.
    pub key_type: String,
    /// The value type's name.
    pub value_type: String,
    /// When the chest was created, in ms since the Unix epoch.
    pub created_unix_ms: u64,
}

/// Checks a metadata file.
///
/// # Errors
/// A sentence naming what is wrong, including an unsupported format version.
pub fn check_meta(bytes: &[u8]) -> Result<MetaSummary, String> {
    match meta::Meta::parse(bytes) {
        Ok(m) => Ok(MetaSummary {
            codec: m.codec,
            key_type: m.key_type,
            value_type: m.value_type,
            created_unix_ms: m.created_unix_ms,
        }),
        Err(meta::MetaError::Bad(reason)) => Err(reason),
        Err(meta::MetaError::Version(v)) => Err(format!("unsupported format version {v}")),
    }
}

/// What walking a segment file found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentSummary {
    /// The segment's id, from its header.
    pub id: u32,
    /// Value records that passed every check.
    pub values: u64,
    /// Tombstone records (removals) that passed every check.
    pub tombstones: u64,
    /// Where the first damage begins, and why (a torn tail, a record that fails a check, a
    /// compressed payload that does not expand), if there is any.
    pub stopped: Option<(u64, String)>,
    /// Bytes in damaged runs: from a record that fails a check to the next one that passes
    /// them all (the walk goes on there), or to the end of the file.
    pub damaged_bytes: u64,
}

/// Walks a whole segment file, checking every record (both checksums, and that a compressed
/// payload expands to its stated length).
///
/// # Errors
/// When the file header is not a segment header this build can read.
pub fn check_segment(bytes: &[u8]) -> Result<SegmentSummary, String> {
    let id = segment::parse_file_header(bytes)?;
    let (mut values, mut tombstones) = (0, 0);
    let mut bad_payload = None;
    let damaged = segment::scan(bytes, |offset, record| {
        let h = &record.header;
        if h.kind == segment::KIND_TOMBSTONE {
            tombstones += 1;
            return;
        }
        values += 1;
        if h.compressed
            && bad_payload.is_none()
            && crate::codec::lz4_decompress(record.payload, h.raw_len).is_err()
        {
            bad_payload = Some((offset, "compressed payload does not expand".to_string()));
        }
    })?;
    let first = damaged.first().map(|run| (run.start, run.why.clone()));
    let stopped = match (bad_payload, first) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    };
    Ok(SegmentSummary {
        id,
        values,
        tombstones,
        stopped,
        damaged_bytes: damaged.iter().map(|run| run.end - run.start).sum(),
    })
}

/// Checks that a read-only handle following an index gets what a replay gets: replays the
/// first `cut` bytes of `bytes` (the index as a reader opened it), then reads the rest as a
/// follower reads what the writer appended, nets it per key and applies it. When the follower
/// reads on (it does not ask for a reload), its keys and their places and the offset it stops
/// at must equal a replay of all of `bytes`.
///
/// Returns whether the follower read on (`false`: it asked for a reload, or the bytes are not
/// an index it would follow).
///
/// # Errors
/// A sentence naming the disagreement; any is a bug.
pub fn check_index_follow(bytes: &[u8], cut: usize) -> Result<bool, String> {
    use crate::disk::follow::{Appended, read_appended};
    use std::collections::HashMap;

    let cut = cut.min(bytes.len());
    if index_log::check_header(bytes).is_err() || cut < index_log::HEADER_LEN {
        return Ok(false);
    }
    let prefix = &bytes[..cut];
    let opened = index_log::replay(prefix);
    let mut keys: HashMap<Vec<u8>, crate::disk::DiskLoc> = opened
        .entries
        .iter()
        .map(|(at, loc, _)| (at.of(prefix).to_vec(), loc))
        .collect();
    let last = opened.last_record_at.map(|at| {
        let mut frame = [0u8; index_log::FRAME_LEN];
        frame.copy_from_slice(&prefix[at as usize..at as usize + index_log::FRAME_LEN]);
        (at, frame)
    });
    let offset = opened.valid_len;
    let from = last.map_or(offset, |(at, _)| at);
    let stuck_at = opened.torn_tail.is_some().then_some(offset);
    let skip = (offset - from) as usize;
    let (changes, end) = match read_appended(&bytes[from as usize..], from, skip, last, stuck_at) {
        Appended::Reload => return Ok(false),
        Appended::Read {
            changes, offset, ..
        } => (changes, offset),
    };
    for key in &changes.removes {
        keys.remove(key);
    }
    for (key, loc) in changes.puts {
        keys.insert(key, loc);
    }
    let whole = index_log::replay(bytes);
    if end != whole.valid_len {
        return Err(format!(
            "the follower stopped at byte {end}, a replay at byte {}",
            whole.valid_len
        ));
    }
    let replayed: HashMap<Vec<u8>, crate::disk::DiskLoc> = whole
        .entries
        .iter()
        .map(|(at, loc, _)| (at.of(bytes).to_vec(), loc))
        .collect();
    if keys != replayed {
        return Err(format!(
            "the follower has {} keys, a replay {}; they differ",
            keys.len(),
            replayed.len()
        ));
    }
    Ok(true)
}

/// Decodes `bytes` as a `Vec<u8>`, a `Vec<f32>` and a `Vec<f64>` with [`Bincode`]'s bulk path
/// and with serde's, and checks that the two agree: both refuse, or both give the same
/// elements (floats compared by their bits). Returns how many of the three types accepted the
/// bytes.
///
/// [`Bincode`]: crate::Bincode
///
/// # Errors
/// A sentence naming the type on which the paths disagreed.
pub fn check_value_codec(bytes: &[u8]) -> Result<usize, String> {
    use crate::Codec;
    fn agree<T, B>(bytes: &[u8], bits: impl Fn(&T) -> Vec<B>) -> Result<bool, String>
    where
        T: serde::de::DeserializeOwned + 'static,
        B: PartialEq,
    {
        let bulk = crate::Bincode.decode::<T>(bytes).ok();
        let serde =
            match bincode::serde::decode_from_slice::<T, _>(bytes, bincode::config::standard()) {
                Ok((value, used)) if used == bytes.len() => Some(value),
                _ => None,
            };
        match (bulk, serde) {
            (None, None) => Ok(false),
            (Some(a), Some(b)) if bits(&a) == bits(&b) => Ok(true),
            (a, b) => Err(format!(
                "{}: the bulk path {} and serde's {}",
                std::any::type_name::<T>(),
                if a.is_some() { "decodes" } else { "refuses" },
                if b.is_some() {
                    "decodes (differently)"
                } else {
                    "refuses"
                },
            )),
        }
    }
    let accepted = [
        agree::<Vec<u8>, u8>(bytes, Clone::clone)?,
        agree::<Vec<f32>, u32>(bytes, |v| v.iter().map(|x| x.to_bits()).collect())?,
        agree::<Vec<f64>, u64>(bytes, |v| v.iter().map(|x| x.to_bits()).collect())?,
    ];
    Ok(accepted.into_iter().filter(|&a| a).count())
}
