//! Video frames and the pixel work every stage shares: an RGB frame with its row stride, boxes in
//! frame pixels, and one fused "crop, resize (bilinear), normalise, write planar" routine that the
//! detector (letterbox) and the embedder (person crops) both use, so no intermediate images are made.

use std::sync::Arc;
use std::time::Duration;

/// One RGB frame (8 bits per channel). Rows may be padded: always index with `stride`.
#[derive(Clone)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// Bytes per row (≥ 3 × width; GStreamer pads rows to 4 bytes).
    pub stride: usize,
    pub data: Arc<Vec<u8>>,
    /// Presentation time of the frame in its stream.
    pub pts: Duration,
    /// Sequence number within the camera's stream (counts analysed frames from 0).
    pub seq: u64,
    /// Wall-clock capture time, milliseconds since the Unix epoch (0 when unknown).
    pub wall_ms: i64,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Frame({}x{}, seq {}, pts {:?})",
            self.width, self.height, self.seq, self.pts
        )
    }
}

impl Frame {
    /// A frame from tightly packed RGB bytes.
    pub fn from_rgb(width: u32, height: u32, data: Vec<u8>) -> Frame {
        assert_eq!(
            data.len(),
            width as usize * height as usize * 3,
            "RGB data size"
        );
        Frame {
            width,
            height,
            stride: width as usize * 3,
            data: Arc::new(data),
            pts: Duration::ZERO,
            seq: 0,
            wall_ms: 0,
        }
    }

    pub fn from_image(img: &image::RgbImage) -> Frame {
        Frame::from_rgb(img.width(), img.height(), img.as_raw().clone())
    }

    #[inline]
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = y as usize * self.stride + x as usize * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// The region `r` (clipped to the frame) as a packed RGB image.
    pub fn crop(&self, r: &BBox) -> image::RgbImage {
        let c = r.clip(self.width as f32, self.height as f32);
        let (x0, y0) = (c.x1.floor() as u32, c.y1.floor() as u32);
        let w = ((c.x2.ceil() as u32).min(self.width))
            .saturating_sub(x0)
            .max(1);
        let h = ((c.y2.ceil() as u32).min(self.height))
            .saturating_sub(y0)
            .max(1);
        let mut out = image::RgbImage::new(w, h);
        for y in 0..h {
            let src = (y0 + y).min(self.height - 1) as usize * self.stride + x0 as usize * 3;
            let dst = y as usize * w as usize * 3;
            let n = (w as usize * 3).min(self.stride - x0 as usize * 3);
            out.as_mut()[dst..dst + n].copy_from_slice(&self.data[src..src + n]);
        }
        out
    }

    pub fn to_image(&self) -> image::RgbImage {
        self.crop(&BBox::new(0.0, 0.0, self.width as f32, self.height as f32))
    }
}

/// An axis-aligned box in frame pixels (x1, y1) – (x2, y2).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> BBox {
        BBox { x1, y1, x2, y2 }
    }
    pub fn from_xywh(x: f32, y: f32, w: f32, h: f32) -> BBox {
        BBox::new(x, y, x + w, y + h)
    }
    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }
    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }
    pub fn center(&self) -> (f32, f32) {
        ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)
    }
    pub fn iou(&self, o: &BBox) -> f32 {
        let iw = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let ih = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + o.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
    pub fn clip(&self, w: f32, h: f32) -> BBox {
        BBox::new(
            self.x1.clamp(0.0, w),
            self.y1.clamp(0.0, h),
            self.x2.clamp(0.0, w),
            self.y2.clamp(0.0, h),
        )
    }
    /// Whether the box touches the frame border within `margin` pixels (a person cut by the edge).
    pub fn touches_edge(&self, w: f32, h: f32, margin: f32) -> bool {
        self.x1 <= margin || self.y1 <= margin || self.x2 >= w - margin || self.y2 >= h - margin
    }
}

/// How pixel values become network inputs: `(pixel / 255 − mean) / std` per channel, in RGB or BGR order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub bgr: bool,
}

impl Normalize {
    pub const IMAGENET: Normalize = Normalize {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        bgr: false,
    };
    pub const UNIT: Normalize = Normalize {
        mean: [0.0; 3],
        std: [1.0; 3],
        bgr: false,
    };
}

/// Samples `src` (a region of the frame) bilinearly into an `out_h × out_w` area of a planar
/// CHW buffer `dst` (3 planes of `plane_w × plane_h`) at offset (`off_x`, `off_y`), normalised.
/// The source region may extend outside the frame: those samples clamp to the border.
#[allow(clippy::too_many_arguments)]
pub fn resize_into_planes(
    frame: &Frame,
    src: &BBox,
    dst: &mut [f32],
    plane_w: usize,
    plane_h: usize,
    off_x: usize,
    off_y: usize,
    out_w: usize,
    out_h: usize,
    norm: &Normalize,
) {
    debug_assert!(dst.len() >= 3 * plane_w * plane_h);
    debug_assert!(off_x + out_w <= plane_w && off_y + out_h <= plane_h);
    if out_w == 0 || out_h == 0 || frame.width == 0 || frame.height == 0 {
        return;
    }
    let plane = plane_w * plane_h;
    let sx = src.width() / out_w as f32;
    let sy = src.height() / out_h as f32;
    let (fw, fh) = (frame.width as i64, frame.height as i64);
    let data = &frame.data[..];
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * norm.std[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| norm.mean[c] / norm.std[c]);
    // horizontal sample positions are the same for every row: compute them once
    let xs: Vec<(usize, usize, f32)> = (0..out_w)
        .map(|ox| {
            let fx = src.x1 + (ox as f32 + 0.5) * sx - 0.5;
            let x0 = fx.floor() as i64;
            let ax = fx - x0 as f32;
            let c0 = x0.clamp(0, fw - 1) as usize * 3;
            let c1 = (x0 + 1).clamp(0, fw - 1) as usize * 3;
            (c0, c1, ax)
        })
        .collect();
    for oy in 0..out_h {
        let fy = src.y1 + (oy as f32 + 0.5) * sy - 0.5;
        let y0 = fy.floor() as i64;
        let ay = fy - y0 as f32;
        let r0 = y0.clamp(0, fh - 1) as usize * frame.stride;
        let r1 = (y0 + 1).clamp(0, fh - 1) as usize * frame.stride;
        let row = (off_y + oy) * plane_w + off_x;
        for (ox, &(c0, c1, ax)) in xs.iter().enumerate() {
            for c in 0..3 {
                let p00 = data[r0 + c0 + c] as f32;
                let p01 = data[r0 + c1 + c] as f32;
                let p10 = data[r1 + c0 + c] as f32;
                let p11 = data[r1 + c1 + c] as f32;
                let top = p00 + (p01 - p00) * ax;
                let bot = p10 + (p11 - p10) * ax;
                let v = top + (bot - top) * ay;
                let ch = if norm.bgr { 2 - c } else { c };
                dst[ch * plane + row + ox] = v * scale[c] - shift[c];
            }
        }
    }
}

/// Fills the area outside (`off_x`, `off_y`, `out_w`, `out_h`) of each plane with the normalised
/// value of `pad` (letterbox borders).
#[allow(clippy::too_many_arguments)]
pub fn fill_border(
    dst: &mut [f32],
    plane_w: usize,
    plane_h: usize,
    off_x: usize,
    off_y: usize,
    out_w: usize,
    out_h: usize,
    pad: u8,
    norm: &Normalize,
) {
    let plane = plane_w * plane_h;
    for c in 0..3 {
        let v = (pad as f32 / 255.0 - norm.mean[c]) / norm.std[c];
        let p = &mut dst[c * plane..(c + 1) * plane];
        for y in 0..plane_h {
            let row = &mut p[y * plane_w..(y + 1) * plane_w];
            if y < off_y || y >= off_y + out_h {
                row.fill(v);
            } else {
                row[..off_x].fill(v);
                row[off_x + out_w..].fill(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> Frame {
        let mut d = Vec::new();
        for y in 0..h {
            for x in 0..w {
                d.extend_from_slice(&[(x * 10) as u8, (y * 10) as u8, 128]);
            }
        }
        Frame::from_rgb(w, h, d)
    }

    #[test]
    fn identity_resize_reproduces_pixels() {
        let f = gradient(8, 6);
        let mut out = vec![0.0; 3 * 8 * 6];
        resize_into_planes(
            &f,
            &BBox::new(0.0, 0.0, 8.0, 6.0),
            &mut out,
            8,
            6,
            0,
            0,
            8,
            6,
            &Normalize::UNIT,
        );
        assert!((out[3] * 255.0 - 30.0).abs() < 1e-3); // R at (3, 0)
        assert!((out[48 + 2 * 8] * 255.0 - 20.0).abs() < 1e-3); // G at (0, 2)
        assert!((out[96] * 255.0 - 128.0).abs() < 1e-3); // B
    }

    #[test]
    fn strided_rows_and_bgr_order_are_respected() {
        // 2x2 image with 2 bytes of padding per row
        let data = vec![
            10, 20, 30, 40, 50, 60, 0, 0, 70, 80, 90, 100, 110, 120, 0, 0,
        ];
        let f = Frame {
            width: 2,
            height: 2,
            stride: 8,
            data: Arc::new(data),
            pts: Duration::ZERO,
            seq: 0,
            wall_ms: 0,
        };
        let mut out = vec![0.0; 12];
        let bgr = Normalize {
            bgr: true,
            ..Normalize::UNIT
        };
        resize_into_planes(
            &f,
            &BBox::new(0.0, 0.0, 2.0, 2.0),
            &mut out,
            2,
            2,
            0,
            0,
            2,
            2,
            &bgr,
        );
        // plane 0 holds blue now
        assert_eq!((out[0] * 255.0).round(), 30.0);
        assert_eq!((out[3] * 255.0).round(), 120.0);
        assert_eq!((out[8] * 255.0).round(), 10.0);
        assert_eq!(
            f.crop(&BBox::new(1.0, 1.0, 2.0, 2.0)).get_pixel(0, 0).0,
            [100, 110, 120]
        );
    }

    #[test]
    fn iou_and_edges() {
        let a = BBox::new(0.0, 0.0, 10.0, 10.0);
        let b = BBox::new(5.0, 0.0, 15.0, 10.0);
        assert!((a.iou(&b) - 1.0 / 3.0).abs() < 1e-6);
        assert!(a.touches_edge(100.0, 100.0, 2.0));
        assert!(!BBox::new(10.0, 10.0, 20.0, 20.0).touches_edge(100.0, 100.0, 2.0));
    }
}
