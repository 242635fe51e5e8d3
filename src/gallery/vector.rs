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

/// `v` in half precision (IEEE binary16 bits), for a scan that reads half the memory.
pub fn to_half(v: &[f32]) -> impl Iterator<Item = u16> + '_ {
    v.iter().map(|&x| half::f16::from_f32(x).to_bits())
}

/// Whether [`dot_half`] has its fast path here (x86-64 with AVX2, FMA and F16C); without it the
/// half-precision copy is not worth keeping.
pub fn half_scan_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Dot product of `a` with the half-precision vector `h` ([`to_half`]). For unit vectors the
/// result is within about 1e-3 of [`dot`] (each component rounded by at most 2^-11 of itself).
pub fn dot_half(a: &[f32], h: &[u16]) -> f32 {
    debug_assert_eq!(a.len(), h.len());
    #[cfg(target_arch = "x86_64")]
    {
        if half_scan_available() {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked just above)
            return unsafe { dot_half_avx2(a, h) };
        }
    }
    a.iter()
        .zip(h)
        .map(|(x, &y)| x * half::f16::from_bits(y).to_f32())
        .sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_half_avx2(a: &[f32], h: &[u16]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(h.len());
    let (pa, ph) = (a.as_ptr(), h.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads): i + 8 ≤ n for every load, so each reads inside both slices (8 floats
    // of `a`, 8 halves = 16 bytes of `h`)
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let o = i + 8 * k;
            let y = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(ph.add(o) as *const __m128i) });
            *acc = _mm256_fmadd_ps(unsafe { _mm256_loadu_ps(pa.add(o)) }, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        let y = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(ph.add(i) as *const __m128i) });
        acc[0] = _mm256_fmadd_ps(unsafe { _mm256_loadu_ps(pa.add(i)) }, y, acc[0]);
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    let mut s = lanes.iter().sum::<f32>();
    for j in i..n {
        s += a[j] * half::f16::from_bits(h[j]).to_f32();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_half_precision_dot_is_within_a_thousandth_of_the_exact_one() {
        for dim in [3, 8, 37, 128, 512] {
            let a = unit(
                &(0..dim)
                    .map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0)
                    .collect::<Vec<_>>(),
                dim,
            )
            .unwrap();
            let b = unit(
                &(0..dim)
                    .map(|i| ((i * 5 % 11) as f32 - 4.5).sin())
                    .collect::<Vec<_>>(),
                dim,
            )
            .unwrap();
            let h: Vec<u16> = to_half(&b).collect();
            let (exact, approx) = (dot(&a, &b), dot_half(&a, &h));
            assert!(
                (exact - approx).abs() < 1e-3,
                "dim {dim}: {exact} vs {approx}"
            );
            let portable: f32 = a
                .iter()
                .zip(&h)
                .map(|(x, &y)| x * half::f16::from_bits(y).to_f32())
                .sum();
            assert!(
                (portable - approx).abs() < 1e-5,
                "dim {dim}: fast path {approx} vs {portable}"
            );
            let self_h: Vec<u16> = to_half(&a).collect();
            assert!((dot_half(&a, &self_h) - 1.0).abs() < 1e-3);
        }
    }

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
