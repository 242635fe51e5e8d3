//! Constant-velocity Kalman filter on (centre x, centre y, aspect ratio w/h, height), as in
//! SORT / DeepSORT / ByteTrack, with noise proportional to the box height.
// index loops read more clearly than iterator chains in small dense linear algebra
#![allow(clippy::needless_range_loop)]

use crate::frame::BBox;

type V8 = [f32; 8];
type M8 = [[f32; 8]; 8];

const STD_POS: f32 = 1.0 / 20.0;
const STD_VEL: f32 = 1.0 / 160.0;

#[derive(Debug, Clone)]
pub struct Kalman {
    pub mean: V8,
    pub cov: M8,
}

fn to_xyah(b: &BBox) -> [f32; 4] {
    let (cx, cy) = b.center();
    [cx, cy, b.width() / b.height().max(1e-3), b.height()]
}

fn diag(v: V8) -> M8 {
    let mut m = [[0.0; 8]; 8];
    for i in 0..8 {
        m[i][i] = v[i];
    }
    m
}

impl Kalman {
    pub fn new(b: &BBox) -> Kalman {
        let m = to_xyah(b);
        let h = m[3];
        let s = [
            2.0 * STD_POS * h,
            2.0 * STD_POS * h,
            1e-2,
            2.0 * STD_POS * h,
            10.0 * STD_VEL * h,
            10.0 * STD_VEL * h,
            1e-5,
            10.0 * STD_VEL * h,
        ];
        Kalman {
            mean: [m[0], m[1], m[2], m[3], 0.0, 0.0, 0.0, 0.0],
            cov: diag(s.map(|x| x * x)),
        }
    }

    /// Advances one frame.
    pub fn predict(&mut self) {
        let h = self.mean[3];
        let q = [
            STD_POS * h,
            STD_POS * h,
            1e-2,
            STD_POS * h,
            STD_VEL * h,
            STD_VEL * h,
            1e-5,
            STD_VEL * h,
        ]
        .map(|x| x * x);
        for i in 0..4 {
            self.mean[i] += self.mean[i + 4];
        }
        // P = F P Fᵀ + Q with F = [[I, I], [0, I]]
        let p = self.cov;
        let mut n = [[0.0; 8]; 8];
        for i in 0..8 {
            for j in 0..8 {
                let fi = |r: usize, c: usize| p[r][c] + if r < 4 { p[r + 4][c] } else { 0.0 };
                // (F P)[i][j]
                let fp_ij = fi(i, j);
                let fp_ij4 = if j < 4 { fi(i, j + 4) } else { 0.0 };
                n[i][j] = fp_ij + fp_ij4;
            }
        }
        for i in 0..8 {
            n[i][i] += q[i];
        }
        self.cov = n;
    }

    /// Corrects with a measured box.
    pub fn update(&mut self, b: &BBox) {
        let z = to_xyah(b);
        let h = self.mean[3];
        let r = [STD_POS * h, STD_POS * h, 1e-1, STD_POS * h].map(|x| x * x);
        // S = H P Hᵀ + R (H selects the first 4 components)
        let mut s = [[0.0f32; 4]; 4];
        for i in 0..4 {
            for j in 0..4 {
                s[i][j] = self.cov[i][j] + if i == j { r[i] } else { 0.0 };
            }
        }
        let Some(si) = invert4(&s) else { return };
        // K = P Hᵀ S⁻¹ : 8x4
        let mut k = [[0.0f32; 4]; 8];
        for i in 0..8 {
            for j in 0..4 {
                k[i][j] = (0..4).map(|m| self.cov[i][m] * si[m][j]).sum();
            }
        }
        let y: [f32; 4] = std::array::from_fn(|i| z[i] - self.mean[i]);
        for i in 0..8 {
            self.mean[i] += (0..4).map(|j| k[i][j] * y[j]).sum::<f32>();
        }
        // P = P − K H P
        let p = self.cov;
        for i in 0..8 {
            for j in 0..8 {
                self.cov[i][j] = p[i][j] - (0..4).map(|m| k[i][m] * p[m][j]).sum::<f32>();
            }
        }
    }

    pub fn bbox(&self) -> BBox {
        let [cx, cy, a, h, ..] = self.mean;
        let w = a * h;
        BBox::new(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0)
    }
}

fn invert4(m: &[[f32; 4]; 4]) -> Option<[[f32; 4]; 4]> {
    // Gauss–Jordan with partial pivoting, in f64 for stability
    let mut a = [[0f64; 8]; 4];
    for i in 0..4 {
        for j in 0..4 {
            a[i][j] = m[i][j] as f64;
        }
        a[i][4 + i] = 1.0;
    }
    for c in 0..4 {
        let p = (c..4).max_by(|&x, &y| a[x][c].abs().total_cmp(&a[y][c].abs()))?;
        if a[p][c].abs() < 1e-12 {
            return None;
        }
        a.swap(c, p);
        let d = a[c][c];
        for v in a[c].iter_mut() {
            *v /= d;
        }
        for r in 0..4 {
            if r != c {
                let f = a[r][c];
                for j in 0..8 {
                    a[r][j] -= f * a[c][j];
                }
            }
        }
    }
    let mut out = [[0f32; 4]; 4];
    for i in 0..4 {
        for j in 0..4 {
            out[i][j] = a[i][4 + j] as f32;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_constant_velocity() {
        let mut k = Kalman::new(&BBox::new(0.0, 0.0, 20.0, 50.0));
        for t in 1..30 {
            k.predict();
            k.update(&BBox::new(3.0 * t as f32, 0.0, 3.0 * t as f32 + 20.0, 50.0));
        }
        k.predict();
        let b = k.bbox();
        assert!((b.x1 - 90.0).abs() < 1.0, "predicted {b:?}");
        assert!((b.height() - 50.0).abs() < 1.0);
    }

    #[test]
    fn inverse_is_an_inverse() {
        let m = [
            [4.0, 1.0, 0.0, 0.0],
            [1.0, 3.0, 0.5, 0.0],
            [0.0, 0.5, 2.0, 0.1],
            [0.0, 0.0, 0.1, 1.0],
        ];
        let inv = invert4(&m).unwrap();
        for i in 0..4 {
            for j in 0..4 {
                let v: f32 = (0..4).map(|k| m[i][k] * inv[k][j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-5);
            }
        }
    }
}
