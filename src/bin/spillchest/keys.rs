//! Showing keys: a chest records its key type's name and its codec's, so keys of a string or
//! integer type encoded with the default codec (bincode 2, standard configuration) are decoded;
//! any other key is shown as its hex digest.

use std::cmp::Ordering;
use std::fmt;

use spillchest::{Bincode, Codec, KeyDigest};

/// How the keys of one chest are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDecoder {
    /// A string type.
    Text,
    /// An unsigned integer type, by its width in bits (`usize` is encoded as `u64`).
    Unsigned(u32),
    /// A signed integer type, by its width in bits.
    Signed(u32),
    /// Anything else: keys are shown as digests.
    Opaque,
}

impl KeyDecoder {
    /// The decoder for keys of the type named `key_type`, encoded by the codec named `codec`.
    pub fn for_chest(codec: &str, key_type: &str) -> KeyDecoder {
        if codec != Bincode::NAME {
            return KeyDecoder::Opaque;
        }
        match key_type {
            "alloc::string::String"
            | "std::string::String"
            | "&str"
            | "str"
            | "alloc::boxed::Box<str>"
            | "alloc::borrow::Cow<str>"
            | "alloc::sync::Arc<str>"
            | "alloc::rc::Rc<str>" => KeyDecoder::Text,
            "u8" => KeyDecoder::Unsigned(8),
            "u16" => KeyDecoder::Unsigned(16),
            "u32" => KeyDecoder::Unsigned(32),
            "u64" | "usize" => KeyDecoder::Unsigned(64),
            "u128" => KeyDecoder::Unsigned(128),
            "i8" => KeyDecoder::Signed(8),
            "i16" => KeyDecoder::Signed(16),
            "i32" => KeyDecoder::Signed(32),
            "i64" | "isize" => KeyDecoder::Signed(64),
            "i128" => KeyDecoder::Signed(128),
            _ => KeyDecoder::Opaque,
        }
    }

    /// The key whose encoding is `bytes`; its digest when it cannot be decoded.
    pub fn decode(self, bytes: &[u8]) -> ShownKey {
        let decoded = match self {
            KeyDecoder::Text => Bincode.decode::<String>(bytes).ok().map(ShownKey::Text),
            KeyDecoder::Unsigned(bits) => unsigned(bits, bytes).map(ShownKey::Unsigned),
            KeyDecoder::Signed(bits) => signed(bits, bytes).map(ShownKey::Signed),
            KeyDecoder::Opaque => None,
        };
        decoded.unwrap_or_else(|| ShownKey::Digest(KeyDigest::of(bytes)))
    }
}

fn unsigned(bits: u32, bytes: &[u8]) -> Option<u128> {
    let b = Bincode;
    match bits {
        8 => b.decode::<u8>(bytes).ok().map(u128::from),
        16 => b.decode::<u16>(bytes).ok().map(u128::from),
        32 => b.decode::<u32>(bytes).ok().map(u128::from),
        64 => b.decode::<u64>(bytes).ok().map(u128::from),
        _ => b.decode::<u128>(bytes).ok(),
    }
}

fn signed(bits: u32, bytes: &[u8]) -> Option<i128> {
    let b = Bincode;
    match bits {
        8 => b.decode::<i8>(bytes).ok().map(i128::from),
        16 => b.decode::<i16>(bytes).ok().map(i128::from),
        32 => b.decode::<i32>(bytes).ok().map(i128::from),
        64 => b.decode::<i64>(bytes).ok().map(i128::from),
        _ => b.decode::<i128>(bytes).ok(),
    }
}

/// A key as the tool shows it. Keys of one chest are all of one kind (a key that fails to
/// decode falls back to its digest), and sort in their natural order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShownKey {
    /// An unsigned integer key.
    Unsigned(u128),
    /// A signed integer key.
    Signed(i128),
    /// A string key.
    Text(String),
    /// A key of another type, by its digest.
    Digest(KeyDigest),
}

impl ShownKey {
    /// The key as a JSON value: a number (a string for 128-bit values beyond what JSON
    /// readers hold exactly), a string, or null when only the digest is known.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ShownKey::Unsigned(n) => match u64::try_from(*n) {
                Ok(n) => n.into(),
                Err(_) => n.to_string().into(),
            },
            ShownKey::Signed(n) => match i64::try_from(*n) {
                Ok(n) => n.into(),
                Err(_) => n.to_string().into(),
            },
            ShownKey::Text(s) => s.clone().into(),
            ShownKey::Digest(_) => serde_json::Value::Null,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            ShownKey::Unsigned(_) => 0,
            ShownKey::Signed(_) => 1,
            ShownKey::Text(_) => 2,
            ShownKey::Digest(_) => 3,
        }
    }
}

impl Ord for ShownKey {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (ShownKey::Unsigned(a), ShownKey::Unsigned(b)) => a.cmp(b),
            (ShownKey::Signed(a), ShownKey::Signed(b)) => a.cmp(b),
            (ShownKey::Text(a), ShownKey::Text(b)) => a.cmp(b),
            (ShownKey::Digest(a), ShownKey::Digest(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for ShownKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ShownKey {
    /// Integers as they are, strings quoted and escaped (so every key stays on one line and
    /// `"1"` differs from `1`), other keys as their digest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShownKey::Unsigned(n) => write!(f, "{n}"),
            ShownKey::Signed(n) => write!(f, "{n}"),
            ShownKey::Text(s) => write!(f, "{s:?}"),
            ShownKey::Digest(d) => write!(f, "{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode<T: serde::Serialize + 'static>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        Bincode.encode(value, &mut out).unwrap();
        out
    }

    #[test]
    fn strings_and_integers_decode_and_other_keys_show_their_digest() {
        let text = KeyDecoder::for_chest("bincode-2-standard", "alloc::string::String");
        assert_eq!(text.decode(&encode(&"a\nb")).to_string(), "\"a\\nb\"");
        let byte = KeyDecoder::for_chest("bincode-2-standard", "u8");
        assert_eq!(byte.decode(&encode(&255u8)), ShownKey::Unsigned(255));
        let wide = KeyDecoder::for_chest("bincode-2-standard", "i64");
        assert_eq!(wide.decode(&encode(&-300i64)), ShownKey::Signed(-300));
        let other = KeyDecoder::for_chest("bincode-2-standard", "(u32, u32)");
        let bytes = encode(&(1u32, 2u32));
        assert_eq!(
            other.decode(&bytes),
            ShownKey::Digest(KeyDigest::of(&bytes))
        );
        let foreign = KeyDecoder::for_chest("json", "u64");
        assert_eq!(foreign, KeyDecoder::Opaque);
        assert!(ShownKey::Unsigned(2) < ShownKey::Unsigned(10));
    }
}
