//! The raw array payload: a small header, then the elements, little-endian, in standard
//! (row-major) order. It is the payload of a value file whose flag bit 1 is set.
//!
//! ```text
//! offset  size field
//!  0       8   magic b"SPCHARR\0"
//!  8       2   array format version (1), little-endian like every integer here
//! 10       1   element type: 1 f32, 2 f64, 3 i8, 4 i16, 5 i32, 6 i64, 7 u8, 8 u16, 9 u32, 10 u64
//! 11       1   byte order of the elements: 1 = little-endian (the only one written or read)
//! 12       4   number of dimensions N
//! 16       8N  shape, one u64 per axis, outermost first
//! 16+8N    8   xxh3-64 of bytes 0..16+8N
//! 24+8N        zero padding up to H, the next multiple of 64
//! H            the elements: product(shape) * element size bytes
//! ```
//! The payload is exactly `H + product(shape) * size` bytes. The value file's payload offset
//! is a multiple of 64 and so is `H`, so the elements start 64-byte aligned in the file.
//!
//! The header checksum is verified on every map, so a view is never built from a damaged
//! shape or element type. The elements are covered by the value file's payload checksum; see
//! the crate docs for when that is verified.

use crate::disk::io::{Cursor, checksum};

/// The magic bytes an array header starts with.
pub(crate) const MAGIC: [u8; 8] = *b"SPCHARR\0";
/// The array header version this build writes and reads.
pub(crate) const VERSION: u16 = 1;
/// The only byte order written and read: little-endian.
pub(crate) const LITTLE_ENDIAN: u8 = 1;
/// Alignment of the elements within the payload.
pub(crate) const ALIGN: usize = 64;

/// The element type codes, with their sizes and names.
pub(crate) const ELEMENTS: [(u8, usize, &str); 10] = [
    (1, 4, "f32"),
    (2, 8, "f64"),
    (3, 1, "i8"),
    (4, 2, "i16"),
    (5, 4, "i32"),
    (6, 8, "i64"),
    (7, 1, "u8"),
    (8, 2, "u16"),
    (9, 4, "u32"),
    (10, 8, "u64"),
];

/// The size and name of the element type `code`.
pub(crate) fn element(code: u8) -> Option<(usize, &'static str)> {
    ELEMENTS
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, size, name)| (*size, *name))
}

/// What a checked array header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArrayHeader {
    pub(crate) element_code: u8,
    pub(crate) shape: Vec<u64>,
    /// Where the elements start in the payload (H).
    pub(crate) data_offset: usize,
}

impl ArrayHeader {
    /// "f64 array of shape [2, 3]", for error messages.
    pub(crate) fn describe(&self) -> String {
        let name = element(self.element_code).map_or("?", |(_, n)| n);
        format!("{name} array of shape {:?}", self.shape)
    }
}

/// The length of the header for `ndim` axes, padding included (H).
pub(crate) fn header_len(ndim: usize) -> usize {
    (24 + 8 * ndim).div_ceil(ALIGN) * ALIGN
}

/// The element bytes of an array of `shape` with elements of `size` bytes, or `None` on
/// overflow.
pub(crate) fn data_len(shape: &[u64], size: usize) -> Option<u64> {
    shape
        .iter()
        .try_fold(size as u64, |acc, &n| acc.checked_mul(n))
}

/// The header bytes, padding included.
pub(crate) fn encode_header(element_code: u8, shape: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header_len(shape.len()));
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(element_code);
    out.push(LITTLE_ENDIAN);
    out.extend_from_slice(&(shape.len() as u32).to_le_bytes());
    for n in shape {
        out.extend_from_slice(&n.to_le_bytes());
    }
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out.resize(header_len(shape.len()), 0);
    out
}

/// Parses and checks the header at the start of `payload`, and that the payload is exactly
/// as long as the header and the elements it announces.
pub(crate) fn parse_header(payload: &[u8]) -> Result<ArrayHeader, String> {
    let mut c = Cursor::new(payload);
    let short = || format!("array payload of {} bytes is too short", payload.len());
    if c.take(8).ok_or_else(short)? != MAGIC {
        return Err("not an array payload (bad magic)".into());
    }
    let version = c.u16().ok_or_else(short)?;
    if version != VERSION {
        return Err(format!("unsupported array header version {version}"));
    }
    let element_code = c.u8().ok_or_else(short)?;
    let order = c.u8().ok_or_else(short)?;
    let ndim = c.u32().ok_or_else(short)? as usize;
    let mut shape = Vec::with_capacity(ndim.min(64));
    for _ in 0..ndim {
        shape.push(c.u64().ok_or_else(short)?);
    }
    let body_len = c.pos();
    let stored = c.u64().ok_or_else(short)?;
    if checksum(&payload[..body_len]) != stored {
        return Err("array header checksum mismatch".into());
    }
    if order != LITTLE_ENDIAN {
        return Err(format!("unsupported array byte order {order}"));
    }
    let (size, _) =
        element(element_code).ok_or_else(|| format!("unknown element type {element_code}"))?;
    let data_offset = header_len(ndim);
    let expected = data_len(&shape, size)
        .and_then(|d| d.checked_add(data_offset as u64))
        .ok_or_else(|| format!("array shape {shape:?} overflows"))?;
    if expected != payload.len() as u64 {
        return Err(format!(
            "array payload is {} bytes, its header says {expected}",
            payload.len()
        ));
    }
    Ok(ArrayHeader {
        element_code,
        shape,
        data_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(code: u8, shape: &[u64]) -> Vec<u8> {
        let mut p = encode_header(code, shape);
        let size = element(code).unwrap().0;
        p.resize(p.len() + data_len(shape, size).unwrap() as usize, 0xAB);
        p
    }

    #[test]
    fn round_trips_and_pads_to_64() {
        for shape in [vec![], vec![3], vec![2, 3], vec![1, 2, 3, 4], vec![0, 5]] {
            for (code, _, _) in ELEMENTS {
                let p = payload(code, &shape);
                let h = parse_header(&p).unwrap();
                assert_eq!(h.shape, shape);
                assert_eq!(h.element_code, code);
                assert_eq!(h.data_offset % ALIGN, 0);
            }
        }
    }

    #[test]
    fn damage_and_wrong_lengths_are_refused() {
        let p = payload(2, &[4, 4]);
        let h = header_len(2);
        for i in 0..24 + 16 {
            let mut bad = p.clone();
            bad[i] ^= 0x20;
            assert!(parse_header(&bad).is_err(), "byte {i}");
        }
        for len in 0..p.len() {
            assert!(parse_header(&p[..len]).is_err(), "len {len}");
        }
        let mut long = p.clone();
        long.push(0);
        assert!(parse_header(&long).is_err());
        assert!(parse_header(&encode_header(2, &[u64::MAX, 3])).is_err());
        assert!(h <= p.len());
    }
}
