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
        Ok(()) => {}
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
    /// Where the walk stopped before the end, and why (a torn tail or damage), if it did.
    pub stopped: Option<(u64, String)>,
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
    let stopped = segment::scan(bytes, |offset, record| {
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
    Ok(SegmentSummary {
        id,
        values,
        tombstones,
        stopped: bad_payload.or(stopped),
    })
}
