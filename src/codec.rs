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
    /// Values are `'static` so that a codec may serve common types by a faster path of its own
    /// (as [`Bincode`] does for vectors of bytes and floats), provided the bytes are the same.
    ///
    /// # Errors
    /// Whatever the value's `Serialize` or the format rejects.
    fn encode<T: Serialize + 'static>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError>;

    /// Decodes a value from exactly `bytes`.
    ///
    /// # Errors
    /// Bytes that are not a valid encoding of `T`, or that have bytes left over.
    fn decode<T: DeserializeOwned + 'static>(&self, bytes: &[u8]) -> Result<T, CodecError>;

    /// The length `encode` would produce. The default encodes into a scratch buffer; codecs
    /// that can count without writing should override it.
    ///
    /// # Errors
    /// As [`encode`](Codec::encode).
    fn encoded_len<T: Serialize + 'static>(&self, value: &T) -> Result<u64, CodecError> {
        let mut buf = Vec::new();
        self.encode(value, &mut buf)?;
        Ok(buf.len() as u64)
    }
}

/// The default codec: bincode 2 with its standard configuration (variable-length integers),
/// through serde.
///
/// `Vec<u8>`, `Vec<f32>` and `Vec<f64>` take a bulk path of their own (one copy of the elements
/// instead of one serde call per element) that writes and accepts exactly the bytes serde's
/// path does, so chests written before and after it are the same.
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
        // Serde hands bincode a sequence of bytes (a `Vec<u8>` field of a struct, say) one byte
        // at a time: a push, not a call to memcpy.
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

    fn encode<T: Serialize + 'static>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        if flat::encode(value, out) {
            return Ok(());
        }
        bincode_encode(value, out)
    }

    fn decode<T: DeserializeOwned + 'static>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        if let Some(decoded) = flat::decode(bytes) {
            return decoded;
        }
        let (value, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())?;
        if used != bytes.len() {
            return Err(left_over(bytes.len() - used));
        }
        Ok(value)
    }

    fn encoded_len<T: Serialize + 'static>(&self, value: &T) -> Result<u64, CodecError> {
        if let Some(len) = flat::encoded_len(value) {
            return Ok(len);
        }
        let mut counter = CountingWriter(0);
        bincode::serde::encode_into_writer(value, &mut counter, bincode::config::standard())?;
        Ok(counter.0)
    }
}

/// Appends bincode's (standard configuration) encoding of any `Serialize` value to `out`, through
/// serde: [`Bincode::encode`] without its fast paths, for values that are not `'static`.
pub(crate) fn bincode_encode<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let start = out.len();
    let result =
        bincode::serde::encode_into_writer(value, VecAppender(out), bincode::config::standard());
    if result.is_err() {
        out.truncate(start);
    }
    Ok(result?)
}

fn left_over(extra: usize) -> CodecError {
    format!("{extra} bytes left over after the value").into()
}

/// Bincode's encoding of `Vec<u8>`, `Vec<f32>` and `Vec<f64>`, written and read in bulk.
///
/// Serde hands a sequence to bincode one element at a time, so a 16 KiB `Vec<u8>` costs 16,384
/// calls each way; these are the values of the workloads (bytes and numeric arrays). Bincode's
/// standard configuration writes such a vector as its length (bincode's varint, written and read
/// here) followed by each element's little-endian bytes, so the paths below produce and accept
/// exactly the same bytes as the serde path (unit tests, a proptest and the `value_codec` fuzz
/// target compare them). The type is recognised by `TypeId`, so no `unsafe` is needed. Only the
/// value type itself is recognised: a `Vec<u8>` inside a struct still goes through serde, one
/// byte at a time (`serde_bytes` gives such a field bincode's bulk path for bytes).
mod flat {
    use super::{CodecError, left_over};
    use std::any::Any;

    /// An element bincode stores as its little-endian bytes (and so can be moved in bulk).
    trait Element: Sized + 'static {
        const SIZE: usize;
        /// Appends the elements' bytes to `out`.
        fn extend(items: &[Self], out: &mut Vec<u8>);
        /// The elements whose bytes are exactly `body` (a multiple of `SIZE` long).
        fn collect(body: &[u8]) -> Vec<Self>;
    }

    /// Bytes are copied as they are: one `memcpy` each way.
    impl Element for u8 {
        const SIZE: usize = 1;
        fn extend(items: &[u8], out: &mut Vec<u8>) {
            out.extend_from_slice(items);
        }
        fn collect(body: &[u8]) -> Vec<u8> {
            body.to_vec()
        }
    }

    macro_rules! float_element {
        ($t:ty) => {
            impl Element for $t {
                const SIZE: usize = std::mem::size_of::<$t>();
                fn extend(items: &[$t], out: &mut Vec<u8>) {
                    let start = out.len();
                    out.resize(start + items.len() * Self::SIZE, 0);
                    for (slot, item) in out[start..].chunks_exact_mut(Self::SIZE).zip(items) {
                        slot.copy_from_slice(&item.to_le_bytes());
                    }
                }
                fn collect(body: &[u8]) -> Vec<$t> {
                    body.chunks_exact(Self::SIZE)
                        .map(|b| <$t>::from_le_bytes(b.try_into().expect("SIZE bytes")))
                        .collect()
                }
            }
        };
    }
    float_element!(f32);
    float_element!(f64);

    /// Calls `$f::<E>` with the element type of `$value`'s `Vec<E>`, if it is one of ours.
    macro_rules! with_element {
        ($ty:ty, $f:ident ( $($arg:expr),* )) => {{
            use std::any::TypeId;
            let id = TypeId::of::<$ty>();
            if id == TypeId::of::<Vec<u8>>() {
                Some($f::<u8, $ty>($($arg),*))
            } else if id == TypeId::of::<Vec<f64>>() {
                Some($f::<f64, $ty>($($arg),*))
            } else if id == TypeId::of::<Vec<f32>>() {
                Some($f::<f32, $ty>($($arg),*))
            } else {
                None
            }
        }};
    }

    /// Appends `value`'s encoding and returns true if it is a vector this module handles.
    pub(super) fn encode<T: 'static>(value: &T, out: &mut Vec<u8>) -> bool {
        with_element!(T, encode_vec(value, out)).is_some()
    }

    /// The encoded length of `value` if it is a vector this module handles.
    pub(super) fn encoded_len<T: 'static>(value: &T) -> Option<u64> {
        with_element!(T, vec_len(value))
    }

    /// Decodes `bytes` if `T` is a vector this module handles.
    pub(super) fn decode<T: 'static>(bytes: &[u8]) -> Option<Result<T, CodecError>> {
        with_element!(T, decode_vec(bytes))
    }

    fn as_vec<E: Element, T: 'static>(value: &T) -> &Vec<E> {
        (value as &dyn Any)
            .downcast_ref()
            .expect("with_element! matched the type")
    }

    /// Bincode's varint markers: the byte before a little-endian u16, u32 or u64. A first
    /// byte below `U16` is the value itself.
    const U16: u8 = 251;
    const U32: u8 = 252;
    const U64: u8 = 253;

    /// Bincode's varint of a length, the bytes the serde path writes (calling bincode for
    /// these few bytes cost more than copying a 100-byte value).
    fn put_length(len: usize, out: &mut Vec<u8>) {
        let len = len as u64;
        if len < u64::from(U16) {
            out.push(len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            out.push(U16);
            out.extend_from_slice(&len.to_le_bytes());
        } else if let Ok(len) = u32::try_from(len) {
            out.push(U32);
            out.extend_from_slice(&len.to_le_bytes());
        } else {
            out.push(U64);
            out.extend_from_slice(&len.to_le_bytes());
        }
    }

    /// The bytes [`put_length`] writes for `len`.
    fn length_len(len: usize) -> usize {
        match len as u64 {
            len if len < u64::from(U16) => 1,
            len if len <= u64::from(u16::MAX) => 3,
            len if len <= u64::from(u32::MAX) => 5,
            _ => 9,
        }
    }

    /// Reads a varint length as bincode does (which takes any width for any value), returning
    /// it and the bytes it took.
    fn get_length(bytes: &[u8]) -> Result<(u64, usize), String> {
        fn wide<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
            bytes.get(1..=N).map(|b| b.try_into().expect("N bytes"))
        }
        let short = || "the vector's length runs past the end".to_string();
        let first = *bytes.first().ok_or_else(short)?;
        match first {
            b if b < U16 => Ok((u64::from(b), 1)),
            U16 => Ok((u16::from_le_bytes(wide(bytes).ok_or_else(short)?).into(), 3)),
            U32 => Ok((u32::from_le_bytes(wide(bytes).ok_or_else(short)?).into(), 5)),
            U64 => Ok((u64::from_le_bytes(wide(bytes).ok_or_else(short)?), 9)),
            other => Err(format!("{other} does not start a vector's length")),
        }
    }

    fn encode_vec<E: Element, T: 'static>(value: &T, out: &mut Vec<u8>) {
        let items: &Vec<E> = as_vec(value);
        out.reserve(length_len(items.len()) + items.len() * E::SIZE);
        put_length(items.len(), out);
        E::extend(items, out);
    }

    fn vec_len<E: Element, T: 'static>(value: &T) -> u64 {
        let items: &Vec<E> = as_vec(value);
        (length_len(items.len()) + items.len() * E::SIZE) as u64
    }

    fn decode_vec<E: Element, T: 'static>(bytes: &[u8]) -> Result<T, CodecError> {
        let (len, used) = get_length(bytes)?;
        let body = &bytes[used..];
        let needed = usize::try_from(len)
            .ok()
            .and_then(|len| len.checked_mul(E::SIZE))
            .filter(|&needed| needed <= body.len())
            .ok_or_else(|| {
                format!(
                    "a vector of {len} elements of {} bytes does not fit in the {} bytes left",
                    E::SIZE,
                    body.len()
                )
            })?;
        if needed != body.len() {
            return Err(left_over(body.len() - needed));
        }
        let items = E::collect(body);
        let mut slot = Some(items);
        Ok((&mut slot as &mut dyn Any)
            .downcast_mut::<Option<T>>()
            .and_then(Option::take)
            .expect("with_element! matched the type"))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn lengths_are_bincodes_varints_at_every_width() {
            let edges = [
                0u64,
                250,
                251,
                65_535,
                65_536,
                4_294_967_295,
                4_294_967_296,
                u64::MAX,
            ];
            for len in edges {
                let Ok(len_usize) = usize::try_from(len) else {
                    continue;
                };
                let mut ours = Vec::new();
                put_length(len_usize, &mut ours);
                let theirs = bincode::encode_to_vec(len, bincode::config::standard()).unwrap();
                assert_eq!(ours, theirs, "{len}");
                assert_eq!(length_len(len_usize), ours.len(), "{len}");
                assert_eq!(get_length(&ours).unwrap(), (len, ours.len()), "{len}");
                assert!(get_length(&ours[..ours.len() - 1]).is_err(), "{len}");
            }
            // Bincode reads a value written wider than needed; so do we.
            assert_eq!(get_length(&[U32, 7, 0, 0, 0]).unwrap(), (7, 5));
            assert!(get_length(&[254]).is_err());
        }
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

    /// The serde path's bytes, the reference the fast paths must match.
    fn via_serde<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        bincode_encode(value, &mut out).unwrap();
        out
    }

    fn via_serde_decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
        match bincode::serde::decode_from_slice(bytes, bincode::config::standard()) {
            Ok((value, used)) if used == bytes.len() => Some(value),
            _ => None,
        }
    }

    /// Encodes with the fast path, checks it against serde byte for byte and the counted length,
    /// decodes it back both ways, and checks that a byte short or a byte over is refused by both.
    fn check_flat<T>(value: T)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + 'static,
    {
        let mut fast = vec![7u8];
        Bincode.encode(&value, &mut fast).unwrap();
        let fast = &fast[1..];
        assert_eq!(fast, via_serde(&value).as_slice());
        assert_eq!(Bincode.encoded_len(&value).unwrap(), fast.len() as u64);
        assert_eq!(Bincode.decode::<T>(fast).unwrap(), value);
        assert_eq!(via_serde_decode::<T>(fast).unwrap(), value);
        let short = &fast[..fast.len() - 1];
        assert!(Bincode.decode::<T>(short).is_err());
        assert!(via_serde_decode::<T>(short).is_none());
        let mut long = fast.to_vec();
        long.push(0);
        assert!(Bincode.decode::<T>(&long).is_err());
        assert!(via_serde_decode::<T>(&long).is_none());
    }

    proptest::proptest! {
        #[test]
        fn byte_and_float_vectors_take_the_fast_path_with_serdes_bytes(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            doubles in proptest::collection::vec(proptest::num::f64::ANY, 0..300),
            floats in proptest::collection::vec(proptest::num::f32::NORMAL, 0..300),
        ) {
            check_flat(bytes);
            // NaN != NaN: compare floats by their bits after the round trip.
            let bits: Vec<u64> = doubles.iter().map(|d| d.to_bits()).collect();
            let mut out = Vec::new();
            Bincode.encode(&doubles, &mut out).unwrap();
            proptest::prop_assert_eq!(&out, &via_serde(&doubles));
            let back: Vec<f64> = Bincode.decode(&out).unwrap();
            proptest::prop_assert_eq!(back.iter().map(|d| d.to_bits()).collect::<Vec<_>>(), bits);
            check_flat(floats);
        }
    }

    #[test]
    fn lengths_at_the_varint_boundaries_match_serde() {
        for len in [0usize, 1, 250, 251, 252, 65_535, 65_536, 70_000] {
            check_flat(vec![0xA5u8; len]);
            check_flat(vec![1.25f64; len / 8]);
        }
    }

    #[test]
    fn a_length_beyond_the_bytes_is_refused_before_allocating() {
        // Varint 253 then u64::MAX: a vector of 2^64 - 1 elements in 0 bytes.
        let mut bytes = vec![253u8];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(Bincode.decode::<Vec<u8>>(&bytes).is_err());
        assert!(Bincode.decode::<Vec<f64>>(&bytes).is_err());
        assert!(Bincode.decode::<Vec<u8>>(&[]).is_err());
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
