//! Re-id image datasets on disk: readers for the layouts users have (Market-1501, DukeMTMC-reID,
//! MSMT17, CUHK03-NP), detected from the folder or named, and the writer of the Market-1501 layout
//! that `crosscam dataset build` produces (plus its `dataset.json`).
//!
//! Every reader gives the same [`Dataset`]: train, query and gallery [`Item`]s with a person id and
//! a camera id, so evaluation and training need not know where the data came from. Person ids keep
//! the Market-1501 meaning everywhere: −1 = junk, 0 = distractor, ≥ 1 = a person (MSMT17's list
//! labels start at 0 and are therefore shifted by one). Camera ids are the numbers written in the
//! file names (1-based). Items are sorted by path, so every run sees the same order.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::metrics::Label;

/// The file that describes a dataset crosscam made.
pub const INFO_FILE: &str = "dataset.json";
pub const TRAIN_DIR: &str = "bounding_box_train";
pub const GALLERY_DIR: &str = "bounding_box_test";
pub const QUERY_DIR: &str = "query";

const MARKET_PATTERN: &str = "PPPP_cCsS_FFFFFF_NN.jpg (person id or -1, camera, sequence, frame, box index), e.g. 0002_c1s1_000451_03.jpg";
const DUKE_PATTERN: &str =
    "PPPP_cC_fFFFFFFF.jpg (person id, camera, frame), e.g. 0001_c2_f0046182.jpg";
const CUHK03_PATTERN: &str = "PPPP_cC_N.png (person id, camera, index), e.g. 0001_c1_1.png";
const MSMT17_PATTERN: &str = "PPPP_III_CC_DATE_FFFF_N.jpg (camera = third field), e.g. 0000/0000_000_01_0303morning_0015_0.jpg";

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(
        "{path}: not a re-id dataset folder. Expected one of: Market-1501 / DukeMTMC-reID layout \
         (bounding_box_train/, bounding_box_test/, query/), CUHK03-NP (detected/ or labeled/ holding that layout), \
         MSMT17 (list_train.txt, list_query.txt, list_gallery.txt with train/ and test/ or mask_train_v2/ and mask_test_v2/). \
         Found: {found}"
    )]
    Unrecognized { path: PathBuf, found: String },
    #[error("{path}: {what} is missing; the {format} layout needs it")]
    Missing {
        path: PathBuf,
        what: &'static str,
        format: &'static str,
    },
    #[error("{path}: the file name does not follow the {format} pattern {pattern}{more}")]
    BadName {
        path: PathBuf,
        format: &'static str,
        pattern: &'static str,
        /// ", and N more such files" when there are several.
        more: String,
    },
    #[error("{path}:{line}: {why}")]
    BadListLine {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("{path}: no images whose names follow the {format} pattern (looked in {dirs})")]
    Empty {
        path: PathBuf,
        format: &'static str,
        dirs: String,
    },
    #[error("unknown dataset format '{0}' (known: {known})", known = Format::NAMES.join(", "))]
    UnknownFormat(String),
    #[error("{path}: invalid {INFO_FILE}: {why}")]
    BadInfo { path: PathBuf, why: String },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{path}: cannot write image: {why}")]
    Image { path: PathBuf, why: String },
    #[error(
        "{0} already holds a dataset; remove it or pass --force to replace its splits and dataset.json"
    )]
    Exists(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError + '_ {
    move |e| DatasetError::Io(path.to_path_buf(), e)
}

/// Which CUHK03-NP subset: boxes from the detector or drawn by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cuhk03Subset {
    Detected,
    Labeled,
    /// The dataset root already is the subset folder.
    Here,
}

/// A dataset layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Market1501,
    DukeMtmcReid,
    Msmt17,
    Cuhk03Np(Cuhk03Subset),
}

impl Format {
    /// Names accepted by `--format` (`auto` detects).
    pub const NAMES: &'static [&'static str] = &[
        "auto",
        "market1501",
        "dukemtmc-reid",
        "msmt17",
        "cuhk03-np",
        "cuhk03-np-detected",
        "cuhk03-np-labeled",
    ];

    /// Parses a `--format` value; `None` for `auto`.
    pub fn parse(s: &str) -> Result<Option<Format>, DatasetError> {
        let f = match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "auto" => return Ok(None),
            "market1501" | "market-1501" | "market" => Format::Market1501,
            "dukemtmc-reid" | "dukemtmc" | "duke" => Format::DukeMtmcReid,
            "msmt17" => Format::Msmt17,
            "cuhk03-np" | "cuhk03" => Format::Cuhk03Np(Cuhk03Subset::Here),
            "cuhk03-np-detected" | "cuhk03-detected" => Format::Cuhk03Np(Cuhk03Subset::Detected),
            "cuhk03-np-labeled" | "cuhk03-labeled" => Format::Cuhk03Np(Cuhk03Subset::Labeled),
            _ => return Err(DatasetError::UnknownFormat(s.to_string())),
        };
        Ok(Some(f))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Format::Market1501 => "market1501",
            Format::DukeMtmcReid => "dukemtmc-reid",
            Format::Msmt17 => "msmt17",
            Format::Cuhk03Np(Cuhk03Subset::Here) => "cuhk03-np",
            Format::Cuhk03Np(Cuhk03Subset::Detected) => "cuhk03-np-detected",
            Format::Cuhk03Np(Cuhk03Subset::Labeled) => "cuhk03-np-labeled",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Format::Market1501 => "Market-1501",
            Format::DukeMtmcReid => "DukeMTMC-reID",
            Format::Msmt17 => "MSMT17",
            Format::Cuhk03Np(_) => "CUHK03-NP",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Query,
    Gallery,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Query, Split::Gallery];

    /// The folder of this split in the Market-1501 layout.
    pub fn market_dir(&self) -> &'static str {
        match self {
            Split::Train => TRAIN_DIR,
            Split::Query => QUERY_DIR,
            Split::Gallery => GALLERY_DIR,
        }
    }
}

/// One image of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Dataset root joined with the image's relative path.
    pub path: PathBuf,
    /// −1 junk, 0 distractor, ≥ 1 a person. Trainers should skip ids ≤ 0.
    pub pid: i32,
    /// Camera number as written in the file name (1-based).
    pub camid: u32,
    /// Market-1501's video sequence (`sS`) when the name has one.
    pub seq: Option<u32>,
    /// Frame number when the name has one.
    pub frame: Option<u64>,
}

impl Item {
    pub fn label(&self) -> Label {
        Label::new(self.pid, self.camid)
    }
}

/// A dataset: its three splits (any may be empty; the readers say so when one is missing).
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub format: Format,
    pub train: Vec<Item>,
    pub query: Vec<Item>,
    pub gallery: Vec<Item>,
    /// Where each split was read from (a folder, or a list file for MSMT17): for messages.
    pub sources: SplitSources,
    /// The `dataset.json` of datasets crosscam made.
    pub info: Option<DatasetInfo>,
}

#[derive(Debug, Clone, Default)]
pub struct SplitSources {
    pub train: PathBuf,
    pub query: PathBuf,
    pub gallery: PathBuf,
}

/// Image and identity counts of one split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SplitCounts {
    pub images: usize,
    /// Distinct person ids ≥ 1.
    pub ids: usize,
    pub cameras: usize,
}

impl SplitCounts {
    pub fn of(items: &[Item]) -> SplitCounts {
        let ids: BTreeSet<i32> = items.iter().map(|i| i.pid).filter(|&p| p > 0).collect();
        let cams: BTreeSet<u32> = items.iter().map(|i| i.camid).collect();
        SplitCounts {
            images: items.len(),
            ids: ids.len(),
            cameras: cams.len(),
        }
    }
}

impl Dataset {
    /// Reads the dataset at `root`, in `format` or the detected one.
    pub fn load(root: &Path, format: Option<Format>) -> Result<Dataset, DatasetError> {
        let format = match format {
            Some(f) => f,
            None => detect(root)?,
        };
        let mut ds = match format {
            Format::Msmt17 => read_msmt17(root)?,
            Format::Cuhk03Np(sub) => {
                let dir = match sub {
                    Cuhk03Subset::Detected => root.join("detected"),
                    Cuhk03Subset::Labeled => root.join("labeled"),
                    // `--format cuhk03-np` on the cuhk03-np folder: the detected subset first
                    Cuhk03Subset::Here if !root.join(QUERY_DIR).is_dir() => {
                        match ["detected", "labeled"]
                            .iter()
                            .map(|s| root.join(s))
                            .find(|d| d.is_dir())
                        {
                            Some(d) => d,
                            None => root.to_path_buf(),
                        }
                    }
                    Cuhk03Subset::Here => root.to_path_buf(),
                };
                if !dir.is_dir() {
                    return Err(DatasetError::Missing {
                        path: dir,
                        what: "this subset folder",
                        format: "CUHK03-NP",
                    });
                }
                read_market_like(&dir, format)?
            }
            f => read_market_like(root, f)?,
        };
        ds.root = root.to_path_buf();
        let info = root.join(INFO_FILE);
        if info.is_file() {
            ds.info = Some(DatasetInfo::load(&info)?);
        }
        Ok(ds)
    }

    pub fn items(&self, split: Split) -> &[Item] {
        match split {
            Split::Train => &self.train,
            Split::Query => &self.query,
            Split::Gallery => &self.gallery,
        }
    }

    pub fn source(&self, split: Split) -> &Path {
        match split {
            Split::Train => &self.sources.train,
            Split::Query => &self.sources.query,
            Split::Gallery => &self.sources.gallery,
        }
    }

    /// Whether the labels are pseudo-labels (a crosscam-built dataset says so in dataset.json).
    pub fn pseudo_labels(&self) -> bool {
        self.info.as_ref().is_some_and(|i| i.labels == "pseudo")
    }
}

/// Detects the layout of `root`.
pub fn detect(root: &Path) -> Result<Format, DatasetError> {
    if !root.is_dir() {
        return Err(DatasetError::Io(
            root.to_path_buf(),
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
        ));
    }
    if root.join("list_query.txt").is_file() || root.join("list_gallery.txt").is_file() {
        return Ok(Format::Msmt17);
    }
    let has_market_dirs = |d: &Path| {
        [TRAIN_DIR, GALLERY_DIR, QUERY_DIR]
            .iter()
            .any(|s| d.join(s).is_dir())
    };
    for (sub, subset) in [
        ("detected", Cuhk03Subset::Detected),
        ("labeled", Cuhk03Subset::Labeled),
    ] {
        if has_market_dirs(&root.join(sub)) {
            return Ok(Format::Cuhk03Np(subset));
        }
    }
    if has_market_dirs(root) {
        // Market-1501, DukeMTMC-reID and a CUHK03-NP subset share the folders: the names differ
        for dir in [QUERY_DIR, GALLERY_DIR, TRAIN_DIR] {
            let Ok(files) = image_files(&root.join(dir)) else {
                continue;
            };
            if let Some((_, name)) = files.first() {
                return Ok(if parse_market(name).is_some() {
                    Format::Market1501
                } else if parse_duke(name).is_some() {
                    Format::DukeMtmcReid
                } else if parse_cuhk03(name).is_some() {
                    Format::Cuhk03Np(Cuhk03Subset::Here)
                } else {
                    // let the Market reader report the name it cannot read
                    Format::Market1501
                });
            }
        }
        return Ok(Format::Market1501);
    }
    let mut found: Vec<String> = std::fs::read_dir(root)
        .map_err(io(root))?
        .filter_map(|e| e.ok())
        .map(|e| {
            let mut n = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() {
                n.push('/');
            }
            n
        })
        .collect();
    found.sort();
    let found = if found.is_empty() {
        "nothing (empty folder)".to_string()
    } else if found.len() > 12 {
        format!("{}, … ({} entries)", found[..12].join(", "), found.len())
    } else {
        found.join(", ")
    };
    Err(DatasetError::Unrecognized {
        path: root.to_path_buf(),
        found,
    })
}

fn is_image(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    l.ends_with(".jpg") || l.ends_with(".jpeg") || l.ends_with(".png")
}

/// Image files of a folder (other files, e.g. `Thumbs.db`, are skipped), sorted by name.
fn image_files(dir: &Path) -> Result<Vec<(PathBuf, String)>, DatasetError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if is_image(&name) && e.path().is_file() {
            out.push((e.path(), name));
        }
    }
    out.sort();
    Ok(out)
}

/// A file name in the Market-1501 layout: `PPPP_cCsS_FFFFFF_NN.jpg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketName {
    pub pid: i32,
    pub camid: u32,
    pub seq: u32,
    pub frame: u64,
    pub index: u32,
}

impl MarketName {
    /// The file name, zero-padded as Market-1501 writes it (pid 4, frame 6, index 2 digits;
    /// larger numbers just take more digits), junk as `-1`.
    pub fn file_name(&self) -> String {
        let pid = if self.pid < 0 {
            self.pid.to_string()
        } else {
            format!("{:04}", self.pid)
        };
        format!(
            "{pid}_c{}s{}_{:06}_{:02}.jpg",
            self.camid, self.seq, self.frame, self.index
        )
    }
}

fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn strip_image_ext(name: &str) -> Option<&str> {
    let (stem, ext) = name.rsplit_once('.')?;
    matches!(ext.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png").then_some(stem)
}

fn pid_field(s: &str) -> Option<i32> {
    if s == "-1" { Some(-1) } else { digits(s) }
}

/// Parses `PPPP_cCsS_FFFFFF_NN.jpg`.
pub fn parse_market(name: &str) -> Option<MarketName> {
    let stem = strip_image_ext(name)?;
    let f: Vec<&str> = stem.split('_').collect();
    let [p, cs, fr, idx] = f[..] else {
        return None;
    };
    let (c, s) = cs.strip_prefix('c')?.split_once('s')?;
    Some(MarketName {
        pid: pid_field(p)?,
        camid: digits(c)?,
        seq: digits(s)?,
        frame: digits(fr)?,
        index: digits(idx)?,
    })
}

/// Parses `PPPP_cC_fFFFFFFF.jpg` → (pid, camera, frame).
pub fn parse_duke(name: &str) -> Option<(i32, u32, u64)> {
    let stem = strip_image_ext(name)?;
    let f: Vec<&str> = stem.split('_').collect();
    let [p, c, fr] = f[..] else {
        return None;
    };
    Some((
        pid_field(p)?,
        digits(c.strip_prefix('c')?)?,
        digits(fr.strip_prefix('f')?)?,
    ))
}

/// Parses CUHK03-NP's `PPPP_cC_N.png` → (pid, camera). Only the `PPPP_cC` prefix is required:
/// the rest of the name is an image index.
pub fn parse_cuhk03(name: &str) -> Option<(i32, u32)> {
    let stem = strip_image_ext(name)?;
    let mut f = stem.split('_');
    let (Some(p), Some(c)) = (f.next(), f.next()) else {
        return None;
    };
    Some((pid_field(p)?, digits(c.strip_prefix('c')?)?))
}

fn read_market_dir(dir: &Path, format: Format) -> Result<Vec<Item>, DatasetError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let (fmt, pattern) = match format {
        Format::DukeMtmcReid => ("DukeMTMC-reID", DUKE_PATTERN),
        Format::Cuhk03Np(_) => ("CUHK03-NP", CUHK03_PATTERN),
        _ => ("Market-1501", MARKET_PATTERN),
    };
    let mut items = Vec::new();
    let mut bad: Vec<PathBuf> = Vec::new();
    for (path, name) in image_files(dir)? {
        let parsed = match format {
            Format::DukeMtmcReid => parse_duke(&name).map(|(p, c, f)| (p, c, None, Some(f))),
            Format::Cuhk03Np(_) => parse_cuhk03(&name).map(|(p, c)| (p, c, None, None)),
            _ => parse_market(&name).map(|m| (m.pid, m.camid, Some(m.seq), Some(m.frame))),
        };
        match parsed {
            Some((pid, camid, seq, frame)) => items.push(Item {
                path,
                pid,
                camid,
                seq,
                frame,
            }),
            None => bad.push(path),
        }
    }
    if let Some(first) = bad.first() {
        return Err(DatasetError::BadName {
            path: first.clone(),
            format: fmt,
            pattern,
            more: match bad.len() {
                1 => String::new(),
                n => format!(", and {} more such files in {}", n - 1, dir.display()),
            },
        });
    }
    Ok(items)
}

fn read_market_like(root: &Path, format: Format) -> Result<Dataset, DatasetError> {
    let sources = SplitSources {
        train: root.join(TRAIN_DIR),
        query: root.join(QUERY_DIR),
        gallery: root.join(GALLERY_DIR),
    };
    if ![&sources.train, &sources.query, &sources.gallery]
        .iter()
        .any(|d| d.is_dir())
    {
        return Err(DatasetError::Missing {
            path: root.to_path_buf(),
            what: "every split folder (bounding_box_train/, bounding_box_test/, query/)",
            format: format.title(),
        });
    }
    let ds = Dataset {
        root: root.to_path_buf(),
        format,
        train: read_market_dir(&sources.train, format)?,
        query: read_market_dir(&sources.query, format)?,
        gallery: read_market_dir(&sources.gallery, format)?,
        sources,
        info: None,
    };
    if ds.train.is_empty() && ds.query.is_empty() && ds.gallery.is_empty() {
        return Err(DatasetError::Empty {
            path: root.to_path_buf(),
            format: format.title(),
            dirs: format!("{TRAIN_DIR}/, {QUERY_DIR}/, {GALLERY_DIR}/"),
        });
    }
    Ok(ds)
}

/// MSMT17: list files `list_{train,query,gallery}.txt` with `relative/path label` lines; train
/// images under `train/` (V1) or `mask_train_v2/` (V2), query and gallery under `test/` or
/// `mask_test_v2/`. The validation list is not read (published results train without it).
fn read_msmt17(root: &Path) -> Result<Dataset, DatasetError> {
    let pick = |names: &[&str]| names.iter().map(|n| root.join(n)).find(|p| p.is_dir());
    let train_dir = pick(&["train", "mask_train_v2", "mask_train_V2"]);
    let test_dir = pick(&["test", "mask_test_v2", "mask_test_V2"]);
    let sources = SplitSources {
        train: root.join("list_train.txt"),
        query: root.join("list_query.txt"),
        gallery: root.join("list_gallery.txt"),
    };
    let read = |list: &Path, dir: Option<&PathBuf>, what: &'static str| {
        if !list.is_file() {
            return Ok(Vec::new());
        }
        let Some(dir) = dir else {
            return Err(DatasetError::Missing {
                path: root.to_path_buf(),
                what,
                format: "MSMT17",
            });
        };
        read_msmt17_list(list, dir)
    };
    let ds = Dataset {
        root: root.to_path_buf(),
        format: Format::Msmt17,
        train: read(
            &sources.train,
            train_dir.as_ref(),
            "the train image folder (train/ or mask_train_v2/)",
        )?,
        query: read(
            &sources.query,
            test_dir.as_ref(),
            "the test image folder (test/ or mask_test_v2/)",
        )?,
        gallery: read(
            &sources.gallery,
            test_dir.as_ref(),
            "the test image folder (test/ or mask_test_v2/)",
        )?,
        sources,
        info: None,
    };
    if ds.query.is_empty() && ds.gallery.is_empty() && ds.train.is_empty() {
        return Err(DatasetError::Empty {
            path: root.to_path_buf(),
            format: "MSMT17",
            dirs: "list_train.txt, list_query.txt, list_gallery.txt".into(),
        });
    }
    Ok(ds)
}

fn read_msmt17_list(list: &Path, dir: &Path) -> Result<Vec<Item>, DatasetError> {
    let text = std::fs::read_to_string(list).map_err(io(list))?;
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: String| DatasetError::BadListLine {
            path: list.to_path_buf(),
            line: n + 1,
            why,
        };
        let mut parts = line.split_whitespace();
        let (Some(rel), Some(label), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(format!(
                "expected 'relative/path.jpg label', found {line:?}"
            )));
        };
        let label: i32 = digits(label)
            .ok_or_else(|| bad(format!("the label {label:?} is not a non-negative integer")))?;
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let camid = strip_image_ext(name)
            .and_then(|stem| stem.split('_').nth(2))
            .and_then(digits::<u32>)
            .ok_or_else(|| {
                bad(format!(
                    "the image name {name:?} does not follow the MSMT17 pattern {MSMT17_PATTERN}"
                ))
            })?;
        items.push(Item {
            path: dir.join(rel),
            pid: label + 1,
            camid,
            seq: None,
            frame: None,
        });
    }
    items.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(items)
}

/// A source video of a built dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct SourceInfo {
    pub path: String,
    pub fps: Option<f64>,
    pub frames: Option<u64>,
    pub duration_s: Option<f64>,
}

/// A (virtual) camera of a built dataset: the `cN` of the file names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct CameraInfo {
    pub id: u32,
    pub name: String,
    /// Index into `sources`.
    pub video: usize,
    /// The camera in `--cameras` syntax (time windows and image transforms).
    pub spec: String,
}

/// One pseudo-identity of a built dataset and the tracklets it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct IdentityInfo {
    pub pid: i32,
    /// "train" or "test".
    pub split: String,
    pub cameras: Vec<u32>,
    pub tracklets: Vec<TrackletInfo>,
    pub images: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TrackletInfo {
    pub camera: u32,
    pub track: u64,
    pub start_s: f64,
    pub end_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DatasetCounts {
    pub identities: usize,
    /// Identities seen by two cameras or more (only they give queries with a valid match).
    pub multi_camera_identities: usize,
    pub train: SplitCounts,
    pub query: SplitCounts,
    pub gallery: SplitCounts,
}

/// `dataset.json`: how a crosscam dataset was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DatasetInfo {
    /// Always "market1501": the layout of the folders beside this file.
    pub format: String,
    /// "pseudo" for identities made from tracklets (not checked by a person).
    pub labels: String,
    /// What the labels and cameras mean, in words.
    pub note: String,
    /// The crosscam version and command that wrote the dataset.
    pub created_by: String,
    /// Unix time of creation (seconds).
    pub created_unix: u64,
    pub sources: Vec<SourceInfo>,
    pub cameras: Vec<CameraInfo>,
    /// The builder's options, as given.
    pub parameters: serde_json::Value,
    pub counts: DatasetCounts,
    pub identities: Vec<IdentityInfo>,
}

impl DatasetInfo {
    pub fn load(path: &Path) -> Result<DatasetInfo, DatasetError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        serde_json::from_str(&text).map_err(|e| DatasetError::BadInfo {
            path: path.to_path_buf(),
            why: e.to_string(),
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), DatasetError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| DatasetError::BadInfo {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        std::fs::write(path, text + "\n").map_err(io(path))
    }
}

/// Writes images in the Market-1501 layout (the three split folders), then `dataset.json`.
pub struct MarketWriter {
    root: PathBuf,
    quality: u8,
    written: [Vec<Item>; 3],
}

impl MarketWriter {
    /// Creates the split folders under `root`. A root that already holds a dataset (split folders
    /// or `dataset.json`) is refused unless `replace`, which deletes those — and only those — first.
    pub fn create(
        root: &Path,
        replace: bool,
        jpeg_quality: u8,
    ) -> Result<MarketWriter, DatasetError> {
        let ours: Vec<PathBuf> = [TRAIN_DIR, QUERY_DIR, GALLERY_DIR, INFO_FILE]
            .iter()
            .map(|n| root.join(n))
            .collect();
        if ours.iter().any(|p| p.exists()) {
            if !replace {
                return Err(DatasetError::Exists(root.to_path_buf()));
            }
            for p in &ours {
                if p.is_dir() {
                    std::fs::remove_dir_all(p).map_err(io(p))?;
                } else if p.exists() {
                    std::fs::remove_file(p).map_err(io(p))?;
                }
            }
        }
        for s in Split::ALL {
            let d = root.join(s.market_dir());
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        Ok(MarketWriter {
            root: root.to_path_buf(),
            quality: jpeg_quality.clamp(1, 100),
            written: Default::default(),
        })
    }

    /// Writes one image as JPEG under its split's folder; returns its path.
    pub fn write(
        &mut self,
        split: Split,
        name: &MarketName,
        image: &image::RgbImage,
    ) -> Result<PathBuf, DatasetError> {
        let path = self.root.join(split.market_dir()).join(name.file_name());
        let file = std::fs::File::create(&path).map_err(io(&path))?;
        let mut w = std::io::BufWriter::new(file);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, self.quality)
            .encode_image(image)
            .map_err(|e| DatasetError::Image {
                path: path.clone(),
                why: e.to_string(),
            })?;
        std::io::Write::flush(&mut w).map_err(io(&path))?;
        self.written[split as usize].push(Item {
            path: path.clone(),
            pid: name.pid,
            camid: name.camid,
            seq: Some(name.seq),
            frame: Some(name.frame),
        });
        Ok(path)
    }

    /// What has been written to `split` so far.
    pub fn items(&self, split: Split) -> &[Item] {
        &self.written[split as usize]
    }

    /// Writes `dataset.json` with the split counts filled in from what was written.
    pub fn finish(self, mut info: DatasetInfo) -> Result<DatasetInfo, DatasetError> {
        info.format = Format::Market1501.name().to_string();
        info.counts.train = SplitCounts::of(&self.written[Split::Train as usize]);
        info.counts.query = SplitCounts::of(&self.written[Split::Query as usize]);
        info.counts.gallery = SplitCounts::of(&self.written[Split::Gallery as usize]);
        info.save(&self.root.join(INFO_FILE))?;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, names: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        for n in names {
            std::fs::write(dir.join(n), b"x").unwrap();
        }
    }

    #[test]
    fn market_names_parse_and_format() {
        let m = parse_market("0002_c1s1_000451_03.jpg").unwrap();
        assert_eq!(
            m,
            MarketName {
                pid: 2,
                camid: 1,
                seq: 1,
                frame: 451,
                index: 3
            }
        );
        assert_eq!(m.file_name(), "0002_c1s1_000451_03.jpg");
        assert_eq!(parse_market("-1_c3s2_012345_00.jpg").unwrap().pid, -1);
        let wide = MarketName {
            pid: 12345,
            camid: 12,
            seq: 3,
            frame: 1234567,
            index: 100,
        };
        assert_eq!(parse_market(&wide.file_name()).unwrap(), wide);
        for bad in [
            "0002_c1_000451_03.jpg",
            "0002_c1s1_000451.jpg",
            "x002_c1s1_000451_03.jpg",
            "0002_c1s1_000451_03.gif",
            "-2_c1s1_000451_03.jpg",
        ] {
            assert!(parse_market(bad).is_none(), "{bad}");
        }
        assert_eq!(parse_duke("0001_c2_f0046182.jpg").unwrap(), (1, 2, 46182));
        assert!(parse_duke("0001_c2s1_004618_01.jpg").is_none());
        assert_eq!(parse_cuhk03("0013_c2_4.png").unwrap(), (13, 2));
    }

    #[test]
    fn reads_market_with_junk_distractors_and_stray_files() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        touch(
            &r.join(TRAIN_DIR),
            &[
                "0002_c1s1_000451_03.jpg",
                "0002_c2s1_000551_01.jpg",
                "Thumbs.db",
            ],
        );
        touch(&r.join(QUERY_DIR), &["0005_c1s1_001051_00.jpg"]);
        touch(
            &r.join(GALLERY_DIR),
            &[
                "0005_c2s1_001101_00.jpg",
                "0000_c1s1_000000_01.jpg",
                "-1_c3s1_000100_02.jpg",
            ],
        );
        assert_eq!(detect(r).unwrap(), Format::Market1501);
        let ds = Dataset::load(r, None).unwrap();
        assert_eq!(
            (ds.train.len(), ds.query.len(), ds.gallery.len()),
            (2, 1, 3)
        );
        // sorted by path: "-1_…" < "0000_…" < "0005_…"
        let pids: Vec<i32> = ds.gallery.iter().map(|i| i.pid).collect();
        assert_eq!(pids, vec![-1, 0, 5]);
        assert_eq!(ds.query[0].label(), Label::new(5, 1));
        assert_eq!(ds.query[0].frame, Some(1051));
        assert_eq!(SplitCounts::of(&ds.gallery).ids, 1);
        assert!(!ds.pseudo_labels());
    }

    #[test]
    fn malformed_names_are_reported_with_the_expected_pattern() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        touch(&r.join(QUERY_DIR), &["0005_c1s1_001051_00.jpg"]);
        touch(
            &r.join(GALLERY_DIR),
            &["0005_c2s1_001101_00.jpg", "person7.jpg", "img 2.png"],
        );
        let e = Dataset::load(r, None).unwrap_err().to_string();
        assert!(e.contains("bounding_box_test/img 2.png"), "{e}");
        assert!(e.contains("PPPP_cCsS_FFFFFF_NN.jpg"), "{e}");
        assert!(e.contains("and 1 more such files"), "{e}");
    }

    #[test]
    fn reads_duke_and_cuhk03_np() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("duke");
        touch(&d.join(QUERY_DIR), &["0005_c2_f0046182.jpg"]);
        touch(
            &d.join(GALLERY_DIR),
            &["0005_c5_f0051000.jpg", "0007_c2_f0000100.jpg"],
        );
        assert_eq!(detect(&d).unwrap(), Format::DukeMtmcReid);
        let ds = Dataset::load(&d, None).unwrap();
        assert_eq!(ds.gallery[0].camid, 5);
        assert_eq!(ds.gallery[0].frame, Some(51000));
        assert!(ds.train.is_empty());

        let c = t.path().join("cuhk03-np");
        touch(&c.join("detected").join(QUERY_DIR), &["0001_c1_1.png"]);
        touch(
            &c.join("detected").join(GALLERY_DIR),
            &["0001_c2_2.png", "0003_c1_1.png"],
        );
        touch(
            &c.join("labeled").join(QUERY_DIR),
            &["0001_c1_1.png", "0002_c1_1.png"],
        );
        assert_eq!(
            detect(&c).unwrap(),
            Format::Cuhk03Np(Cuhk03Subset::Detected)
        );
        assert_eq!(Dataset::load(&c, None).unwrap().gallery.len(), 2);
        let lab = Format::parse("cuhk03-np-labeled").unwrap();
        assert_eq!(Dataset::load(&c, lab).unwrap().query.len(), 2);
        // plain `cuhk03-np` on the parent folder takes the detected subset
        let any = Format::parse("cuhk03-np").unwrap();
        assert_eq!(Dataset::load(&c, any).unwrap().gallery.len(), 2);
        // pointing at the subset folder itself
        assert_eq!(
            detect(&c.join("labeled")).unwrap(),
            Format::Cuhk03Np(Cuhk03Subset::Here)
        );
        // a Duke folder read as Market names its files
        let e = Dataset::load(&d, Some(Format::Market1501))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Market-1501 pattern"), "{e}");
    }

    #[test]
    fn reads_msmt17_lists_and_reports_bad_lines() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("test/0000")).unwrap();
        std::fs::create_dir_all(r.join("train")).unwrap();
        std::fs::write(
            r.join("list_query.txt"),
            "0000/0000_000_01_0303morning_0015_0.jpg 0\n",
        )
        .unwrap();
        std::fs::write(
            r.join("list_gallery.txt"),
            "0000/0000_001_14_0303noon_1002_1.jpg 0\n0001/0001_000_05_0304morning_0201_0.jpg 1\n\n",
        )
        .unwrap();
        assert_eq!(detect(r).unwrap(), Format::Msmt17);
        let ds = Dataset::load(r, None).unwrap();
        assert_eq!(
            ds.query[0].label(),
            Label::new(1, 1),
            "labels shifted by one"
        );
        assert_eq!(ds.gallery[0].camid, 14);
        assert_eq!(ds.gallery[1].pid, 2);
        assert!(
            ds.gallery[1]
                .path
                .ends_with("test/0001/0001_000_05_0304morning_0201_0.jpg")
        );
        assert!(ds.train.is_empty());

        std::fs::write(
            r.join("list_gallery.txt"),
            "0000/0000_001_14_0303noon_1002_1.jpg\n",
        )
        .unwrap();
        let e = Dataset::load(r, None).unwrap_err().to_string();
        assert!(e.contains("list_gallery.txt:1: expected"), "{e}");
        std::fs::write(r.join("list_gallery.txt"), "0000/oops.jpg 3\n").unwrap();
        let e = Dataset::load(r, None).unwrap_err().to_string();
        assert!(e.contains("MSMT17 pattern"), "{e}");
        std::fs::remove_dir_all(r.join("test")).unwrap();
        let e = Dataset::load(r, None).unwrap_err().to_string();
        assert!(e.contains("test/ or mask_test_v2/"), "{e}");
    }

    #[test]
    fn unrecognised_folders_list_what_they_hold() {
        let t = tempfile::tempdir().unwrap();
        touch(t.path(), &["a.jpg"]);
        std::fs::create_dir(t.path().join("images")).unwrap();
        let e = Dataset::load(t.path(), None).unwrap_err().to_string();
        assert!(e.contains("not a re-id dataset folder"), "{e}");
        assert!(e.contains("Found: a.jpg, images/"), "{e}");
        assert!(
            Format::parse("viper")
                .unwrap_err()
                .to_string()
                .contains("market1501")
        );
    }

    #[test]
    fn writer_round_trips_through_the_reader() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("out");
        let img = image::RgbImage::from_pixel(8, 16, image::Rgb([200, 30, 40]));
        let mut w = MarketWriter::create(&r, false, 90).unwrap();
        let n = |pid, camid, frame| MarketName {
            pid,
            camid,
            seq: 1,
            frame,
            index: 0,
        };
        w.write(Split::Train, &n(1, 1, 10), &img).unwrap();
        w.write(Split::Query, &n(2, 1, 20), &img).unwrap();
        w.write(Split::Gallery, &n(2, 2, 30), &img).unwrap();
        w.write(Split::Gallery, &n(3, 2, 30), &img).unwrap();
        let info = DatasetInfo {
            labels: "pseudo".into(),
            ..Default::default()
        };
        let info = w.finish(info).unwrap();
        assert_eq!(info.counts.gallery.images, 2);
        assert_eq!(info.counts.gallery.ids, 2);
        let ds = Dataset::load(&r, None).unwrap();
        assert_eq!(ds.format, Format::Market1501);
        assert!(ds.pseudo_labels());
        assert_eq!(ds.gallery[1].label(), Label::new(3, 2));
        let back = image::open(&ds.query[0].path).unwrap().to_rgb8();
        assert_eq!(back.dimensions(), (8, 16));
        // an existing dataset is not overwritten by accident
        assert!(matches!(
            MarketWriter::create(&r, false, 90),
            Err(DatasetError::Exists(_))
        ));
        std::fs::write(r.join("notes.txt"), "keep me").unwrap();
        let w = MarketWriter::create(&r, true, 90).unwrap();
        assert!(w.items(Split::Train).is_empty());
        assert!(
            r.join("notes.txt").exists(),
            "only the dataset's own files are replaced"
        );
        assert_eq!(std::fs::read_dir(r.join(TRAIN_DIR)).unwrap().count(), 0);
    }
}
