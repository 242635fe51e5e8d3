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

/// Dot product (cosine similarity of unit vectors): AVX2 with fused multiply-add where the CPU
/// has them (checked once; the gallery's exact scan is most of a core's linking time), else
/// eight accumulators so that it vectorises for any x86-64.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has both features (checked just above)
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

/// [`dot`] without CPU-specific instructions.
#[inline]
pub fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads): i + 8 ≤ n for every load, so each reads inside both slices
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let o = i + 8 * k;
            *acc = _mm256_fmadd_ps(
                unsafe { _mm256_loadu_ps(pa.add(o)) },
                unsafe { _mm256_loadu_ps(pb.add(o)) },
                *acc,
            );
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(
            unsafe { _mm256_loadu_ps(pa.add(i)) },
            unsafe { _mm256_loadu_ps(pb.add(i)) },
            acc[0],
        );
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    let mut s = lanes.iter().sum::<f32>();
    for j in i..n {
        s += a[j] * b[j];
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
    fn the_cpu_specific_dot_agrees_with_the_portable_one() {
        // lengths around the 8- and 32-float steps, and the gallery's 512 and 256
        for n in [0usize, 1, 7, 8, 9, 31, 32, 33, 100, 256, 512, 515] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let b: Vec<f32> = (0..n)
                .map(|i| ((i * 53 % 89) as f32 - 44.0) / 44.0)
                .collect();
            let naive: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            let (fast, portable) = (dot(&a, &b), dot_portable(&a, &b));
            assert!(
                (f64::from(fast) - naive).abs() < 1e-4,
                "n {n}: {fast} vs {naive}"
            );
            assert!(
                (fast - portable).abs() < 1e-4,
                "n {n}: {fast} vs {portable}"
            );
        }
    }

    #[test]
    fn dot_matches_the_naive_sum() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.05).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }
}
