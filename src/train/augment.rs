//! Training augmentation on person crops (BoT order): resize to the network input, random
//! horizontal flip, zero-pad and random crop back to size, colour jitter; after normalisation,
//! random erasing of a rectangle (filled with 0 = the channel mean once normalised). All draws
//! come from the caller's RNG, so a seeded run augments identically.

use image::RgbImage;
use image::imageops::{self, FilterType};
use rand::Rng;
use rand::rngs::StdRng;

use crate::frame::Normalize;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugmentConfig {
    /// Probability of a horizontal flip.
    pub flip: f32,
    /// Zero padding (pixels per side) before the random crop; 0 disables.
    pub pad: u32,
    /// Colour jitter strengths: factors drawn from `[1−s, 1+s]` (0 disables each).
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    /// Probability of random erasing, and the erased share of the area and its aspect range.
    pub erase: f32,
    pub erase_area: (f32, f32),
    pub erase_min_aspect: f32,
}

impl Default for AugmentConfig {
    /// BoT's settings (flip 0.5, pad 10, erasing 0.5 of 2–40 % of the area, aspect 0.3–3.3) plus
    /// mild colour jitter for cross-camera colour differences.
    fn default() -> AugmentConfig {
        AugmentConfig {
            flip: 0.5,
            pad: 10,
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
            erase: 0.5,
            erase_area: (0.02, 0.4),
            erase_min_aspect: 0.3,
        }
    }
}

impl AugmentConfig {
    /// No augmentation (evaluation, calibration, deterministic tests).
    pub fn none() -> AugmentConfig {
        AugmentConfig {
            flip: 0.0,
            pad: 0,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            erase: 0.0,
            erase_area: (0.02, 0.4),
            erase_min_aspect: 0.3,
        }
    }
}

/// Resizes to `h × w` (bilinear) unless already that size.
pub fn resize(img: &RgbImage, h: u32, w: u32) -> RgbImage {
    if img.dimensions() == (w, h) {
        img.clone()
    } else {
        imageops::resize(img, w, h, FilterType::Triangle)
    }
}

/// Flip, pad-and-crop and colour jitter of an image already at the network's input size.
pub fn geometric_and_colour(img: &RgbImage, cfg: &AugmentConfig, rng: &mut StdRng) -> RgbImage {
    let (w, h) = img.dimensions();
    let flip = rng.random::<f32>() < cfg.flip;
    let p = cfg.pad as i64;
    let (dx, dy) = if p > 0 {
        (rng.random_range(0..=2 * p), rng.random_range(0..=2 * p))
    } else {
        (p, p)
    };
    let mut out = RgbImage::new(w, h);
    for y in 0..h as i64 {
        let sy = y + dy - p;
        if sy < 0 || sy >= h as i64 {
            continue;
        }
        for x in 0..w as i64 {
            let sx = x + dx - p;
            if sx < 0 || sx >= w as i64 {
                continue;
            }
            let sx = if flip { w as i64 - 1 - sx } else { sx };
            out.put_pixel(x as u32, y as u32, *img.get_pixel(sx as u32, sy as u32));
        }
    }
    let factor = |s: f32, rng: &mut StdRng| {
        if s > 0.0 {
            rng.random_range(1.0 - s..=1.0 + s)
        } else {
            1.0
        }
    };
    let b = factor(cfg.brightness, rng);
    let c = factor(cfg.contrast, rng);
    let s = factor(cfg.saturation, rng);
    if (b, c, s) != (1.0, 1.0, 1.0) {
        let gray = |p: &[f32; 3]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
        let n = (w * h) as f32;
        let mean_gray = out
            .pixels()
            .map(|px| gray(&px.0.map(|v| v as f32)) * b)
            .sum::<f32>()
            / n;
        for px in out.pixels_mut() {
            let mut v = px.0.map(|v| v as f32 * b);
            for ch in v.iter_mut() {
                *ch = (*ch - mean_gray) * c + mean_gray;
            }
            let g = gray(&v);
            for ch in v.iter_mut() {
                *ch = (g + (*ch - g) * s).clamp(0.0, 255.0);
            }
            px.0 = v.map(|x| x.round() as u8);
        }
    }
    out
}

/// Writes `img` as normalised CHW planes into `out` (length 3·h·w).
pub fn to_planes(img: &RgbImage, norm: &Normalize, out: &mut [f32]) {
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    assert_eq!(out.len(), 3 * plane, "output buffer size");
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            let src = if norm.bgr { 2 - c } else { c };
            out[c * plane + i] = (px.0[src] as f32 / 255.0 - norm.mean[c]) / norm.std[c];
        }
    }
}

/// Random erasing (Zhong et al. 2020) on normalised CHW planes: with probability `cfg.erase`, a
/// rectangle of random area share and aspect is set to 0.
pub fn random_erase(planes: &mut [f32], h: usize, w: usize, cfg: &AugmentConfig, rng: &mut StdRng) {
    if cfg.erase <= 0.0 || rng.random::<f32>() >= cfg.erase {
        return;
    }
    let area = (h * w) as f32;
    for _ in 0..100 {
        let target = rng.random_range(cfg.erase_area.0..=cfg.erase_area.1) * area;
        let log_r = rng.random_range(cfg.erase_min_aspect.ln()..=(1.0 / cfg.erase_min_aspect).ln());
        let aspect = log_r.exp();
        let eh = (target * aspect).sqrt().round() as usize;
        let ew = (target / aspect).sqrt().round() as usize;
        if eh == 0 || ew == 0 || eh >= h || ew >= w {
            continue;
        }
        let y0 = rng.random_range(0..=h - eh);
        let x0 = rng.random_range(0..=w - ew);
        for c in 0..3 {
            for y in y0..y0 + eh {
                let row = c * h * w + y * w;
                planes[row + x0..row + x0 + ew].fill(0.0);
            }
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn gradient_image(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 8) as u8, (y * 4) as u8, 100]))
    }

    #[test]
    fn flip_and_shift_move_pixels_as_expected() {
        let img = gradient_image(8, 16);
        let mut rng = StdRng::seed_from_u64(1);
        let none = AugmentConfig::none();
        assert_eq!(geometric_and_colour(&img, &none, &mut rng), img);
        let flip = AugmentConfig {
            flip: 1.0,
            ..AugmentConfig::none()
        };
        let f = geometric_and_colour(&img, &flip, &mut rng);
        assert_eq!(f.get_pixel(0, 3), img.get_pixel(7, 3));
        let pad = AugmentConfig {
            pad: 2,
            ..AugmentConfig::none()
        };
        // a shifted crop: every pixel is black padding or a source pixel shifted by one offset
        let s = geometric_and_colour(&img, &pad, &mut StdRng::seed_from_u64(3));
        let offsets: std::collections::HashSet<(i32, i32)> = s
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0 != [0, 0, 0])
            .map(|(x, y, p)| (p.0[0] as i32 / 8 - x as i32, p.0[1] as i32 / 4 - y as i32))
            .collect();
        assert_eq!(offsets.len(), 1, "{offsets:?}");
    }

    #[test]
    fn jitter_stays_in_range_and_erasing_zeroes_a_rectangle() {
        let img = gradient_image(16, 32);
        let cfg = AugmentConfig::default();
        let mut rng = StdRng::seed_from_u64(5);
        let a = geometric_and_colour(&img, &cfg, &mut rng);
        assert_eq!(a.dimensions(), (16, 32));
        let mut planes = vec![0.0f32; 3 * 16 * 32];
        to_planes(&img, &Normalize::IMAGENET, &mut planes);
        assert!(((planes[0] * 0.229 + 0.485) - 0.0).abs() < 1e-6);
        let before = planes.clone();
        let always = AugmentConfig { erase: 1.0, ..cfg };
        random_erase(&mut planes, 32, 16, &always, &mut rng);
        let zeroed = planes
            .iter()
            .zip(&before)
            .filter(|(a, b)| **a == 0.0 && **b != 0.0)
            .count();
        assert!(zeroed >= 3 * (0.02 * 512.0) as usize / 2, "{zeroed}");
    }
}
