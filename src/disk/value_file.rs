//! The value file: one spilled value, self-describing so it can be verified and the index
//! rebuilt from it alone.
//!
//! ```text
//! offset size field
//!  0      8   magic  b"SPCHVAL\0"
//!  8      2   format version (1), little-endian like every integer here
//! 10      2   flags: bit 0 = payload is LZ4-compressed; bit 1 = payload is a raw array (see
//!             below; never together with bit 0); other bits must be 0
//! 12      4   key length K
//! 16      8   payload offset P (64 + K rounded up to a multiple of 64)
//! 24      8   payload length S (stored bytes)
//! 32      8   raw length R (the encoded value's length; equals S when not compressed)
//! 40      8   xxh3-64 of the payload
//! 48      8   xxh3-64 of bytes 0..48, the key, and the sequence number
//! 56      8   sequence number of the write (a higher one is newer)
//! 64      K   key (the codec's encoding of the key)
//! 64+K        zero padding up to P
//! P       S   payload
//! ```
//! The file is exactly `P + S` bytes long.
//!
//! With flag bit 1 the payload is not a codec encoding but a raw numeric array: an array header
//! (its own magic, element type, shape, byte order and checksum, padded to a multiple of 64
//! bytes) followed by the elements, little-endian, in standard (row-major) order. The layout of
//! that header is in `disk/array_file.rs`. Because `P` and the array header are multiples of
//! 64, the elements start 64-byte aligned in the file and so in a memory map of it.

use crate::disk::io::{Cursor, checksum};

/// The magic bytes every value file starts with.
pub(crate) const MAGIC: [u8; 8] = *b"SPCHVAL\0";
/// The value file format this build writes and reads.
pub(crate) const VERSION: u16 = 1;
/// Length of the fixed header.
pub(crate) const HEADER_LEN: usize = 64;
/// Payloads start on a multiple of this, so memory-mapped payloads are aligned.
pub(crate) const PAYLOAD_ALIGN: u64 = 64;
/// Flag bit: the payload is an LZ4 block.
pub(crate) const FLAG_LZ4: u16 = 1;
/// Flag bit: the payload is a raw array (array header, then the elements).
pub(crate) const FLAG_ARRAY: u16 = 2;

/// What a value file's header says, after every check passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValueHeader {
    pub(crate) compressed: bool,
    /// The payload is a raw array, not a codec encoding.
    pub(crate) array: bool,
    pub(crate) key_len: u32,
    pub(crate) payload_offset: u64,
    pub(crate) payload_len: u64,
    pub(crate) raw_len: u64,
    pub(crate) payload_checksum: u64,
    pub(crate) seq: u64,
}

/// The payload offset for a key of `key_len` bytes.
pub(crate) fn payload_offset(key_len: usize) -> u64 {
    (HEADER_LEN as u64 + key_len as u64).div_ceil(PAYLOAD_ALIGN) * PAYLOAD_ALIGN
}

/// The bytes that precede the payload: header, key, padding.
pub(crate) fn encode_prefix(
    key: &[u8],
    payload: &[u8],
    raw_len: u64,
    compressed: bool,
    seq: u64,
) -> Vec<u8> {
    let flags = if compressed { FLAG_LZ4 } else { 0 };
    encode_prefix_parts(
        key,
        payload.len() as u64,
        raw_len,
        flags,
        checksum(payload),
        seq,
    )
}

/// The bytes that precede a payload of `payload_len` bytes whose xxh3-64 is `payload_checksum`.
pub(crate) fn encode_prefix_parts(
    key: &[u8],
    payload_len: u64,
    raw_len: u64,
    flags: u16,
    payload_checksum: u64,
    seq: u64,
) -> Vec<u8> {
    let offset = payload_offset(key.len());
    let mut out = Vec::with_capacity(offset as usize);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&raw_len.to_le_bytes());
    out.extend_from_slice(&payload_checksum.to_le_bytes());
    let header_sum = header_checksum(&out, key, seq);
    out.extend_from_slice(&header_sum.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(key);
    out.resize(offset as usize, 0);
    out
}

fn header_checksum(first_48: &[u8], key: &[u8], seq: u64) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(first_48);
    h.update(key);
    h.update(&seq.to_le_bytes());
    h.digest()
}

/// Parses and checks the header and key of a value file whose first bytes are `bytes` and whose
/// total length is `file_len`. Returns the header and the key. Does not read the payload.
pub(crate) fn parse_prefix(bytes: &[u8], file_len: u64) -> Result<(ValueHeader, &[u8]), String> {
    let mut c = Cursor::new(bytes);
    let short = || format!("file is {file_len} bytes, too short for a value header");
    let magic = c.take(8).ok_or_else(short)?;
    if magic != MAGIC {
        return Err("not a value file (bad magic)".into());
    }
    let version = c.u16().ok_or_else(short)?;
    if version != VERSION {
        return Err(format!("unsupported value file version {version}"));
    }
    let flags = c.u16().ok_or_else(short)?;
    if flags & !(FLAG_LZ4 | FLAG_ARRAY) != 0 || flags == FLAG_LZ4 | FLAG_ARRAY {
        return Err(format!("unknown flags {flags:#x}"));
    }
    let key_len = c.u32().ok_or_else(short)?;
    let offset = c.u64().ok_or_else(short)?;
    let payload_len = c.u64().ok_or_else(short)?;
    let raw_len = c.u64().ok_or_else(short)?;
    let payload_checksum = c.u64().ok_or_else(short)?;
    let stored_header_sum = c.u64().ok_or_else(short)?;
    let seq = c.u64().ok_or_else(short)?;
    let key = c
        .take(key_len as usize)
        .ok_or_else(|| format!("key of {key_len} bytes runs past the end of the file"))?;
    if header_checksum(&bytes[..48], key, seq) != stored_header_sum {
        return Err("header checksum mismatch".into());
    }
    if offset != payload_offset(key_len as usize) {
        return Err(format!(
            "payload offset {offset} does not fit key length {key_len}"
        ));
    }
    let compressed = flags & FLAG_LZ4 != 0;
    if !compressed && raw_len != payload_len {
        return Err(format!(
            "raw length {raw_len} differs from stored length {payload_len}"
        ));
    }
    if offset.checked_add(payload_len) != Some(file_len) {
        return Err(format!(
            "file is {file_len} bytes, header says {} (torn or truncated write)",
            offset.saturating_add(payload_len)
        ));
    }
    let header = ValueHeader {
        compressed,
        array: flags & FLAG_ARRAY != 0,
        key_len,
        payload_offset: offset,
        payload_len,
        raw_len,
        payload_checksum,
        seq,
    };
    Ok((header, key))
}

/// A fully checked value file held in memory.
#[derive(Debug)]
pub(crate) struct ParsedValue<'a> {
    pub(crate) header: ValueHeader,
    pub(crate) key: &'a [u8],
    pub(crate) payload: &'a [u8],
}

/// Parses a whole value file and checks everything, including the payload checksum.
pub(crate) fn parse(bytes: &[u8]) -> Result<ParsedValue<'_>, String> {
    let (header, key) = parse_prefix(bytes, bytes.len() as u64)?;
    // parse_prefix checked that offset + payload_len == bytes.len().
    let payload = bytes
        .get(header.payload_offset as usize..)
        .ok_or_else(|| "payload offset past the end of the file".to_string())?;
    if checksum(payload) != header.payload_checksum {
        return Err("payload checksum mismatch".into());
    }
    Ok(ParsedValue {
        header,
        key,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(key: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut f = encode_prefix(key, payload, payload.len() as u64, false, 3);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn round_trip_aligns_the_payload() {
        for key_len in [0usize, 1, 63, 64, 10_000] {
            let key = vec![7u8; key_len];
            let f = file(&key, b"payload");
            let p = parse(&f).unwrap();
            assert_eq!(p.key, &key[..]);
            assert_eq!(p.payload, b"payload");
            assert_eq!(p.header.payload_offset % PAYLOAD_ALIGN, 0);
            assert!(!p.header.compressed);
        }
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let f = file(b"key", b"some payload bytes");
        for i in 0..f.len() {
            let mut bad = f.clone();
            bad[i] ^= 0x40;
            // Padding bytes are not covered by a checksum but must still not yield a wrong value:
            // flipping one leaves key and payload intact.
            if let Ok(p) = parse(&bad) {
                assert_eq!(p.key, b"key", "byte {i}");
                assert_eq!(p.payload, b"some payload bytes", "byte {i}");
            }
        }
    }

    #[test]
    fn the_array_flag_is_read_and_cannot_be_combined_with_lz4() {
        let payload = b"array payload";
        let sum = checksum(payload);
        let mut f = encode_prefix_parts(
            b"k",
            payload.len() as u64,
            payload.len() as u64,
            FLAG_ARRAY,
            sum,
            1,
        );
        f.extend_from_slice(payload);
        assert!(parse(&f).unwrap().header.array);
        let mut both = encode_prefix_parts(
            b"k",
            payload.len() as u64,
            payload.len() as u64,
            FLAG_ARRAY | FLAG_LZ4,
            sum,
            2,
        );
        both.extend_from_slice(payload);
        assert!(parse(&both).unwrap_err().contains("flags"));
    }

    #[test]
    fn truncation_and_extension_are_detected() {
        let f = file(b"key", b"payload");
        for len in 0..f.len() {
            assert!(parse(&f[..len]).is_err(), "len {len}");
        }
        let mut long = f.clone();
        long.push(0);
        assert!(parse(&long).is_err());
    }
}
