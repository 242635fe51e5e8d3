//! Virtual cameras: time windows and image transforms of a clip that stand in for separate cameras
//! when only one real camera's footage exists, so cross-camera evaluation and domain shift can be
//! studied. This is a proxy — the same scene, background and viewpoint — and datasets say so.
//!
//! `--cameras` syntax (cameras separated by `;` or new lines):
//!
//! ```text
//! NAME=WINDOWS[,KEY=VALUE...]
//!   WINDOWS  START-END ('+' START-END)*, or '*' for the whole clip; END may be left out (to the end)
//!            times: 12, 12s, 12.5s, 1500ms, 2m, 1h (plain numbers are seconds)
//!   video=N        which --video (1-based; default 1)
//!   every=T        repeat the windows every T (e.g. c1=0-5s,every=10s and c2=5-10s,every=10s
//!                  alternate), up to until=T or the end of the clip
//!   brightness=F   contrast=F   cast=R:G:B   blur=SIGMA   scale=F     (see Transform)
//! ```
//!
//! Example: `c1=0-40s; c2=40-80s,brightness=0.7,cast=1.1:1.0:0.9,blur=1.5,scale=0.5`.
//! A name `cN` makes the camera number N (the `cN` of the file names); other names take the
//! lowest free numbers. The same settings can come from a TOML file (`--cameras cams.toml`):
//!
//! ```toml
//! [[camera]]
//! name = "c2"
//! window = "40-80s"        # same syntax as above; default "*"
//! brightness = 0.7
//! cast = [1.1, 1.0, 0.9]
//! blur = 1.5
//! scale = 0.5
//! ```
//!
//! Windows of different cameras may overlap: then the same moments are seen by both cameras
//! (with their different transforms), and the builder links the tracklets they share.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::transform::Transform;

#[derive(Debug, thiserror::Error)]
pub enum CameraSpecError {
    #[error("--cameras: camera {index} ({text:?}): {why}")]
    Camera {
        index: usize,
        text: String,
        why: String,
    },
    #[error("--cameras: {0}")]
    Spec(String),
    #[error("--cameras file {path}: {why}")]
    File { path: String, why: String },
}

const KEYS: &str = "video, every, until, brightness, contrast, cast, blur, scale";

/// A time window `[start, end)` of a clip; `end = None` runs to the end of the clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Duration,
    pub end: Option<Duration>,
}

/// One virtual camera.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualCamera {
    /// Camera number in file names (`cN`), unique, ≥ 1.
    pub id: u32,
    pub name: String,
    /// Index into the `--video` list (0-based).
    pub video: usize,
    /// Windows within one period (or within the clip when not periodic); empty = whole clip.
    pub windows: Vec<Window>,
    /// Period after which the windows repeat.
    pub every: Option<Duration>,
    /// No repetition starts at or after this time.
    pub until: Option<Duration>,
    pub transform: Transform,
}

impl VirtualCamera {
    /// The whole of video `video` as camera `id`, untransformed.
    pub fn whole(video: usize, id: u32) -> VirtualCamera {
        VirtualCamera {
            id,
            name: format!("c{id}"),
            video,
            windows: Vec::new(),
            every: None,
            until: None,
            transform: Transform::default(),
        }
    }

    /// Whether this camera sees time `t` of its clip.
    pub fn contains(&self, t: Duration) -> bool {
        if self.windows.is_empty() {
            return self.until.is_none_or(|u| t < u);
        }
        let local = match self.every {
            Some(p) => {
                if self.until.is_some_and(|u| t >= u) {
                    return false;
                }
                let first = self
                    .windows
                    .iter()
                    .map(|w| w.start)
                    .min()
                    .unwrap_or_default();
                if t < first {
                    return false;
                }
                let k = ((t - first).as_nanos() / p.as_nanos()) as u32;
                t - p * k
            }
            None => t,
        };
        self.windows
            .iter()
            .any(|w| local >= w.start && w.end.is_none_or(|e| local < e))
    }

    /// The concrete windows within a clip of length `clip` (periodic windows expanded), sorted.
    /// Trackers must restart at each one: time jumps between them.
    pub fn segments(&self, clip: Duration) -> Vec<Window> {
        let end = self.until.map_or(clip, |u| u.min(clip));
        let base: Vec<Window> = if self.windows.is_empty() {
            vec![Window {
                start: Duration::ZERO,
                end: None,
            }]
        } else {
            self.windows.clone()
        };
        let mut out = Vec::new();
        let mut shift = Duration::ZERO;
        loop {
            let mut any = false;
            for w in &base {
                let s = w.start + shift;
                if s >= end {
                    continue;
                }
                any = true;
                let e = w.end.map_or(end, |e| (e + shift).min(end));
                if e > s {
                    out.push(Window {
                        start: s,
                        end: Some(e),
                    });
                }
            }
            match self.every {
                Some(p) if any => shift += p,
                _ => break,
            }
        }
        out.sort_by_key(|w| w.start);
        out
    }

    /// The camera in `--cameras` syntax (recorded in dataset.json).
    pub fn spec(&self) -> String {
        let mut s = format!("{}=", self.name);
        if self.windows.is_empty() {
            s.push('*');
        } else {
            let w: Vec<String> = self
                .windows
                .iter()
                .map(|w| {
                    format!(
                        "{}-{}",
                        fmt_time(w.start),
                        w.end.map(fmt_time).unwrap_or_default()
                    )
                })
                .collect();
            s.push_str(&w.join("+"));
        }
        if self.video != 0 {
            s.push_str(&format!(",video={}", self.video + 1));
        }
        if let Some(p) = self.every {
            s.push_str(&format!(",every={}", fmt_time(p)));
        }
        if let Some(u) = self.until {
            s.push_str(&format!(",until={}", fmt_time(u)));
        }
        let t = &self.transform;
        let d = Transform::default();
        if t.brightness != d.brightness {
            s.push_str(&format!(",brightness={}", t.brightness));
        }
        if t.contrast != d.contrast {
            s.push_str(&format!(",contrast={}", t.contrast));
        }
        if t.cast != d.cast {
            s.push_str(&format!(",cast={}:{}:{}", t.cast[0], t.cast[1], t.cast[2]));
        }
        if t.blur != d.blur {
            s.push_str(&format!(",blur={}", t.blur));
        }
        if t.scale != d.scale {
            s.push_str(&format!(",scale={}", t.scale));
        }
        s
    }
}

fn fmt_time(d: Duration) -> String {
    let s = d.as_secs_f64();
    format!("{}s", (s * 1000.0).round() / 1000.0)
}

/// Parses a time: `12`, `12s`, `12.5s`, `1500ms`, `2m`, `1h`.
pub fn parse_time(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a time (write e.g. 40s, 12.5s, 1500ms, 2m)"))?;
    let mult = match unit {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        u => {
            return Err(format!(
                "unknown time unit {u:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?}: times must be zero or positive"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

fn parse_windows(s: &str) -> Result<Vec<Window>, String> {
    let s = s.trim();
    if s == "*" || s.eq_ignore_ascii_case("all") {
        return Ok(Vec::new());
    }
    s.split('+')
        .map(|w| {
            let (a, b) = w.split_once('-').ok_or_else(|| {
                format!(
                    "window {w:?} must be START-END (e.g. 0-40s, 40s-, or * for the whole clip)"
                )
            })?;
            let start = if a.trim().is_empty() {
                Duration::ZERO
            } else {
                parse_time(a)?
            };
            let end = if b.trim().is_empty() {
                None
            } else {
                Some(parse_time(b)?)
            };
            if end.is_some_and(|e| e <= start) {
                return Err(format!("window {w:?} ends before it starts"));
            }
            Ok(Window { start, end })
        })
        .collect()
}

fn parse_f32(key: &str, v: &str) -> Result<f32, String> {
    v.trim()
        .parse::<f32>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| format!("{key}={v}: not a number"))
}

/// Time given as seconds or as text with a unit (TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum TimeValue {
    Seconds(f64),
    Text(String),
}

impl TimeValue {
    fn get(&self) -> Result<Duration, String> {
        match self {
            TimeValue::Seconds(s) => parse_time(&s.to_string()),
            TimeValue::Text(t) => parse_time(t),
        }
    }
}

/// One camera as written, before checks.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCamera {
    name: String,
    window: Option<String>,
    video: Option<usize>,
    every: Option<TimeValue>,
    until: Option<TimeValue>,
    brightness: Option<f32>,
    contrast: Option<f32>,
    cast: Option<[f32; 3]>,
    blur: Option<f32>,
    scale: Option<f32>,
    #[serde(skip)]
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CameraFile {
    camera: Vec<RawCamera>,
}

fn parse_raw(text: &str) -> Result<RawCamera, String> {
    let (name, rest) = text
        .split_once('=')
        .ok_or("expected NAME=WINDOWS[,KEY=VALUE...], e.g. c2=40-80s,brightness=0.7")?;
    let mut parts = rest.split(',');
    let mut raw = RawCamera {
        name: name.trim().to_string(),
        window: parts.next().map(str::to_string),
        text: text.to_string(),
        ..Default::default()
    };
    for kv in parts {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("setting {kv:?} must be KEY=VALUE (known keys: {KEYS})"))?;
        let k = k.trim();
        match k {
            "video" => {
                raw.video = Some(
                    v.trim()
                        .parse()
                        .map_err(|_| format!("video={v}: expected a --video number (1, 2, …)"))?,
                )
            }
            "every" => raw.every = Some(TimeValue::Text(v.to_string())),
            "until" => raw.until = Some(TimeValue::Text(v.to_string())),
            "brightness" => raw.brightness = Some(parse_f32(k, v)?),
            "contrast" => raw.contrast = Some(parse_f32(k, v)?),
            "blur" => raw.blur = Some(parse_f32(k, v)?),
            "scale" => raw.scale = Some(parse_f32(k, v)?),
            "cast" => {
                let g: Vec<f32> = v
                    .split(':')
                    .map(|x| parse_f32(k, x))
                    .collect::<Result<_, _>>()?;
                let [r, gr, b] = g[..] else {
                    return Err(format!(
                        "cast={v}: expected three gains R:G:B, e.g. 1.1:1.0:0.9"
                    ));
                };
                raw.cast = Some([r, gr, b]);
            }
            _ => return Err(format!("unknown setting {k:?} (known: {KEYS})")),
        }
    }
    Ok(raw)
}

fn check_range(key: &str, v: f32, lo: f32, hi: f32, lo_open: bool) -> Result<(), String> {
    let above = if lo_open { v > lo } else { v >= lo };
    if above && v <= hi {
        Ok(())
    } else {
        let open = if lo_open { "(" } else { "[" };
        Err(format!("{key}={v} is out of range {open}{lo}, {hi}]"))
    }
}

fn finish(raws: Vec<RawCamera>, videos: usize) -> Result<Vec<VirtualCamera>, CameraSpecError> {
    if raws.is_empty() {
        return Err(CameraSpecError::Spec("no camera given".into()));
    }
    let mut cams = Vec::new();
    let mut names = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for (i, raw) in raws.iter().enumerate() {
        let err = |why: String| CameraSpecError::Camera {
            index: i + 1,
            text: if raw.text.is_empty() {
                raw.name.clone()
            } else {
                raw.text.clone()
            },
            why,
        };
        let name = raw.name.clone();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(err(format!(
                "camera name {name:?} must be letters, digits, '_' or '-'"
            )));
        }
        if !names.insert(name.clone()) {
            return Err(err(format!("the name {name:?} is used twice")));
        }
        let windows = parse_windows(raw.window.as_deref().unwrap_or("*")).map_err(err)?;
        let video = raw.video.unwrap_or(1);
        if video == 0 || video > videos {
            return Err(err(format!(
                "video={video}, but {videos} video(s) were given with --video (count from 1)"
            )));
        }
        let every = raw
            .every
            .as_ref()
            .map(TimeValue::get)
            .transpose()
            .map_err(err)?;
        let until = raw
            .until
            .as_ref()
            .map(TimeValue::get)
            .transpose()
            .map_err(err)?;
        if let Some(p) = every {
            if p.is_zero() {
                return Err(err("every= must be longer than zero".into()));
            }
            if windows.is_empty() || windows.iter().any(|w| w.end.is_none()) {
                return Err(err(
                    "every= repeats closed windows: give START-END windows (e.g. 0-5s,every=10s)"
                        .into(),
                ));
            }
            let first = windows.iter().map(|w| w.start).min().unwrap_or_default();
            let last = windows
                .iter()
                .filter_map(|w| w.end)
                .max()
                .unwrap_or_default();
            if last - first > p {
                return Err(err(format!(
                    "the windows span {} but repeat every {}: they would overlap themselves",
                    fmt_time(last - first),
                    fmt_time(p)
                )));
            }
        }
        let d = Transform::default();
        let transform = Transform {
            brightness: raw.brightness.unwrap_or(d.brightness),
            contrast: raw.contrast.unwrap_or(d.contrast),
            cast: raw.cast.unwrap_or(d.cast),
            blur: raw.blur.unwrap_or(d.blur),
            scale: raw.scale.unwrap_or(d.scale),
        };
        check_range("brightness", transform.brightness, 0.0, 10.0, true).map_err(err)?;
        check_range("contrast", transform.contrast, 0.0, 10.0, true).map_err(err)?;
        for g in transform.cast {
            check_range("cast", g, 0.0, 10.0, true).map_err(err)?;
        }
        check_range("blur", transform.blur, 0.0, 50.0, false).map_err(err)?;
        check_range("scale", transform.scale, 0.0, 4.0, true).map_err(err)?;
        let id = name
            .strip_prefix('c')
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|&n| n > 0);
        if let Some(id) = id
            && !ids.insert(id)
        {
            return Err(err(format!("camera number {id} is used twice")));
        }
        cams.push(VirtualCamera {
            id: id.unwrap_or(0),
            name,
            video: video - 1,
            windows,
            every,
            until,
            transform,
        });
    }
    // names that are not cN take the lowest free numbers, in order
    let mut next = 1;
    for c in cams.iter_mut().filter(|c| c.id == 0) {
        while ids.contains(&next) {
            next += 1;
        }
        c.id = next;
        ids.insert(next);
    }
    Ok(cams)
}

/// Parses a `--cameras` spec for `videos` input videos.
pub fn parse_spec(spec: &str, videos: usize) -> Result<Vec<VirtualCamera>, CameraSpecError> {
    let mut raws = Vec::new();
    for (i, text) in spec
        .split([';', '\n'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .enumerate()
    {
        raws.push(parse_raw(text).map_err(|why| CameraSpecError::Camera {
            index: i + 1,
            text: text.to_string(),
            why,
        })?);
    }
    finish(raws, videos)
}

/// Reads cameras from a TOML file (`[[camera]]` tables).
pub fn load_file(path: &Path, videos: usize) -> Result<Vec<VirtualCamera>, CameraSpecError> {
    let ferr = |why: String| CameraSpecError::File {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| ferr(e.to_string()))?;
    let file: CameraFile = toml::from_str(&text).map_err(|e| ferr(e.to_string()))?;
    finish(file.camera, videos)
}

/// `--cameras`: a spec (it holds '='), else the path of a TOML file. Without it: one camera per
/// video, the whole clip, untransformed.
pub fn from_arg(arg: Option<&str>, videos: usize) -> Result<Vec<VirtualCamera>, CameraSpecError> {
    match arg {
        None => Ok((0..videos)
            .map(|v| VirtualCamera::whole(v, v as u32 + 1))
            .collect()),
        Some(a) if a.contains('=') => parse_spec(a, videos),
        Some(a) => load_file(Path::new(a), videos),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn parses_the_documented_example() {
        let c = parse_spec(
            "c1=0-40s; c2=40-80s,brightness=0.7,cast=1.1:1.0:0.9,blur=1.5,scale=0.5",
            1,
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].id, c[1].id), (1, 2));
        assert_eq!(
            c[1].windows,
            vec![Window {
                start: secs(40.0),
                end: Some(secs(80.0))
            }]
        );
        let t = c[1].transform;
        assert_eq!(
            (t.brightness, t.cast, t.blur, t.scale),
            (0.7, [1.1, 1.0, 0.9], 1.5, 0.5)
        );
        assert!(c[0].transform.is_identity());
        assert!(c[0].contains(secs(39.9)) && !c[0].contains(secs(40.0)));
        assert_eq!(
            c[1].spec(),
            "c2=40s-80s,brightness=0.7,cast=1.1:1:0.9,blur=1.5,scale=0.5"
        );
        // the canonical spec parses back to the same camera
        assert_eq!(parse_spec(&c[1].spec(), 1).unwrap()[0], c[1]);
    }

    #[test]
    fn times_windows_periods_and_numbering() {
        assert_eq!(parse_time("1500ms").unwrap(), secs(1.5));
        assert_eq!(parse_time("2m").unwrap(), secs(120.0));
        assert_eq!(parse_time("12.5").unwrap(), secs(12.5));
        assert!(parse_time("5 parsecs").is_err());
        let c = parse_spec(
            "dark=5-10s,every=10s,brightness=0.5\nc1=0-5s,every=10s,until=30s\nall=*,video=2",
            2,
        )
        .unwrap();
        assert_eq!(
            (c[0].id, c[1].id, c[2].id),
            (2, 1, 3),
            "cN keeps N, others fill in"
        );
        assert!(
            c[0].contains(secs(17.0)) && !c[0].contains(secs(12.0)) && !c[0].contains(secs(2.0))
        );
        assert!(c[1].contains(secs(21.0)) && !c[1].contains(secs(31.0)));
        let seg = c[1].segments(secs(79.5));
        assert_eq!(seg.len(), 3);
        assert_eq!(
            seg[2],
            Window {
                start: secs(20.0),
                end: Some(secs(25.0))
            }
        );
        let seg = c[0].segments(secs(27.0));
        assert_eq!(
            seg.last().unwrap(),
            &Window {
                start: secs(25.0),
                end: Some(secs(27.0))
            }
        );
        assert_eq!(c[2].video, 1);
        assert_eq!(
            c[2].segments(secs(9.0)),
            vec![Window {
                start: secs(0.0),
                end: Some(secs(9.0))
            }]
        );
        let d = from_arg(None, 2).unwrap();
        assert_eq!((d[1].id, d[1].video, d[1].name.as_str()), (2, 1, "c2"));
    }

    #[test]
    fn mistakes_are_explained() {
        let cases = [
            ("c1=0-40s,brigthness=0.7", "unknown setting \"brigthness\""),
            ("c1=40-10s", "ends before it starts"),
            ("c1", "expected NAME=WINDOWS"),
            ("c1=0-40s;c1=40-80s", "used twice"),
            ("c1=0-5s,video=2", "1 video(s) were given"),
            ("c1=0-8s,every=5s", "overlap themselves"),
            ("c1=5s-,every=5s", "closed windows"),
            ("c1=*,scale=0", "scale=0 is out of range"),
            ("c1=*,cast=1:1", "three gains"),
            ("c1=0-4x", "unknown time unit"),
        ];
        for (spec, want) in cases {
            let e = parse_spec(spec, 1).unwrap_err().to_string();
            assert!(e.contains(want), "{spec}: {e}");
        }
        assert!(
            parse_spec("c1=0-1s;c2=1-2s,blur=x", 1)
                .unwrap_err()
                .to_string()
                .starts_with("--cameras: camera 2 (\"c2=1-2s,blur=x\")")
        );
    }

    #[test]
    fn toml_file_matches_the_spec() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cams.toml");
        std::fs::write(
            &p,
            "[[camera]]\nname = \"c1\"\nwindow = \"0-40s\"\n\n[[camera]]\nname = \"c2\"\nwindow = \"40-80s\"\n\
             brightness = 0.7\ncast = [1.1, 1.0, 0.9]\nblur = 1.5\nscale = 0.5\nevery = 80\n",
        )
        .unwrap();
        let a = from_arg(p.to_str(), 1).unwrap();
        let b = parse_spec(
            "c1=0-40s;c2=40-80s,brightness=0.7,cast=1.1:1.0:0.9,blur=1.5,scale=0.5,every=80s",
            1,
        )
        .unwrap();
        assert_eq!(a, b);
        std::fs::write(&p, "[[camera]]\nname = \"c1\"\nbrigthness = 2\n").unwrap();
        let e = from_arg(p.to_str(), 1).unwrap_err().to_string();
        assert!(e.contains("cams.toml") && e.contains("brigthness"), "{e}");
    }
}
