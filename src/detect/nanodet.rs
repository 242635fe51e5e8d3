//! NanoDet (416×416, COCO) as a person detector: letterbox pre-processing, decoding of the
//! per-stride class scores and box-side distributions, NMS, and mapping back to frame pixels.
//! Several frames run as one batch (the bundled model has a dynamic batch dimension).

use ndarray::Array4;
use ort::session::Session;

use super::Detector;
use super::nms::nms;
use crate::config::DetectSettings;
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
        NanoDet::with_session(loaded.session, &loaded.entry, s)
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
        Ok(NanoDet {
            levels: levels(m, h)?,
            name: name.to_string(),
            input_name: m.input.name.clone(),
            size: h,
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
        letterbox_batch(frames, self.size, &self.norm)
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
                let grid = (cells as f64).sqrt() as usize;
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

/// The letterboxed input tensor `[N, 3, size, size]` for `frames`, as the detector prepares it
/// (also what quantisation calibrates on), and where each frame sits in it.
pub fn letterbox_batch(
    frames: &[&Frame],
    size: usize,
    norm: &Normalize,
) -> (Array4<f32>, Vec<Letterbox>) {
    let s = size;
    let mut x = Array4::<f32>::zeros((frames.len(), 3, s, s));
    let mut boxes = Vec::with_capacity(frames.len());
    for (i, f) in frames.iter().enumerate() {
        let lb = Letterbox::new(f.width, f.height, s);
        let mut item = x.index_axis_mut(ndarray::Axis(0), i);
        let dst = item.as_slice_mut().expect("contiguous");
        fill_border(dst, s, s, lb.off_x, lb.off_y, lb.w, lb.h, PAD, norm);
        let whole = BBox::new(0.0, 0.0, f.width as f32, f.height as f32);
        resize_into_planes(f, &whole, dst, s, s, lb.off_x, lb.off_y, lb.w, lb.h, norm);
        boxes.push(lb);
    }
    (x, boxes)
}

/// Decodes one level of one image: person boxes in input pixels with their scores.
pub fn decode_level(
    scores: &[f32],
    dists: &[f32],
    grid: usize,
    stride: usize,
    classes: usize,
    threshold: f32,
    out: &mut Vec<Detection>,
) {
    for cell in 0..grid * grid {
        let score = scores[cell * classes + PERSON];
        if score < threshold {
            continue;
        }
        let cx = ((cell % grid) as f32 + 0.5) * stride as f32;
        let cy = ((cell / grid) as f32 + 0.5) * stride as f32;
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
        decode_level(&scores, &dists, 2, 8, 80, 0.5, &mut out);
        assert_eq!(out.len(), 1);
        let b = out[0].bbox;
        // cell 3 = (1, 1): centre (12, 12); distance 2 bins * stride 8 = 16
        assert!(
            (b.x1 + 4.0).abs() < 1e-3 && (b.x2 - 28.0).abs() < 1e-3,
            "{b:?}"
        );
    }
}
