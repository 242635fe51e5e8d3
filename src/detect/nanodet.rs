//! NanoDet (416×416, COCO) as a person detector: letterbox pre-processing, decoding of the
//! per-stride class scores and box-side distributions, NMS, and mapping back to frame pixels.
//! Several frames run as one batch (the bundled model has a dynamic batch dimension).
//!
//! The bundled model's input height and width are dynamic too, so with `[detect] input = "fit"`
//! (opt-in) a frame is not padded to a square: its long side is scaled to 416 and its short side
//! padded only up to a multiple of the largest stride (32). A 768×576 frame runs as 416×320 (13×10
//! cells at stride 32 instead of 13×13), a 16:9 frame as 416×256.

use ndarray::Array4;
use ort::session::Session;

use super::Detector;
use super::nms::nms;
use crate::config::{DetectInput, DetectSettings};
use crate::frame::{BBox, Frame, Normalize, fill_border, resize_into_planes};
use crate::models::{Manifest, ModelEntry};
use crate::runtime::{Runtime, SessionOptions};
use crate::track::Detection;

/// COCO class index of "person".
const PERSON: usize = 0;
/// Bins per box side in the distribution outputs.
const BINS: usize = 11;
/// Letterbox padding value (mid grey).
const PAD: u8 = 114;

/// One output level: its stride and the names of its score and box tensors.
struct Level {
    stride: usize,
    scores: String,
    boxes: String,
}

pub struct NanoDet {
    session: Session,
    name: String,
    input_name: String,
    size: usize,
    norm: Normalize,
    levels: Vec<Level>,
    score_threshold: f32,
    nms_iou: f32,
    max_batch: usize,
    /// With `Some(a)` the input is fitted to the frames, its sides multiples of `a` (the
    /// largest stride); `None`: the square `size`×`size` letterbox.
    align: Option<usize>,
}

/// Every output value of each frame (score and box tensors of all levels, concatenated).
pub type RawOutputs = Vec<Vec<f32>>;

/// How a frame was placed into the square input.
#[derive(Debug, Clone, Copy)]
pub struct Letterbox {
    pub scale: f32,
    pub off_x: usize,
    pub off_y: usize,
    pub w: usize,
    pub h: usize,
}

impl Letterbox {
    pub fn new(frame_w: u32, frame_h: u32, size: usize) -> Letterbox {
        let scale = (size as f32 / frame_w as f32).min(size as f32 / frame_h as f32);
        let w = ((frame_w as f32 * scale).round() as usize).clamp(1, size);
        let h = ((frame_h as f32 * scale).round() as usize).clamp(1, size);
        Letterbox {
            scale,
            off_x: (size - w) / 2,
            off_y: (size - h) / 2,
            w,
            h,
        }
    }
    /// Placed in the middle of an input of `in_w`×`in_h` (at least the scaled frame's size).
    pub fn within(frame_w: u32, frame_h: u32, size: usize, in_w: usize, in_h: usize) -> Letterbox {
        let mut lb = Letterbox::new(frame_w, frame_h, size);
        lb.off_x = in_w.saturating_sub(lb.w) / 2;
        lb.off_y = in_h.saturating_sub(lb.h) / 2;
        lb
    }
    /// A box in input pixels back to frame pixels.
    pub fn to_frame(&self, b: BBox) -> BBox {
        let f = |v: f32, off: usize| (v - off as f32) / self.scale;
        BBox::new(
            f(b.x1, self.off_x),
            f(b.y1, self.off_y),
            f(b.x2, self.off_x),
            f(b.y2, self.off_y),
        )
    }
}

/// The scores and box outputs of the manifest, grouped per stride (scores have 80 columns, boxes 44).
fn levels(m: &ModelEntry, size: usize) -> anyhow::Result<Vec<Level>> {
    let mut levels = Vec::new();
    for o in m.outputs.iter().filter(|o| o.shape.last() == Some(&80)) {
        let cells = o.shape[1] as usize;
        let g = (cells as f64).sqrt() as usize;
        anyhow::ensure!(
            g * g == cells,
            "output '{}' has {cells} cells, not a square grid",
            o.name
        );
        let boxes = m
            .outputs
            .iter()
            .find(|b| b.shape.last() == Some(&(4 * BINS as i64)) && b.shape[1] as usize == cells)
            .ok_or_else(|| anyhow::anyhow!("no box output with {cells} cells for '{}'", o.name))?;
        levels.push(Level {
            stride: size / g,
            scores: o.name.clone(),
            boxes: boxes.name.clone(),
        });
    }
    anyhow::ensure!(
        !levels.is_empty(),
        "model '{}' has no NanoDet score outputs",
        m.name
    );
    levels.sort_by_key(|l| l.stride);
    Ok(levels)
}

impl NanoDet {
    pub fn open(
        manifest: &Manifest,
        name: &str,
        rt: &Runtime,
        s: &DetectSettings,
        opts: SessionOptions,
    ) -> anyhow::Result<NanoDet> {
        let loaded = manifest.open(name, rt, opts)?;
        let det = NanoDet::with_session(loaded.session, &loaded.entry, s)?;
        match det.align {
            Some(a) => tracing::info!(
                detector = name,
                "frames fitted to the detector's input: long side {}, short side padded to a multiple of {a}",
                det.size
            ),
            None if s.input == DetectInput::Fit => tracing::info!(
                detector = name,
                "the detector's input size is fixed: frames letterboxed to {0}×{0}",
                det.size
            ),
            None => tracing::info!(
                detector = name,
                "frames letterboxed to {0}×{0} ([detect] input = \"square\")",
                det.size
            ),
        }
        Ok(det)
    }

    /// A NanoDet on a session opened elsewhere (a model held in memory, e.g. a quantised one
    /// being checked), with the pre- and post-processing of the manifest entry `m`.
    pub fn with_session(
        session: Session,
        m: &ModelEntry,
        s: &DetectSettings,
    ) -> anyhow::Result<NanoDet> {
        let name = &m.name;
        let (h, w) = m.input.hw();
        anyhow::ensure!(h == w, "NanoDet input must be square, '{name}' is {h}x{w}");
        let dynamic_batch = m.input.shape.first().is_some_and(|&d| d < 0);
        let levels = levels(m, h)?;
        // the session's own input shape says whether height and width may vary (the manifest
        // gives the nominal size)
        let dynamic_hw = session
            .inputs()
            .first()
            .and_then(|i| i.dtype().tensor_shape())
            .is_some_and(|s| s.len() == 4 && s[2] < 0 && s[3] < 0);
        let largest_stride = levels.iter().map(|l| l.stride).max().unwrap_or(32);
        let size = match s.size {
            None => h,
            Some(n) if n as usize == h => h,
            Some(n) => {
                anyhow::ensure!(
                    dynamic_hw,
                    "[detect] size = {n}: the input size of detector '{name}' is fixed at {h}×{w}; remove the key, or use a model whose input height and width are dynamic"
                );
                anyhow::ensure!(
                    (n as usize).is_multiple_of(largest_stride),
                    "[detect] size = {n}: detector '{name}' needs a multiple of its largest stride, {largest_stride}"
                );
                n as usize
            }
        };
        Ok(NanoDet {
            align: (dynamic_hw && s.input == DetectInput::Fit).then_some(largest_stride),
            levels,
            name: name.to_string(),
            input_name: m.input.name.clone(),
            size,
            norm: Normalize {
                mean: m.input.mean,
                std: m.input.std,
                bgr: m.input.color.eq_ignore_ascii_case("BGR"),
            },
            score_threshold: s.score_threshold,
            nms_iou: s.nms_iou,
            max_batch: if dynamic_batch { s.max_batch.max(1) } else { 1 },
            session,
        })
    }

    /// The input tensor for `frames` and where each frame sits in it.
    pub fn preprocess(&self, frames: &[&Frame]) -> (Array4<f32>, Vec<Letterbox>) {
        prepare_batch(frames, self.size, self.align, &self.norm)
    }

    /// The ONNX Runtime session (for timing the bare model on inputs prepared here).
    pub fn into_session(self) -> Session {
        self.session
    }

    /// Whether inputs are fitted to the frames (`[detect] input = "fit"` and a model whose
    /// input height and width are dynamic).
    pub fn fits(&self) -> bool {
        self.align.is_some()
    }

    /// The input (width, height) a batch of `frames` runs at.
    pub fn input_size(&self, frames: &[&Frame]) -> (usize, usize) {
        input_size(frames, self.size, self.align)
    }

    /// Person detections per frame and, with `raw`, every output value of each frame (score
    /// and box tensors of all levels, concatenated): for comparing two models' outputs.
    pub fn detect_raw(
        &mut self,
        frames: &[&Frame],
        raw: bool,
    ) -> anyhow::Result<(Vec<Vec<Detection>>, RawOutputs)> {
        let mut results = Vec::with_capacity(frames.len());
        let mut raws = Vec::new();
        for chunk in frames.chunks(self.max_batch) {
            let (x, boxes) = self.preprocess(chunk);
            let (in_h, in_w) = (x.shape()[2], x.shape()[3]);
            let input = ort::value::TensorRef::from_array_view(&x)?;
            let outputs = self
                .session
                .run(ort::inputs![self.input_name.as_str() => input])?;
            let mut per_frame: Vec<Vec<Detection>> = vec![Vec::new(); chunk.len()];
            let mut per_raw: Vec<Vec<f32>> = vec![Vec::new(); if raw { chunk.len() } else { 0 }];
            for level in &self.levels {
                let (sshape, scores) =
                    outputs[level.scores.as_str()].try_extract_tensor::<f32>()?;
                let (_, dists) = outputs[level.boxes.as_str()].try_extract_tensor::<f32>()?;
                let (cells, classes) = (sshape[1] as usize, sshape[2] as usize);
                let grid = (in_w / level.stride, in_h / level.stride);
                anyhow::ensure!(
                    grid.0 * grid.1 == cells,
                    "detector '{}': {cells} cells at stride {} for a {in_w}×{in_h} input (expected {}×{})",
                    self.name,
                    level.stride,
                    grid.0,
                    grid.1
                );
                for (i, dets) in per_frame.iter_mut().enumerate() {
                    let sc = &scores[i * cells * classes..(i + 1) * cells * classes];
                    let di = &dists[i * cells * 4 * BINS..(i + 1) * cells * 4 * BINS];
                    decode_level(
                        sc,
                        di,
                        grid,
                        level.stride,
                        classes,
                        self.score_threshold,
                        dets,
                    );
                    if raw {
                        per_raw[i].extend_from_slice(sc);
                        per_raw[i].extend_from_slice(di);
                    }
                }
            }
            raws.extend(per_raw);
            for (dets, lb) in per_frame.into_iter().zip(&boxes) {
                let (fw, fh) = (lb.w as f32 / lb.scale, lb.h as f32 / lb.scale);
                let mapped = dets
                    .into_iter()
                    .map(|d| Detection {
                        bbox: lb.to_frame(d.bbox).clip(fw, fh),
                        score: d.score,
                    })
                    .filter(|d| d.bbox.width() >= 2.0 && d.bbox.height() >= 2.0)
                    .collect();
                results.push(nms(mapped, self.nms_iou));
            }
        }
        Ok((results, raws))
    }
}

/// The input (width, height) for a batch of `frames`: `size`×`size`, or with `align`, the
/// smallest multiples of `align` that hold every frame scaled to `size` on its long side.
pub fn input_size(frames: &[&Frame], size: usize, align: Option<usize>) -> (usize, usize) {
    let Some(a) = align.filter(|&a| a > 0) else {
        return (size, size);
    };
    frames.iter().fold((a, a), |(w, h), f| {
        let lb = Letterbox::new(f.width, f.height, size);
        (w.max(lb.w.div_ceil(a) * a), h.max(lb.h.div_ceil(a) * a))
    })
}

/// The input tensor `[N, 3, H, W]` for `frames` as the detector prepares it (see
/// [`input_size`]; frames are centred, the rest grey), and where each frame sits in it. Also
/// what quantisation calibrates on.
pub fn prepare_batch(
    frames: &[&Frame],
    size: usize,
    align: Option<usize>,
    norm: &Normalize,
) -> (Array4<f32>, Vec<Letterbox>) {
    let (w, h) = input_size(frames, size, align);
    let mut x = Array4::<f32>::zeros((frames.len(), 3, h, w));
    let mut boxes = Vec::with_capacity(frames.len());
    for (i, f) in frames.iter().enumerate() {
        let lb = Letterbox::within(f.width, f.height, size, w, h);
        let mut item = x.index_axis_mut(ndarray::Axis(0), i);
        let dst = item.as_slice_mut().expect("contiguous");
        fill_border(dst, w, h, lb.off_x, lb.off_y, lb.w, lb.h, PAD, norm);
        let whole = BBox::new(0.0, 0.0, f.width as f32, f.height as f32);
        resize_into_planes(f, &whole, dst, w, h, lb.off_x, lb.off_y, lb.w, lb.h, norm);
        boxes.push(lb);
    }
    (x, boxes)
}

/// Decodes one level of one image: person boxes in input pixels with their scores.
/// `grid` is (columns, rows); cells are stored row by row.
pub fn decode_level(
    scores: &[f32],
    dists: &[f32],
    grid: (usize, usize),
    stride: usize,
    classes: usize,
    threshold: f32,
    out: &mut Vec<Detection>,
) {
    let cols = grid.0.max(1);
    for cell in 0..grid.0 * grid.1 {
        let score = scores[cell * classes + PERSON];
        if score < threshold {
            continue;
        }
        let cx = ((cell % cols) as f32 + 0.5) * stride as f32;
        let cy = ((cell / cols) as f32 + 0.5) * stride as f32;
        let mut side = [0f32; 4];
        for (k, s) in side.iter_mut().enumerate() {
            let bins = &dists[cell * 4 * BINS + k * BINS..cell * 4 * BINS + (k + 1) * BINS];
            let m = bins.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let (mut num, mut den) = (0f32, 0f32);
            for (j, &v) in bins.iter().enumerate() {
                let e = (v - m).exp();
                num += e * j as f32;
                den += e;
            }
            *s = num / den * stride as f32;
        }
        out.push(Detection {
            bbox: BBox::new(cx - side[0], cy - side[1], cx + side[2], cy + side[3]),
            score,
        });
    }
}

impl Detector for NanoDet {
    fn detect(&mut self, frames: &[&Frame]) -> anyhow::Result<Vec<Vec<Detection>>> {
        Ok(self.detect_raw(frames, false)?.0)
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_maps_boxes_back() {
        let lb = Letterbox::new(768, 576, 416);
        assert_eq!((lb.w, lb.h, lb.off_x, lb.off_y), (416, 312, 0, 52));
        let b = lb.to_frame(BBox::new(0.0, 52.0, 416.0, 364.0));
        assert!((b.x2 - 768.0).abs() < 0.01 && (b.y2 - 576.0).abs() < 0.01 && b.y1.abs() < 0.01);
    }

    #[test]
    fn decoding_uses_the_expected_distance() {
        // one cell of a 2x2 grid at stride 8, person score 0.9, each side's bins peaked at bin 2
        let mut scores = vec![0.0; 4 * 80];
        scores[3 * 80] = 0.9;
        let mut dists = vec![0.0; 4 * 44];
        for k in 0..4 {
            dists[3 * 44 + k * 11 + 2] = 50.0;
        }
        let mut out = Vec::new();
        decode_level(&scores, &dists, (2, 2), 8, 80, 0.5, &mut out);
        assert_eq!(out.len(), 1);
        let b = out[0].bbox;
        // cell 3 = (1, 1): centre (12, 12); distance 2 bins * stride 8 = 16
        assert!(
            (b.x1 + 4.0).abs() < 1e-3 && (b.x2 - 28.0).abs() < 1e-3,
            "{b:?}"
        );
    }

    #[test]
    fn a_wide_grid_is_read_row_by_row() {
        // 3 columns x 2 rows at stride 32: cell 4 is column 1 of row 1, centre (48, 48)
        let mut scores = vec![0.0; 6 * 80];
        scores[4 * 80] = 0.9;
        let dists = vec![0.0; 6 * 44];
        let mut out = Vec::new();
        decode_level(&scores, &dists, (3, 2), 32, 80, 0.5, &mut out);
        assert_eq!(out.len(), 1);
        let b = out[0].bbox;
        // flat bins: expected distance 5 bins * 32 on every side
        assert!((b.x1 - (48.0 - 160.0)).abs() < 1e-3, "{b:?}");
        assert!((b.y2 - (48.0 + 160.0)).abs() < 1e-3, "{b:?}");
    }

    fn frame(w: u32, h: u32) -> Frame {
        Frame::from_rgb(w, h, vec![0; (w * h * 3) as usize])
    }

    #[test]
    fn a_fitted_input_pads_the_short_side_only_to_the_stride() {
        let (vga, hd, portrait) = (frame(768, 576), frame(1280, 720), frame(576, 768));
        assert_eq!(input_size(&[&vga], 416, Some(32)), (416, 320));
        assert_eq!(input_size(&[&hd], 416, Some(32)), (416, 256));
        assert_eq!(input_size(&[&portrait], 416, Some(32)), (320, 416));
        // a batch holds its widest and its tallest frame
        assert_eq!(input_size(&[&hd, &portrait], 416, Some(32)), (416, 416));
        assert_eq!(input_size(&[&vga, &hd], 416, Some(32)), (416, 320));
        // square: always the model's size
        assert_eq!(input_size(&[&hd], 416, None), (416, 416));
        // the frame sits in the middle and maps back to its own pixels
        let norm = Normalize {
            mean: [0.0; 3],
            std: [1.0; 3],
            bgr: false,
        };
        let (x, lbs) = prepare_batch(&[&hd], 416, Some(32), &norm);
        assert_eq!(x.shape(), &[1, 3, 256, 416]);
        assert_eq!(
            (lbs[0].w, lbs[0].h, lbs[0].off_x, lbs[0].off_y),
            (416, 234, 0, 11)
        );
        let b = lbs[0].to_frame(BBox::new(0.0, 11.0, 416.0, 245.0));
        assert!(b.y1.abs() < 0.01 && (b.y2 - 720.0).abs() < 0.1, "{b:?}");
        // the bars are grey, the frame black
        let pad = PAD as f32 / 255.0;
        assert!((x[[0, 0, 0, 0]] - pad).abs() < 1e-6 && x[[0, 0, 128, 200]].abs() < 1e-6);
    }
}
