//! Where each file of a chest lives, and the key digest that names value files.

use std::fmt;
use std::path::{Path, PathBuf};

/// The lock file, held exclusively by a writer and shared by read-only handles.
pub(crate) const LOCK_FILE: &str = "lock";
/// The metadata file: format version, codec, key and value type names.
pub(crate) const META_FILE: &str = "meta";
/// The index log.
pub(crate) const INDEX_FILE: &str = ".keys";
/// The directory holding value files, fanned out by the first byte of the digest.
pub(crate) const VALUES_DIR: &str = "values";
/// The directory holding segment files.
pub(crate) const SEGMENTS_DIR: &str = "segments";
/// Suffix of a complete value file.
pub(crate) const VALUE_SUFFIX: &str = ".val";
/// Suffix of a file being written; never read, removed on open.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// The 128-bit xxh3 digest of a key's encoded bytes. Value files are named by it, never by the
/// key's text, so no key can make a file appear outside the chest's directory and keys whose
/// text looks alike (`1` and `"1"`) never share a file. It prints as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyDigest(u128);

impl KeyDigest {
    /// The digest of an encoded key.
    pub fn of(key_bytes: &[u8]) -> Self {
        KeyDigest(xxhash_rust::xxh3::xxh3_128(key_bytes))
    }

    /// A rank that orders digests by the bucket a [`DigestHalvesMap`] of any size puts them in (its
    /// hash's low bits first), so inserting many in this order walks the table forwards.
    pub(crate) fn table_order(&self) -> u64 {
        (self.0 as u64).reverse_bits()
    }

    /// Parses 32 lowercase hex digits, as in a value file's name.
    pub(crate) fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(KeyDigest)
    }

    /// The fan-out directory of this digest: its first byte.
    pub(crate) fn fan_out_index(self) -> usize {
        (self.0 >> 120) as usize
    }

    /// The fan-out directory name: the digest's first byte in hex.
    fn fan_out(self) -> String {
        format!("{:02x}", self.fan_out_index())
    }
}

/// A hasher for maps keyed by [`KeyDigest`]: the digest is already a uniform hash, so its low
/// 64 bits are used as they are instead of hashing it again.
#[derive(Default, Clone, Copy)]
pub(crate) struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if something other than a digest is hashed: fold it in.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 ^= value as u64;
    }

    fn write_u64(&mut self, value: u64) {
        self.0 ^= value;
    }
}

/// A digest as two 64-bit halves, for tables with millions of entries: a `u128` is aligned
/// to 16 bytes, which would pad a (digest, `usize`) bucket from 24 bytes to 32. It hashes as
/// its low half, like a [`KeyDigest`] under [`DigestHasher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DigestHalves {
    low: u64,
    high: u64,
}

impl From<KeyDigest> for DigestHalves {
    fn from(digest: KeyDigest) -> Self {
        DigestHalves {
            low: digest.0 as u64,
            high: (digest.0 >> 64) as u64,
        }
    }
}

impl std::hash::Hash for DigestHalves {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.low);
    }
}

/// A `HashMap` keyed by digests in halves (see [`DigestHalves`]).
pub(crate) type DigestHalvesMap<V> =
    std::collections::HashMap<DigestHalves, V, std::hash::BuildHasherDefault<DigestHasher>>;

/// A `HashSet` of digests.
pub(crate) type DigestSet =
    std::collections::HashSet<KeyDigest, std::hash::BuildHasherDefault<DigestHasher>>;

impl fmt::Display for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({self})")
    }
}

/// The paths of one chest directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: &Path) -> Self {
        Layout {
            root: root.to_path_buf(),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn lock(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }

    pub(crate) fn meta(&self) -> PathBuf {
        self.root.join(META_FILE)
    }

    pub(crate) fn index(&self) -> PathBuf {
        self.root.join(INDEX_FILE)
    }

    pub(crate) fn values(&self) -> PathBuf {
        self.root.join(VALUES_DIR)
    }

    pub(crate) fn segments(&self) -> PathBuf {
        self.root.join(SEGMENTS_DIR)
    }

    /// The directory a value file lives in.
    pub(crate) fn value_dir(&self, digest: KeyDigest) -> PathBuf {
        self.values().join(digest.fan_out())
    }

    /// The path of the value file for `digest`.
    pub(crate) fn value_file(&self, digest: KeyDigest) -> PathBuf {
        self.value_dir(digest)
            .join(format!("{digest}{VALUE_SUFFIX}"))
    }

    /// A temporary path for a value file that no other writer uses: a value built in pieces
    /// (an array being filled) may live there while other values of the same key are written.
    #[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
    pub(crate) fn value_tmp_unique(&self, digest: KeyDigest) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        self.value_dir(digest)
            .join(format!("{digest}.{pid}-{n}{TMP_SUFFIX}"))
    }

    /// The temporary path a value file is written under before its rename.
    pub(crate) fn value_tmp(&self, digest: KeyDigest) -> PathBuf {
        self.value_dir(digest).join(format!("{digest}{TMP_SUFFIX}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_halves_hash_as_the_digest_does_and_keep_both_halves() {
        use std::hash::BuildHasher;
        let build = std::hash::BuildHasherDefault::<DigestHasher>::default();
        for key in [&b"a"[..], b"another key", b""] {
            let digest = KeyDigest::of(key);
            let halves = DigestHalves::from(digest);
            assert_eq!(build.hash_one(halves), build.hash_one(digest));
            assert_eq!(
                (u128::from(halves.high) << 64) | u128::from(halves.low),
                digest.0
            );
        }
        assert_ne!(
            DigestHalves::from(KeyDigest(1)),
            DigestHalves::from(KeyDigest(1 | (1 << 64)))
        );
    }

    #[test]
    fn value_paths_stay_inside_the_root_whatever_the_key() {
        let layout = Layout::new(Path::new("/chest"));
        for key in [&b"../x"[..], b"/etc/passwd", b"", b"\0", &[0xff; 10_000]] {
            let digest = KeyDigest::of(key);
            let path = layout.value_file(digest);
            assert!(path.starts_with("/chest/values/"), "{}", path.display());
            assert_eq!(path.components().count(), 5, "{}", path.display());
            let name = path.file_name().unwrap().to_str().unwrap();
            assert_eq!(
                KeyDigest::from_hex(name.strip_suffix(VALUE_SUFFIX).unwrap()),
                Some(digest)
            );
        }
    }

    #[test]
    fn digests_differ_for_different_bytes_and_hex_parsing_is_strict() {
        assert_ne!(KeyDigest::of(b"1"), KeyDigest::of(b"01"));
        assert_eq!(KeyDigest::from_hex("zz"), None);
        assert_eq!(KeyDigest::from_hex(&"A".repeat(32)), None);
        assert!(KeyDigest::from_hex(&"a".repeat(32)).is_some());
    }
}
