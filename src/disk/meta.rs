//! The `meta` file: what a chest holds, so that it is never opened as something else.
//!
//! ```text
//! magic b"SPCHMETA" | format version u16 (1) | reserved u16 (0)
//! codec name, key type name, value type name: each a u32 length and UTF-8 bytes
//! created, unix time in ms u64
//! xxh3-64 of every byte before it u64
//! ```

use crate::disk::io::{Cursor, checksum};

/// The magic bytes the metadata file starts with.
pub(crate) const MAGIC: [u8; 8] = *b"SPCHMETA";
/// The chest format version this build writes and reads.
pub(crate) const FORMAT_VERSION: u16 = 1;

/// What the metadata file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) codec: String,
    pub(crate) key_type: String,
    pub(crate) value_type: String,
    pub(crate) created_unix_ms: u64,
}

/// Why metadata bytes were refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum MetaError {
    /// Not a metadata file, or damaged.
    Bad(String),
    /// A format version this build does not know.
    Version(u16),
}

impl Meta {
    /// The codec and types as one line, for error messages.
    pub(crate) fn describe(&self) -> String {
        format!(
            "Chest<{}, {}> with codec {}",
            self.key_type, self.value_type, self.codec
        )
    }

    /// True when `other` holds the same codec and types.
    pub(crate) fn same_contents(&self, other: &Meta) -> bool {
        self.codec == other.codec
            && self.key_type == other.key_type
            && self.value_type == other.value_type
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        for s in [&self.codec, &self.key_type, &self.value_type] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(&self.created_unix_ms.to_le_bytes());
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    pub(crate) fn parse(bytes: &[u8]) -> Result<Meta, MetaError> {
        let bad = |why: &str| MetaError::Bad(why.to_string());
        let mut c = Cursor::new(bytes);
        if c.take(8) != Some(&MAGIC[..]) {
            return Err(bad("not a chest metadata file (bad magic)"));
        }
        let version = c.u16().ok_or_else(|| bad("truncated"))?;
        if version != FORMAT_VERSION {
            return Err(MetaError::Version(version));
        }
        c.u16().ok_or_else(|| bad("truncated"))?;
        let mut text = || -> Result<String, MetaError> {
            let len = c.u32().ok_or_else(|| bad("truncated"))? as usize;
            let raw = c.take(len).ok_or_else(|| bad("truncated"))?;
            String::from_utf8(raw.to_vec()).map_err(|_| bad("a name is not UTF-8"))
        };
        let (codec, key_type, value_type) = (text()?, text()?, text()?);
        let created_unix_ms = c.u64().ok_or_else(|| bad("truncated"))?;
        let body_len = c.pos();
        let sum = c.u64().ok_or_else(|| bad("truncated"))?;
        if c.remaining() != 0 {
            return Err(bad("trailing bytes"));
        }
        if checksum(&bytes[..body_len]) != sum {
            return Err(bad("checksum mismatch"));
        }
        Ok(Meta {
            codec,
            key_type,
            value_type,
            created_unix_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Meta {
        Meta {
            codec: "bincode".into(),
            key_type: "u64".into(),
            value_type: "alloc::vec::Vec<u8>".into(),
            created_unix_ms: 42,
        }
    }

    #[test]
    fn round_trip_and_every_truncation_or_flip_is_refused() {
        let bytes = sample().encode();
        assert_eq!(Meta::parse(&bytes), Ok(sample()));
        for len in 0..bytes.len() {
            assert!(Meta::parse(&bytes[..len]).is_err(), "len {len}");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(Meta::parse(&bad).is_err(), "byte {i}");
        }
    }

    #[test]
    fn a_future_version_is_named() {
        let mut bytes = sample().encode();
        bytes[8] = 7;
        assert_eq!(Meta::parse(&bytes), Err(MetaError::Version(7)));
    }
}
