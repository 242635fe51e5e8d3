//! The messages edges and cores exchange, written by hand with `prost`'s derive (no `protoc` is
//! needed to build crosscam). `proto/crosscam_cluster.proto` is their documented schema; a test
//! checks that both carry the same field numbers and wire types.
//!
//! Decoding is defensive: a message comes from the network, so every size is bounded and every
//! name checked before anything is allocated from it or reaches a log or a subject.

use std::sync::Arc;
use std::time::Duration;

use crate::frame::BBox;
use crate::reid::{Observation as ReidObservation, ReidOutput};
use crate::track::{Crop as TrackCrop, TrackedBox, Tracklet};

/// The schema version this build writes and reads.
pub const SCHEMA: u32 = 1;

/// Limits on what a decoded observation may hold.
pub const MAX_BOXES: usize = 100_000;
pub const MAX_CROPS: usize = 64;
pub const MAX_DESCRIPTOR: usize = 8192;
/// Largest crop picture, pixels per side.
pub const MAX_CROP_SIDE: u32 = 2048;
/// Longest free-text field (camera state detail, names, URLs), characters.
pub const MAX_TEXT: usize = 1024;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Observation {
    #[prost(uint32, tag = "1")]
    pub schema: u32,
    #[prost(string, tag = "2")]
    pub edge: String,
    #[prost(string, tag = "3")]
    pub camera: String,
    #[prost(string, tag = "4")]
    pub run: String,
    #[prost(uint64, tag = "5")]
    pub track: u64,
    #[prost(uint64, tag = "6")]
    pub seq: u64,
    #[prost(enumeration = "Kind", tag = "7")]
    pub kind: i32,
    #[prost(int64, tag = "8")]
    pub start_pts_us: i64,
    #[prost(int64, tag = "9")]
    pub end_pts_us: i64,
    #[prost(message, repeated, tag = "10")]
    pub boxes: Vec<WireBox>,
    #[prost(message, repeated, tag = "11")]
    pub crops: Vec<WireCrop>,
    #[prost(float, repeated, tag = "12")]
    pub descriptor: Vec<f32>,
    #[prost(float, tag = "13")]
    pub quality: f32,
    #[prost(string, tag = "14")]
    pub model: String,
    #[prost(int64, tag = "15")]
    pub published_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Kind {
    Unspecified = 0,
    Started = 1,
    Updated = 2,
    Ended = 3,
}

/// `Box` in the .proto file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireBox {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(int64, tag = "2")]
    pub pts_us: i64,
    #[prost(int64, tag = "3")]
    pub wall_ms: i64,
    #[prost(float, tag = "4")]
    pub x1: f32,
    #[prost(float, tag = "5")]
    pub y1: f32,
    #[prost(float, tag = "6")]
    pub x2: f32,
    #[prost(float, tag = "7")]
    pub y2: f32,
    #[prost(float, tag = "8")]
    pub score: f32,
}

/// `Crop` in the .proto file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireCrop {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(int64, tag = "2")]
    pub pts_us: i64,
    #[prost(float, tag = "3")]
    pub x1: f32,
    #[prost(float, tag = "4")]
    pub y1: f32,
    #[prost(float, tag = "5")]
    pub x2: f32,
    #[prost(float, tag = "6")]
    pub y2: f32,
    #[prost(float, tag = "7")]
    pub quality: f32,
    #[prost(bytes = "vec", tag = "8")]
    pub jpeg: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CameraEvent {
    #[prost(uint32, tag = "1")]
    pub schema: u32,
    #[prost(string, tag = "2")]
    pub edge: String,
    #[prost(string, tag = "3")]
    pub camera: String,
    #[prost(string, tag = "4")]
    pub state: String,
    #[prost(string, tag = "5")]
    pub detail: String,
    #[prost(int64, tag = "6")]
    pub t_ms: i64,
    #[prost(string, tag = "7")]
    pub run: String,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(string, tag = "9")]
    pub url: String,
}

fn us(d: Duration) -> i64 {
    d.as_micros().min(i64::MAX as u128) as i64
}

fn dur(us: i64) -> Duration {
    Duration::from_micros(us.max(0) as u64)
}

/// Where an observation comes from: the edge's run and the message's place in its tracklet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub edge: String,
    pub run: String,
    pub seq: u64,
}

impl Observation {
    /// The wire form of what the re-id stage emitted; `seq` numbers the tracklet's messages.
    /// Crops are JPEG-encoded (quality 90, as the store keeps them).
    pub fn from_output(
        out: &ReidOutput,
        edge: &str,
        run: &str,
        seq: u64,
    ) -> anyhow::Result<Observation> {
        let (camera, t, kind) = match out {
            ReidOutput::Started { camera, tracklet } => (camera, tracklet, Kind::Started),
            ReidOutput::Observed(o) => (
                &o.camera,
                &o.tracklet,
                if o.ended { Kind::Ended } else { Kind::Updated },
            ),
        };
        let mut crops = Vec::new();
        if kind != Kind::Started {
            for c in &t.crops {
                let mut jpeg = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
                    .encode_image(c.image.as_ref())?;
                crops.push(WireCrop {
                    seq: c.seq,
                    pts_us: us(c.pts),
                    x1: c.bbox.x1,
                    y1: c.bbox.y1,
                    x2: c.bbox.x2,
                    y2: c.bbox.y2,
                    quality: c.quality,
                    jpeg,
                });
            }
        }
        let (descriptor, quality, model) = match out {
            ReidOutput::Observed(o) => (
                o.descriptor.clone().unwrap_or_default(),
                o.quality,
                o.model.clone(),
            ),
            ReidOutput::Started { .. } => (Vec::new(), 0.0, String::new()),
        };
        Ok(Observation {
            schema: SCHEMA,
            edge: edge.to_string(),
            camera: camera.to_string(),
            run: run.to_string(),
            track: t.id,
            seq,
            kind: kind as i32,
            start_pts_us: us(t.start),
            end_pts_us: us(t.end),
            boxes: t
                .boxes
                .iter()
                .map(|b| WireBox {
                    seq: b.seq,
                    pts_us: us(b.pts),
                    wall_ms: b.wall_ms,
                    x1: b.bbox.x1,
                    y1: b.bbox.y1,
                    x2: b.bbox.x2,
                    y2: b.bbox.y2,
                    score: b.score,
                })
                .collect(),
            crops,
            descriptor,
            quality,
            model,
            published_ms: crate::store::now_ms(),
        })
    }

    /// Checks a received observation and turns it back into what the re-id stage emitted.
    /// `subject_camera` is the camera token of the subject it came on.
    pub fn into_output(self, subject_camera: &str) -> Result<(ReidOutput, Origin), String> {
        if self.schema != SCHEMA {
            return Err(format!(
                "schema {} (this build reads {SCHEMA})",
                self.schema
            ));
        }
        crate::config::secrets::check_id(&self.camera).map_err(|m| format!("camera: {m}"))?;
        if self.camera != subject_camera {
            return Err(format!(
                "camera {:?} came on the subject of camera {:?}",
                self.camera, subject_camera
            ));
        }
        crate::config::secrets::check_id(&self.run).map_err(|m| format!("run: {m}"))?;
        if !self.edge.is_empty() {
            crate::config::secrets::check_id(&self.edge).map_err(|m| format!("edge: {m}"))?;
        }
        if self.boxes.len() > MAX_BOXES
            || self.crops.len() > MAX_CROPS
            || self.descriptor.len() > MAX_DESCRIPTOR
            || self.model.len() > MAX_TEXT
        {
            return Err(format!(
                "too large: {} boxes, {} crops, {} descriptor values",
                self.boxes.len(),
                self.crops.len(),
                self.descriptor.len()
            ));
        }
        let kind = Kind::try_from(self.kind).unwrap_or(Kind::Unspecified);
        if kind == Kind::Unspecified {
            return Err(format!("unknown kind {}", self.kind));
        }
        if !self.descriptor.is_empty() {
            let n: f32 = self.descriptor.iter().map(|v| v * v).sum::<f32>().sqrt();
            if !n.is_finite() || (n - 1.0).abs() > 1e-2 {
                return Err(format!("the descriptor is not unit length (norm {n})"));
            }
        }
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        let mut crops = Vec::with_capacity(self.crops.len());
        for c in &self.crops {
            if !finite(&[c.x1, c.y1, c.x2, c.y2, c.quality]) {
                return Err(format!("crop {} has a non-finite value", c.seq));
            }
            // only the header is read here: the core stores the JPEG as it came and decodes it
            // only to describe the crop again ([`crop_image`]), which is rare
            check_crop(&c.jpeg).map_err(|e| format!("crop {}: {e}", c.seq))?;
            crops.push(TrackCrop {
                seq: c.seq,
                pts: dur(c.pts_us),
                bbox: BBox::new(c.x1, c.y1, c.x2, c.y2),
                quality: c.quality,
                image: Arc::new(image::RgbImage::new(0, 0)),
                jpeg: Some(Arc::from(c.jpeg.as_slice())),
            });
        }
        let mut boxes = Vec::with_capacity(self.boxes.len());
        for b in &self.boxes {
            if !finite(&[b.x1, b.y1, b.x2, b.y2, b.score]) {
                return Err(format!("box {} has a non-finite value", b.seq));
            }
            boxes.push(TrackedBox {
                seq: b.seq,
                pts: dur(b.pts_us),
                bbox: BBox::new(b.x1, b.y1, b.x2, b.y2),
                score: b.score,
                wall_ms: b.wall_ms,
            });
        }
        let camera: crate::ingest::CameraId = Arc::from(self.camera.as_str());
        let tracklet = Tracklet {
            camera: self.camera.clone(),
            id: self.track,
            start: dur(self.start_pts_us),
            end: dur(self.end_pts_us),
            boxes,
            crops,
        };
        let origin = Origin {
            edge: self.edge,
            run: self.run,
            seq: self.seq,
        };
        let out = match kind {
            Kind::Started => ReidOutput::Started { camera, tracklet },
            _ => ReidOutput::Observed(ReidObservation {
                camera,
                tracklet,
                ended: kind == Kind::Ended,
                descriptor: (!self.descriptor.is_empty()).then_some(self.descriptor),
                quality: if self.quality.is_finite() {
                    self.quality
                } else {
                    0.0
                },
                model: self.model,
            }),
        };
        Ok((out, origin))
    }
}

/// Reads a crop picture's JPEG header and bounds its size.
fn crop_decoder(jpeg: &[u8]) -> Result<impl image::ImageDecoder + use<'_>, String> {
    let reader =
        image::ImageReader::with_format(std::io::Cursor::new(jpeg), image::ImageFormat::Jpeg);
    let dec = reader.into_decoder().map_err(|e| e.to_string())?;
    let (w, h) = image::ImageDecoder::dimensions(&dec);
    if w == 0 || h == 0 || w > MAX_CROP_SIDE || h > MAX_CROP_SIDE {
        return Err(format!("a {w}×{h} picture"));
    }
    Ok(dec)
}

/// Checks a crop picture from the network without decoding it: a JPEG header of a bounded size.
fn check_crop(jpeg: &[u8]) -> Result<(), String> {
    crop_decoder(jpeg).map(|_| ())
}

/// The picture of a crop: its decoded image, or, for one that came from the network as JPEG
/// (decoded lazily), the JPEG decoded now, its size bounded.
pub fn crop_image(c: &TrackCrop) -> Result<image::RgbImage, String> {
    match &c.jpeg {
        Some(j) if c.image.width() == 0 => decode_crop(j),
        _ => Ok((*c.image).clone()),
    }
}

/// A crop picture from the network: the header is read (and its size bounded) before decoding.
fn decode_crop(jpeg: &[u8]) -> Result<image::RgbImage, String> {
    let mut dec = crop_decoder(jpeg)?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_CROP_SIDE);
    limits.max_image_height = Some(MAX_CROP_SIDE);
    image::ImageDecoder::set_limits(&mut dec, limits).map_err(|e| e.to_string())?;
    let img = image::DynamicImage::from_decoder(dec).map_err(|e| e.to_string())?;
    Ok(img.to_rgb8())
}

impl CameraEvent {
    /// Checks a received camera event: `Ok((camera, state, detail, name, url))`.
    pub fn check(&self) -> Result<crate::ingest::CameraState, String> {
        if self.schema != SCHEMA {
            return Err(format!(
                "schema {} (this build reads {SCHEMA})",
                self.schema
            ));
        }
        crate::config::secrets::check_id(&self.camera).map_err(|m| format!("camera: {m}"))?;
        if !self.edge.is_empty() {
            crate::config::secrets::check_id(&self.edge).map_err(|m| format!("edge: {m}"))?;
        }
        for (k, v) in [
            ("detail", &self.detail),
            ("name", &self.name),
            ("url", &self.url),
        ] {
            if v.chars().count() > MAX_TEXT {
                return Err(format!("{k} is longer than {MAX_TEXT} characters"));
            }
        }
        camera_state(&self.state).ok_or_else(|| {
            format!(
                "unknown camera state {}",
                crate::config::secrets::clip(&self.state, 32)
            )
        })
    }
}

/// The camera state a [`CameraEvent`] names (its `Display` form).
pub fn camera_state(s: &str) -> Option<crate::ingest::CameraState> {
    use crate::ingest::CameraState as S;
    [
        S::Connecting,
        S::Live,
        S::Stalled,
        S::Backoff,
        S::Unauthorized,
        S::NotFound,
        S::Stopped,
    ]
    .into_iter()
    .find(|st| st.to_string() == s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    const PROTO: &str = include_str!("../../proto/crosscam_cluster.proto");

    /// `(field number, wire type)` of every field of `message` in the .proto text.
    fn proto_fields(message: &str) -> Vec<(u32, u8)> {
        let start = PROTO
            .find(&format!("message {message} {{"))
            .unwrap_or_else(|| panic!("no message {message} in the .proto"));
        let mut depth = 0;
        let mut out = Vec::new();
        for line in PROTO[start..].lines() {
            let l = line.split("//").next().unwrap_or("").trim();
            depth += l.matches('{').count() as i32;
            depth -= l.matches('}').count() as i32;
            // fields of this message only (not of the nested enum)
            if depth == 1
                && let Some((lhs, rhs)) = l.split_once('=')
            {
                let words: Vec<&str> = lhs.split_whitespace().collect();
                let n: u32 = rhs.trim().trim_end_matches(';').trim().parse().unwrap();
                let (repeated, ty) = match words.as_slice() {
                    ["repeated", ty, _] => (true, *ty),
                    [ty, _] => (false, *ty),
                    other => panic!("cannot read {other:?}"),
                };
                let wire = match (repeated, ty) {
                    (true, "float") => 2, // packed
                    (_, "float") => 5,
                    (_, "string" | "bytes") => 2,
                    (_, "uint32" | "uint64" | "int64" | "Kind") => 0,
                    (_, _) => 2, // messages
                };
                out.push((n, wire));
            }
            if depth == 0 && !out.is_empty() {
                break;
            }
        }
        out.sort();
        out
    }

    /// `(field number, wire type)` of every field in an encoded message, in order of first use.
    fn wire_fields(mut b: &[u8]) -> Vec<(u32, u8)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = prost::encoding::decode_varint(&mut b).unwrap();
            let (n, wt) = ((key >> 3) as u32, (key & 7) as u8);
            match wt {
                0 => {
                    prost::encoding::decode_varint(&mut b).unwrap();
                }
                5 => b = &b[4..],
                1 => b = &b[8..],
                2 => {
                    let len = prost::encoding::decode_varint(&mut b).unwrap() as usize;
                    b = &b[len..];
                }
                w => panic!("wire type {w}"),
            }
            if !out.contains(&(n, wt)) {
                out.push((n, wt));
            }
        }
        out.sort();
        out
    }

    fn tracklet() -> Tracklet {
        let img =
            image::RgbImage::from_fn(16, 32, |x, y| image::Rgb([x as u8 * 9, y as u8 * 5, 7]));
        Tracklet {
            camera: "cam-1".into(),
            id: 42,
            start: Duration::from_millis(100),
            end: Duration::from_millis(900),
            boxes: (0..3)
                .map(|k| TrackedBox {
                    seq: k + 1, // every field non-zero: proto3 leaves zeros out
                    pts: Duration::from_millis(100 + 400 * k),
                    bbox: BBox::new(1.0, 2.0, 30.0, 80.0),
                    score: 0.9,
                    wall_ms: 1_700_000_000_000 + k as i64,
                })
                .collect(),
            crops: vec![TrackCrop {
                seq: 1,
                pts: Duration::from_millis(500),
                bbox: BBox::new(1.0, 2.0, 30.0, 80.0),
                quality: 0.75,
                image: Arc::new(img),
                jpeg: None,
            }],
        }
    }

    fn observed() -> ReidOutput {
        let mut d = vec![0.0f32; 8];
        d[0] = 0.6;
        d[1] = 0.8;
        ReidOutput::Observed(ReidObservation {
            camera: Arc::from("cam-1"),
            tracklet: tracklet(),
            ended: true,
            descriptor: Some(d),
            quality: 0.5,
            model: "v0002:1a2b3c4d5e6f".into(),
        })
    }

    #[test]
    fn field_numbers_and_wire_types_match_the_proto_file() {
        let o = Observation::from_output(&observed(), "edge-a", "00ff", 3).unwrap();
        assert_eq!(wire_fields(&o.encode_to_vec()), proto_fields("Observation"));
        assert_eq!(
            wire_fields(&o.boxes[0].encode_to_vec()),
            proto_fields("Box")
        );
        assert_eq!(
            wire_fields(&o.crops[0].encode_to_vec()),
            proto_fields("Crop")
        );
        let e = CameraEvent {
            schema: 1,
            edge: "e".into(),
            camera: "c".into(),
            state: "live".into(),
            detail: "d".into(),
            t_ms: 1,
            run: "r".into(),
            name: "n".into(),
            url: "u".into(),
        };
        assert_eq!(wire_fields(&e.encode_to_vec()), proto_fields("CameraEvent"));
    }

    #[test]
    fn an_observation_round_trips() {
        let o = Observation::from_output(&observed(), "edge-a", "00ff", 3).unwrap();
        let back = Observation::decode(o.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, o);
        let (out, origin) = back.into_output("cam-1").unwrap();
        assert_eq!(
            origin,
            Origin {
                edge: "edge-a".into(),
                run: "00ff".into(),
                seq: 3
            }
        );
        let ReidOutput::Observed(got) = out else {
            panic!("not an observation")
        };
        let ReidOutput::Observed(want) = observed() else {
            unreachable!()
        };
        assert!(got.ended);
        assert_eq!(got.descriptor, want.descriptor);
        assert_eq!(got.model, want.model);
        assert_eq!(got.tracklet.id, 42);
        assert_eq!(got.tracklet.boxes, want.tracklet.boxes);
        assert_eq!(got.tracklet.start, want.tracklet.start);
        assert_eq!(got.tracklet.crops.len(), 1);
        assert_eq!(
            crop_image(&got.tracklet.crops[0]).unwrap().dimensions(),
            (16, 32)
        );
        assert_eq!(got.tracklet.crops[0].seq, 1);
    }

    #[test]
    fn hostile_observations_are_refused() {
        let good = Observation::from_output(&observed(), "edge-a", "00ff", 3).unwrap();
        let refuse = |o: Observation, camera: &str, what: &str| {
            let e = o.into_output(camera).unwrap_err();
            assert!(e.contains(what), "{e}");
        };
        refuse(good.clone(), "cam-2", "subject of camera");
        let mut o = good.clone();
        o.camera = "cam.1".into();
        refuse(o, "cam.1", "camera");
        let mut o = good.clone();
        o.schema = 2;
        refuse(o, "cam-1", "schema 2");
        let mut o = good.clone();
        o.descriptor = vec![f32::NAN; 8];
        refuse(o, "cam-1", "unit length");
        let mut o = good.clone();
        o.crops[0].jpeg.truncate(10);
        refuse(o, "cam-1", "crop 1");
        let mut o = good.clone();
        o.kind = 9;
        refuse(o, "cam-1", "kind");
        let mut o = good;
        o.run = "a b".into();
        refuse(o, "cam-1", "run");
        assert!(Observation::decode(&b"\xff\xff\xff"[..]).is_err());
    }
}
