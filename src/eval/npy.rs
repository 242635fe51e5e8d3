//! NumPy `.npy` files (format version 1.0) for float32 matrices, so features exported by
//! `crosscam eval --save-features` load with `numpy.load` and any tool that reads `.npy`.
//!
//! Layout: the magic `\x93NUMPY`, version bytes 1 0, a little-endian u16 header length, an ASCII
//! header (a Python dict literal) padded with spaces and ended by `\n` so that the data starts at
//! a multiple of 64 bytes (as NumPy writes it), then the values in C order, little-endian.

use std::io::Write;
use std::path::Path;

use ndarray::{Array2, ArrayView2};

const MAGIC: &[u8] = b"\x93NUMPY";

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{path}: not a float32 2-D .npy file we can read: {why}")]
    Format { path: String, why: String },
}

/// The bytes of a `.npy` v1.0 file holding `a` as little-endian float32, C order.
pub fn encode_f32(a: ArrayView2<f32>) -> Vec<u8> {
    let (r, c) = a.dim();
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({r}, {c}), }}");
    // magic (6) + version (2) + length (2) + dict + padding + '\n' ≡ 0 (mod 64)
    let unpadded = MAGIC.len() + 4 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header_len = dict.len() + pad + 1;
    let mut out = Vec::with_capacity(unpadded + pad + r * c * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    for v in a.iter() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes `a` to `path` as a float32 `.npy` file.
pub fn write_f32(path: &Path, a: ArrayView2<f32>) -> Result<(), NpyError> {
    let io = |e| NpyError::Io(path.display().to_string(), e);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    f.write_all(&encode_f32(a)).map_err(io)?;
    f.flush().map_err(io)
}

/// Reads a float32 2-D `.npy` file (v1.0–3.0, little-endian, C order), e.g. one written by
/// [`write_f32`] or by NumPy.
pub fn read_f32(path: &Path) -> Result<Array2<f32>, NpyError> {
    let bytes = std::fs::read(path).map_err(|e| NpyError::Io(path.display().to_string(), e))?;
    decode_f32(&bytes).map_err(|why| NpyError::Format {
        path: path.display().to_string(),
        why,
    })
}

pub fn decode_f32(b: &[u8]) -> Result<Array2<f32>, String> {
    if b.len() < 10 || &b[..6] != MAGIC {
        return Err("missing the \\x93NUMPY magic".into());
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(format!("unsupported format version {v}")),
    };
    let header = b
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated or non-text header")?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        Some(header[at..].trim_start().strip_prefix(':')?.trim_start())
    };
    let descr = field("descr").ok_or("no 'descr' in the header")?;
    if !descr.starts_with("'<f4'") {
        return Err(format!(
            "element type {} (only '<f4' is read)",
            descr.split(',').next().unwrap_or("")
        ));
    }
    if !field("fortran_order").is_some_and(|v| v.starts_with("False")) {
        return Err("Fortran order is not supported".into());
    }
    let shape = field("shape").ok_or("no 'shape' in the header")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("malformed shape")?;
    let dims: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("malformed shape ({inner})"))
        })
        .collect::<Result<_, _>>()?;
    let [r, c] = dims[..] else {
        return Err(format!("shape ({inner}) is not 2-D"));
    };
    let data = &b[start + hlen..];
    if data.len() != r * c * 4 {
        return Err(format!(
            "shape ({r}, {c}) needs {} data bytes, the file has {}",
            r * c * 4,
            data.len()
        ));
    }
    let v: Vec<f32> = data
        .chunks_exact(4)
        .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
        .collect();
    Array2::from_shape_vec((r, c), v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn bytes_match_numpy_save() {
        // np.save(f, np.array([[1, 2, 3], [4, 5, -0.5]], dtype='<f4')) writes exactly these bytes
        let a = array![[1.0f32, 2.0, 3.0], [4.0, 5.0, -0.5]];
        let b = encode_f32(a.view());
        let dict = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        assert_eq!(&b[..10], b"\x93NUMPY\x01\x00\x76\x00");
        assert_eq!(&b[10..10 + dict.len()], dict);
        assert!(b[10 + dict.len()..127].iter().all(|&c| c == b' '));
        assert_eq!(b[127], b'\n');
        assert_eq!(b.len(), 128 + 24);
        assert_eq!(&b[128..132], &[0, 0, 0x80, 0x3f]); // 1.0f32
        assert_eq!(&b[148..152], &[0, 0, 0, 0xbf]); // -0.5f32
    }

    #[test]
    fn round_trip_including_empty() {
        let dir = tempfile::tempdir().unwrap();
        for a in [
            array![[0.25f32, -1.0], [3.5, 1e-8], [7.0, 8.0]],
            Array2::<f32>::zeros((0, 5)),
        ] {
            let p = dir.path().join("x.npy");
            write_f32(&p, a.view()).unwrap();
            assert_eq!(std::fs::metadata(&p).unwrap().len() % 4, 0);
            assert_eq!(read_f32(&p).unwrap(), a);
        }
    }

    #[test]
    fn foreign_files_are_refused_with_a_reason() {
        let e = decode_f32(b"not a numpy file").unwrap_err();
        assert!(e.contains("magic"), "{e}");
        let mut b = encode_f32(array![[1.0f32]].view());
        b.pop();
        assert!(decode_f32(&b).unwrap_err().contains("needs 4 data bytes"));
        let f8 = encode_f32(array![[1.0f32]].view());
        let s = String::from_utf8_lossy(&f8).replace("<f4", "<f8");
        assert!(decode_f32(s.as_bytes()).is_err());
    }
}
