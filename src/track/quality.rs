//! Crop quality: how useful a person crop is for re-identification. Combines the detection
//! score, the crop's size, whether the frame edge cuts the person, overlap with other people,
//! and sharpness (variance of the Laplacian).

use crate::frame::{BBox, Frame};

/// Height (pixels) at which a crop gets full size credit.
const FULL_HEIGHT: f32 = 160.0;
/// Laplacian variance regarded as fully sharp (on a 64-px-high grey version of the crop).
const SHARP_VAR: f32 = 120.0;

/// The part of the quality that needs no pixels: score × size × edge × (1 − overlap).
pub fn geometric_quality(
    b: &BBox,
    score: f32,
    frame_w: f32,
    frame_h: f32,
    max_overlap: f32,
) -> f32 {
    let size = (b.height() / FULL_HEIGHT).min(1.0);
    let edge = if b.touches_edge(frame_w, frame_h, 4.0) {
        0.3
    } else {
        1.0
    };
    score * size * edge * (1.0 - max_overlap.clamp(0.0, 1.0))
}

/// Sharpness in [0, 1] from the variance of the Laplacian of a small grey version of the crop.
pub fn sharpness(frame: &Frame, b: &BBox) -> f32 {
    let c = b.clip(frame.width as f32, frame.height as f32);
    if c.width() < 4.0 || c.height() < 4.0 {
        return 0.0;
    }
    let h = 64usize;
    let w = ((c.width() / c.height()) * h as f32)
        .round()
        .clamp(8.0, 64.0) as usize;
    let mut g = vec![0f32; w * h];
    for y in 0..h {
        let sy = (c.y1 + (y as f32 + 0.5) * c.height() / h as f32) as u32;
        for x in 0..w {
            let sx = (c.x1 + (x as f32 + 0.5) * c.width() / w as f32) as u32;
            let [r, gg, bb] = frame.pixel(sx.min(frame.width - 1), sy.min(frame.height - 1));
            g[y * w + x] = 0.299 * r as f32 + 0.587 * gg as f32 + 0.114 * bb as f32;
        }
    }
    let mut sum = 0f64;
    let mut sum2 = 0f64;
    let mut n = 0f64;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let l = g[(y - 1) * w + x] + g[(y + 1) * w + x] + g[y * w + x - 1] + g[y * w + x + 1]
                - 4.0 * g[y * w + x];
            sum += l as f64;
            sum2 += (l * l) as f64;
            n += 1.0;
        }
    }
    if n == 0.0 {
        return 0.0;
    }
    let var = (sum2 / n - (sum / n).powi(2)) as f32;
    (var / SHARP_VAR).min(1.0)
}

/// The full quality: geometric quality weighted by sharpness (a blurred crop keeps half).
pub fn quality(frame: &Frame, b: &BBox, geometric: f32) -> f32 {
    geometric * (0.5 + 0.5 * sharpness(frame, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_small_boxes_and_overlap_lower_quality() {
        let inside = BBox::new(100.0, 100.0, 160.0, 260.0);
        let q = geometric_quality(&inside, 0.8, 640.0, 480.0, 0.0);
        assert!((q - 0.8).abs() < 1e-6);
        assert!(geometric_quality(&BBox::new(0.0, 100.0, 60.0, 260.0), 0.8, 640.0, 480.0, 0.0) < q);
        assert!(
            geometric_quality(
                &BBox::new(100.0, 100.0, 130.0, 180.0),
                0.8,
                640.0,
                480.0,
                0.0
            ) < q
        );
        assert!(geometric_quality(&inside, 0.8, 640.0, 480.0, 0.5) < q);
    }

    #[test]
    fn texture_is_sharper_than_a_flat_patch() {
        let (w, h) = (64u32, 128u32);
        let checker: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                if ((i % w) / 4 + (i / w) / 4) % 2 == 0 {
                    [0u8; 3]
                } else {
                    [255u8; 3]
                }
            })
            .collect();
        let flat = vec![128u8; (w * h * 3) as usize];
        let b = BBox::new(0.0, 0.0, w as f32, h as f32);
        assert!(sharpness(&Frame::from_rgb(w, h, checker), &b) > 0.9);
        assert!(sharpness(&Frame::from_rgb(w, h, flat), &b) < 0.01);
    }
}
