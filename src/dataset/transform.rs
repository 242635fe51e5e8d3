//! Image transforms that turn one clip into several "virtual cameras": a different resolution
//! (scale), optics (Gaussian blur), exposure (brightness, contrast) and white balance (colour cast).
//! They are pure functions on RGB images, applied to whole frames **before** detection, so the
//! detector and tracker see what such a camera would see.
//!
//! Order: scale → blur → colour. A low-resolution camera blurs at its own resolution, and colour
//! is a per-pixel map that commutes with neither.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::frame::{BBox, Frame};

/// One virtual camera's image transform. The default is the identity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Transform {
    /// Multiplies every channel (1 = unchanged, 0.7 = darker).
    pub brightness: f32,
    /// Stretches values around mid-grey (1 = unchanged, < 1 = flatter).
    pub contrast: f32,
    /// Per-channel gains R, G, B (a colour cast / white-balance error).
    pub cast: [f32; 3],
    /// Gaussian blur sigma in pixels of the scaled image (0 = none).
    pub blur: f32,
    /// Resize factor of the whole frame (0.5 = half resolution). Boxes found on the transformed
    /// frame map back to the source with [`Transform::to_source`].
    pub scale: f32,
}

impl Default for Transform {
    fn default() -> Self {
        Transform {
            brightness: 1.0,
            contrast: 1.0,
            cast: [1.0; 3],
            blur: 0.0,
            scale: 1.0,
        }
    }
}

impl Transform {
    pub fn is_identity(&self) -> bool {
        *self == Transform::default()
    }

    fn colour_is_identity(&self) -> bool {
        self.brightness == 1.0 && self.contrast == 1.0 && self.cast == [1.0; 3]
    }

    /// Size of the transformed image for a `w × h` input.
    pub fn output_size(&self, w: u32, h: u32) -> (u32, u32) {
        if self.scale == 1.0 {
            return (w, h);
        }
        (
            ((w as f32 * self.scale).round() as u32).max(1),
            ((h as f32 * self.scale).round() as u32).max(1),
        )
    }

    /// The transformed image (a copy; the input is untouched).
    pub fn apply(&self, img: &RgbImage) -> RgbImage {
        let mut out = if self.scale == 1.0 {
            img.clone()
        } else {
            let (w, h) = self.output_size(img.width(), img.height());
            rescale(img, w, h)
        };
        if self.blur > 0.0 {
            out = gaussian_blur(&out, self.blur);
        }
        if !self.colour_is_identity() {
            adjust_colour(&mut out, self.brightness, self.contrast, self.cast);
        }
        out
    }

    /// The transformed frame, keeping its time stamp and sequence number.
    pub fn apply_frame(&self, f: &Frame) -> Frame {
        if self.is_identity() {
            return f.clone();
        }
        let img = self.apply(&f.to_image());
        let mut out = Frame::from_image(&img);
        out.pts = f.pts;
        out.seq = f.seq;
        out
    }

    /// A box on the transformed frame, in source-frame pixels (undoes `scale`).
    pub fn to_source(&self, b: &BBox) -> BBox {
        let s = self.scale;
        BBox::new(b.x1 / s, b.y1 / s, b.x2 / s, b.y2 / s)
    }
}

/// Resizes to `w × h` (triangle filter: averages when shrinking, so no aliasing).
pub fn rescale(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    image::imageops::resize(img, w, h, image::imageops::FilterType::Triangle)
}

/// Separable Gaussian blur with standard deviation `sigma` pixels (borders clamp).
pub fn gaussian_blur(img: &RgbImage, sigma: f32) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if sigma <= 0.0 || w == 0 || h == 0 {
        return img.clone();
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let mut kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    let src = img.as_raw();
    // horizontal pass into f32 (each row padded by clamping, then one multiply-add sweep per
    // kernel tap), vertical pass back to u8 the same way over rows
    let r = radius as usize;
    let mut tmp = vec![0f32; w * h * 3];
    let mut pad = vec![0f32; (w + 2 * r) * 3];
    for y in 0..h {
        let row = &src[y * w * 3..(y + 1) * w * 3];
        for (px, p) in pad.chunks_exact_mut(3).enumerate() {
            let sx = px.saturating_sub(r).min(w - 1);
            for c in 0..3 {
                p[c] = row[sx * 3 + c] as f32;
            }
        }
        let out = &mut tmp[y * w * 3..(y + 1) * w * 3];
        for (k, &kv) in kernel.iter().enumerate() {
            for (o, &p) in out.iter_mut().zip(&pad[k * 3..k * 3 + w * 3]) {
                *o += kv * p;
            }
        }
    }
    let mut out = RgbImage::new(w as u32, h as u32);
    let dst: &mut [u8] = &mut out;
    let mut acc = vec![0f32; w * 3];
    for y in 0..h {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (k, &kv) in kernel.iter().enumerate() {
            let sy = (y as isize + k as isize - radius).clamp(0, h as isize - 1) as usize;
            let srow = &tmp[sy * w * 3..(sy + 1) * w * 3];
            for (a, &s) in acc.iter_mut().zip(srow) {
                *a += kv * s;
            }
        }
        for (d, a) in dst[y * w * 3..(y + 1) * w * 3].iter_mut().zip(&acc) {
            *d = a.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// `v' = ((v · cast_c · brightness) − ½) · contrast + ½` per channel (values in 0..1), in place.
pub fn adjust_colour(img: &mut RgbImage, brightness: f32, contrast: f32, cast: [f32; 3]) {
    let luts: [[u8; 256]; 3] = std::array::from_fn(|c| {
        std::array::from_fn(|v| {
            let x = v as f32 / 255.0 * cast[c] * brightness;
            let y = (x - 0.5) * contrast + 0.5;
            (y.clamp(0.0, 1.0) * 255.0).round() as u8
        })
    });
    for p in img.pixels_mut() {
        for c in 0..3 {
            p.0[c] = luts[c][p.0[c] as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            if (x / 4 + y / 4) % 2 == 0 {
                image::Rgb([200, 100, 50])
            } else {
                image::Rgb([20, 40, 60])
            }
        })
    }

    #[test]
    fn identity_leaves_the_image_alone() {
        let img = checker(16, 12);
        assert!(Transform::default().is_identity());
        assert_eq!(Transform::default().apply(&img), img);
    }

    #[test]
    fn colour_brightness_contrast_cast() {
        let mut img = RgbImage::from_pixel(2, 2, image::Rgb([100, 200, 255]));
        adjust_colour(&mut img, 0.5, 1.0, [1.0; 3]);
        assert_eq!(img.get_pixel(0, 0).0, [50, 100, 128]);
        let mut img = RgbImage::from_pixel(1, 1, image::Rgb([100, 100, 100]));
        adjust_colour(&mut img, 1.0, 1.0, [1.2, 1.0, 0.5]);
        assert_eq!(img.get_pixel(0, 0).0, [120, 100, 50]);
        let mut img = RgbImage::from_pixel(1, 1, image::Rgb([255, 0, 128]));
        adjust_colour(&mut img, 1.0, 0.5, [1.0; 3]);
        assert_eq!(img.get_pixel(0, 0).0, [191, 64, 128]);
    }

    #[test]
    fn blur_keeps_flat_areas_and_mean_and_smooths_edges() {
        let flat = RgbImage::from_pixel(9, 7, image::Rgb([10, 20, 30]));
        assert_eq!(gaussian_blur(&flat, 2.0), flat);
        let img = checker(32, 32);
        let b = gaussian_blur(&img, 1.5);
        let mean = |i: &RgbImage| i.pixels().map(|p| p.0[0] as f64).sum::<f64>() / 1024.0;
        assert!((mean(&b) - mean(&img)).abs() < 2.0);
        let var = |i: &RgbImage| {
            let m = mean(i);
            i.pixels().map(|p| (p.0[0] as f64 - m).powi(2)).sum::<f64>()
        };
        assert!(
            var(&b) < 0.7 * var(&img),
            "blur reduces contrast of fine detail"
        );
    }

    #[test]
    fn scale_resizes_and_maps_boxes_back() {
        let t = Transform {
            scale: 0.5,
            ..Default::default()
        };
        let out = t.apply(&checker(768, 576));
        assert_eq!(out.dimensions(), (384, 288));
        assert_eq!(t.output_size(767, 575), (384, 288));
        let b = t.to_source(&BBox::new(10.0, 20.0, 30.0, 60.0));
        assert_eq!(b, BBox::new(20.0, 40.0, 60.0, 120.0));
        let f = Frame {
            pts: std::time::Duration::from_millis(1500),
            seq: 15,
            ..Frame::from_image(&checker(8, 8))
        };
        let g = t.apply_frame(&f);
        assert_eq!((g.width, g.height, g.pts, g.seq), (4, 4, f.pts, 15));
    }
}
