//! Serialization and compression, behind a trait so the codec can be swapped.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The error a [`Codec`] returns.
pub type CodecError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Turns keys and values into bytes and back.
///
/// The chest encodes keys to name their files and values to spill them. A codec must be
/// deterministic: equal values encode to equal bytes (two keys are the same key exactly when
/// their encodings are equal). Its [`NAME`](Codec::NAME) is recorded in the chest's metadata,
/// and opening a chest with another codec is an [`Error::TypeMismatch`](crate::Error).
pub trait Codec: Send + Sync + 'static {
    /// A stable name recorded in the chest's metadata, e.g. `"bincode-2-standard"`.
    const NAME: &'static str;

    /// Appends the encoding of `value` to `out`.
    ///
    /// # Errors
    /// Whatever the value's `Serialize` or the format rejects.
    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>)
    -> Result<(), CodecError>;

    /// Decodes a value from exactly `bytes`.
    ///
    /// # Errors
    /// Bytes that are not a valid encoding of `T`, or that have bytes left over.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError>;

    /// The length `encode` would produce. The default encodes into a scratch buffer; codecs
    /// that can count without writing should override it.
    ///
    /// # Errors
    /// As [`encode`](Codec::encode).
    fn encoded_len<T: Serialize + ?Sized>(&self, value: &T) -> Result<u64, CodecError> {
        let mut buf = Vec::new();
        self.encode(value, &mut buf)?;
        Ok(buf.len() as u64)
    }
}

/// The default codec: bincode 2 with its standard configuration (variable-length integers),
/// through serde.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

/// A bincode writer that only counts bytes, so a value's weight costs no allocation.
struct CountingWriter(u64);

impl bincode::enc::write::Writer for CountingWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0 += bytes.len() as u64;
        Ok(())
    }
}

/// A bincode writer that appends to a `Vec`.
struct VecAppender<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for VecAppender<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        // Serde hands bincode a `Vec<u8>` one byte at a time: a push, not a call to memcpy.
        if let [byte] = bytes {
            self.0.push(*byte);
        } else {
            self.0.extend_from_slice(bytes);
        }
        Ok(())
    }
}

impl Codec for Bincode {
    const NAME: &'static str = "bincode-2-standard";

    fn encode<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let start = out.len();
        let result = bincode::serde::encode_into_writer(
            value,
            VecAppender(out),
            bincode::config::standard(),
        );
        if result.is_err() {
            out.truncate(start);
        }
        Ok(result?)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let (value, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())?;
        if used != bytes.len() {
            return Err(format!("{} bytes left over after the value", bytes.len() - used).into());
        }
        Ok(value)
    }

    fn encoded_len<T: Serialize + ?Sized>(&self, value: &T) -> Result<u64, CodecError> {
        let mut counter = CountingWriter(0);
        bincode::serde::encode_into_writer(value, &mut counter, bincode::config::standard())?;
        Ok(counter.0)
    }
}

/// How spilled values are compressed. Each value file records its own choice, so a chest can be
/// reopened with another setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Values are stored as encoded.
    #[default]
    None,
    /// Each value is compressed with LZ4 (lz4_flex block format); a value that does not shrink
    /// is stored uncompressed.
    Lz4,
}

impl Compression {
    /// Compresses `raw` into `out` (cleared first) and returns true, or returns false when
    /// compression is off or would not make the value smaller.
    pub(crate) fn compress(self, raw: &[u8], out: &mut Vec<u8>) -> bool {
        match self {
            Compression::None => false,
            Compression::Lz4 => {
                out.clear();
                out.resize(lz4_flex::block::get_maximum_output_size(raw.len()), 0);
                match lz4_flex::block::compress_into(raw, out) {
                    Ok(n) if n < raw.len() => {
                        out.truncate(n);
                        true
                    }
                    _ => false,
                }
            }
        }
    }
}

/// Decompresses an LZ4 block that must expand to exactly `raw_len` bytes.
/// A length it claims beyond what LZ4 can expand to (about 255 times) is damage, refused before
/// anything is allocated.
pub(crate) fn lz4_decompress(stored: &[u8], raw_len: u64) -> Result<Vec<u8>, String> {
    let limit = (stored.len() as u64).saturating_mul(255).saturating_add(64);
    if raw_len > limit {
        return Err(format!(
            "raw length {raw_len} impossible for an lz4 payload of {} bytes",
            stored.len()
        ));
    }
    let raw_len = raw_len as usize;
    let mut out = vec![0u8; raw_len];
    match lz4_flex::block::decompress_into(stored, &mut out) {
        Ok(n) if n == raw_len => Ok(out),
        Ok(n) => Err(format!(
            "lz4 payload expands to {n} bytes, header says {raw_len}"
        )),
        Err(e) => Err(format!("lz4 payload is damaged: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bincode_round_trips_and_counts_exactly() {
        let value = (String::from("key"), vec![1.5f64, 2.5], 300u64);
        let mut buf = vec![9u8];
        Bincode.encode(&value, &mut buf).unwrap();
        assert_eq!(Bincode.encoded_len(&value).unwrap(), (buf.len() - 1) as u64);
        let back: (String, Vec<f64>, u64) = Bincode.decode(&buf[1..]).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn bincode_rejects_trailing_bytes() {
        let mut buf = Vec::new();
        Bincode.encode(&5u8, &mut buf).unwrap();
        buf.push(0);
        assert!(Bincode.decode::<u8>(&buf).is_err());
    }

    #[test]
    fn lz4_keeps_incompressible_values_raw_and_round_trips_the_rest() {
        let mut out = Vec::new();
        let zeros = vec![0u8; 10_000];
        assert!(Compression::Lz4.compress(&zeros, &mut out));
        assert!(out.len() < zeros.len());
        assert_eq!(lz4_decompress(&out, zeros.len() as u64).unwrap(), zeros);
        assert!(lz4_decompress(&out, zeros.len() as u64 + 1).is_err());
        assert!(
            lz4_decompress(&out, u64::MAX).is_err(),
            "an absurd length is refused"
        );
        let noise: Vec<u8> = (0..64u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        assert!(!Compression::Lz4.compress(&noise, &mut out));
        assert!(!Compression::None.compress(&zeros, &mut out));
    }
}
