//! Unit vectors: the only thing the gallery stores and compares. Every vector is checked and
//! re-normalised at the door, because hnsw_rs's dot distance asserts `dot ≤ 1.000002` and panics
//! on anything that is not (nearly) unit length.

use super::GalleryError;

/// Checks `v` (dimension, finite, non-zero) and returns it scaled to unit length.
pub fn unit(v: &[f32], dim: usize) -> Result<Vec<f32>, GalleryError> {
    if v.len() != dim {
        return Err(GalleryError::Dimension {
            expected: dim,
            found: v.len(),
        });
    }
    if !v.iter().all(|x| x.is_finite()) {
        return Err(GalleryError::BadVector("it contains NaN or infinity"));
    }
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm < 1e-12 {
        return Err(GalleryError::BadVector("it is all zeros"));
    }
    if (norm - 1.0).abs() < 1e-6 {
        // already unit: keep it bit for bit, so that normalising twice changes nothing
        return Ok(v.to_vec());
    }
    Ok(v.iter().map(|x| (f64::from(*x) / norm) as f32).collect())
}

/// Dot product (cosine similarity of unit vectors), eight accumulators so that it vectorises.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_checks_and_normalises() {
        let v = unit(&[3.0, 4.0], 2).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert!(matches!(
            unit(&[1.0], 2),
            Err(GalleryError::Dimension {
                expected: 2,
                found: 1
            })
        ));
        assert!(unit(&[0.0, 0.0], 2).is_err());
        assert!(unit(&[f32::NAN, 1.0], 2).is_err());
        assert_eq!(unit(&v, 2).unwrap(), v, "idempotent");
    }

    #[test]
    fn dot_matches_the_naive_sum() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.05).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }
}
