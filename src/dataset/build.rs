//! From tracklets to a re-id dataset in the Market-1501 layout.
//!
//! 1. **Filter** each camera's tracklets ([`super::filter`]).
//! 2. **Link** tracklets of different virtual cameras of the same video that show the same person:
//!    seen at the same moments with overlapping boxes (cameras whose windows overlap), or one
//!    ending where the other starts a moment later (consecutive windows). Boxes are compared in
//!    source-frame pixels (each camera's `scale` undone). A link is refused when it would put two
//!    tracklets of one camera that are alive at the same time into one identity (they are two
//!    people). Each linked group is one **pseudo-identity**.
//! 3. **Sample** at most `max_crops_per_camera` crops per identity and camera, evenly over time.
//! 4. **Split** identities into disjoint train and test sets (seeded). Only identities seen by two
//!    cameras or more can give queries with a valid match, so they are split on their own and the
//!    single-camera ones apart; single-camera test identities go to the gallery as extra negatives.
//! 5. For each multi-camera test identity and each of its cameras, pick `queries_per_camera` query
//!    crops — those farthest in time from the identity's crops in other cameras — and drop gallery
//!    crops of other cameras closer than `query_gap` to a query (the same moment seen through
//!    another transform would be a trivial match). A query left without a match is dropped.
//! 6. **Write** `bounding_box_train/`, `query/`, `bounding_box_test/` and `dataset.json`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::cameras::VirtualCamera;
use super::filter::{FilterOptions, FilterReport, filter_tracklets};
use super::rng::SplitMix64;
use crate::eval::dataset::{
    CameraInfo, DatasetCounts, DatasetError, DatasetInfo, IdentityInfo, MarketName, MarketWriter,
    SourceInfo, Split, TrackletInfo,
};
use crate::frame::BBox;
use crate::progress::Progress;
use crate::track::{Crop, Tracklet};

/// The tracklets one virtual camera produced.
#[derive(Debug, Clone)]
pub struct CameraTracklets {
    pub camera: VirtualCamera,
    /// Size of the frames the tracker saw (after the camera's `scale`), for the edge test.
    pub frame_size: (u32, u32),
    /// Boxes and crops in those frames' pixels; `pts` = time in the source video.
    pub tracklets: Vec<Tracklet>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkOptions {
    /// Smallest IoU (source-frame pixels) for two tracklets to be the same person.
    pub iou: f64,
    /// Longest time between one tracklet's end and another's start for them to be linked.
    pub max_gap_s: f64,
    /// Boxes of two cameras at most this far apart in time count as the same moment.
    pub sync_tolerance_s: f64,
    /// Moments two simultaneous tracklets must share to be compared.
    pub min_common: usize,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            iou: 0.5,
            max_gap_s: 0.5,
            sync_tolerance_s: 0.05,
            min_common: 3,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SplitOptions {
    /// Share of identities in the test set (query + gallery).
    pub test_fraction: f64,
    /// Crops kept per identity and camera (spread evenly over time).
    pub max_crops_per_camera: usize,
    /// Query crops per test identity and camera.
    pub queries_per_camera: usize,
    /// Gallery crops of another camera closer in time than this to a query are dropped.
    pub query_gap_s: f64,
    pub seed: u64,
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions {
            test_fraction: 0.5,
            max_crops_per_camera: 10,
            queries_per_camera: 1,
            query_gap_s: 2.0,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildOptions {
    pub filter: FilterOptions,
    pub link: LinkOptions,
    pub split: SplitOptions,
    pub jpeg_quality: u8,
    /// Replace the splits and dataset.json of an existing dataset in the output folder.
    pub replace: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            filter: FilterOptions::default(),
            link: LinkOptions::default(),
            split: SplitOptions::default(),
            jpeg_quality: 95,
            replace: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error("dataset build: {0}")]
    Invalid(String),
    #[error(
        "no tracklet passed the filter ({} in: {} overlapped, {} too short, {} with too few clean crops); \
         try a lower --min-track-len, or check that the detector finds people in this video",
        .0.tracklets_in, .0.dropped_overlapped, .0.dropped_short, .0.dropped_few_crops
    )]
    NoIdentities(FilterReport),
}

/// What the build did.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub out: PathBuf,
    pub filter: FilterReport,
    /// Cross-camera links accepted.
    pub links: usize,
    pub counts: DatasetCounts,
    /// Queries dropped because the gap rule left them no match in another camera.
    pub queries_dropped: usize,
}

/// One image the plan puts into the dataset.
#[derive(Debug, Clone)]
pub struct PlannedImage {
    pub split: Split,
    pub name: MarketName,
    pub pts: Duration,
    pub image: Arc<image::RgbImage>,
}

/// The dataset before it is written: testable without touching the disk.
#[derive(Debug, Clone)]
pub struct Plan {
    pub images: Vec<PlannedImage>,
    pub identities: Vec<IdentityInfo>,
    pub filter: FilterReport,
    pub links: usize,
    pub multi_camera_identities: usize,
    pub queries_dropped: usize,
}

/// A kept tracklet and the camera (index into the camera list) it came from.
struct Node {
    cam: usize,
    t: Tracklet,
    /// Boxes in source-frame pixels, by time.
    src: Vec<(Duration, BBox)>,
}

impl Node {
    fn start(&self) -> Duration {
        self.src.first().map(|b| b.0).unwrap_or(self.t.start)
    }
    fn end(&self) -> Duration {
        self.src.last().map(|b| b.0).unwrap_or(self.t.end)
    }
}

/// Mean IoU of the two tracklets over the moments both were seen, if they share enough.
fn simultaneous_iou(a: &Node, b: &Node, o: &LinkOptions) -> Option<f32> {
    let tol = Duration::from_secs_f64(o.sync_tolerance_s);
    let mut ious = Vec::new();
    for (t, ba) in &a.src {
        let i = b.src.partition_point(|(tb, _)| *tb + tol < *t);
        if let Some((tb, bb)) = b.src.get(i)
            && tb.abs_diff(*t) <= tol
        {
            ious.push(ba.iou(bb));
        }
    }
    if ious.len() < o.min_common.max(1) {
        return None;
    }
    Some(ious.iter().sum::<f32>() / ious.len() as f32)
}

/// IoU of `a`'s last box moved on to `b`'s first moment (constant velocity over `a`'s last
/// second) with `b`'s first box, when `b` starts shortly after `a` ends.
fn handover_iou(a: &Node, b: &Node, o: &LinkOptions) -> Option<f32> {
    let (ta, la) = *a.src.last()?;
    let (tb, fb) = *b.src.first()?;
    if tb <= ta || (tb - ta).as_secs_f64() > o.max_gap_s {
        return None;
    }
    // velocity from the box about one second earlier
    let back = ta.saturating_sub(Duration::from_secs(1));
    let i = a.src.partition_point(|(t, _)| *t < back);
    let (t0, b0) = a.src[i.min(a.src.len() - 1)];
    let dt = (ta - t0).as_secs_f32();
    let (vx, vy) = if dt > 0.0 {
        let (c0, c1) = (b0.center(), la.center());
        ((c1.0 - c0.0) / dt, (c1.1 - c0.1) / dt)
    } else {
        (0.0, 0.0)
    };
    let g = (tb - ta).as_secs_f32();
    let p = BBox::new(
        la.x1 + vx * g,
        la.y1 + vy * g,
        la.x2 + vx * g,
        la.y2 + vy * g,
    );
    Some(p.iou(&fb))
}

/// Union-find over nodes that keeps member lists (to check the cannot-link rule).
struct Groups {
    parent: Vec<usize>,
    members: Vec<Vec<usize>>,
}

impl Groups {
    fn new(n: usize) -> Groups {
        Groups {
            parent: (0..n).collect(),
            members: (0..n).map(|i| vec![i]).collect(),
        }
    }
    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }
    /// Joins the groups of `a` and `b` unless `conflict` holds for a pair across them.
    fn join(&mut self, a: usize, b: usize, conflict: impl Fn(usize, usize) -> bool) -> bool {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        if self.members[ra]
            .iter()
            .any(|&x| self.members[rb].iter().any(|&y| conflict(x, y)))
        {
            return false;
        }
        let moved = std::mem::take(&mut self.members[rb]);
        self.members[ra].extend(moved);
        self.parent[rb] = ra;
        true
    }
}

/// `k` items spread evenly over `v` (all of them when `v` has at most `k`).
fn spread<T: Clone>(v: &[T], k: usize) -> Vec<T> {
    if v.len() <= k {
        return v.to_vec();
    }
    if k == 1 {
        return vec![v[v.len() / 2].clone()];
    }
    (0..k)
        .map(|i| v[(i * (v.len() - 1) + (k - 1) / 2) / (k - 1)].clone())
        .collect()
}

/// How many of `n` go to test for a fraction `f`: rounded, and leaving both sides non-empty
/// when there are two or more.
fn test_count(n: usize, f: f64) -> usize {
    if n == 0 || f <= 0.0 {
        return 0;
    }
    if f >= 1.0 {
        return n;
    }
    let k = (n as f64 * f).round() as usize;
    if n >= 2 { k.clamp(1, n - 1) } else { k.max(1) }
}

/// Plans the dataset: filter, link, sample, split (see the module doc). `frame_of` gives the
/// frame number written in the file names for a camera's crop.
pub fn plan(
    cameras: Vec<CameraTracklets>,
    opts: &BuildOptions,
    frame_of: &dyn Fn(&VirtualCamera, &Crop) -> u64,
) -> Result<Plan, BuildError> {
    let mut ids = BTreeSet::new();
    for c in &cameras {
        if !ids.insert(c.camera.id) {
            return Err(BuildError::Invalid(format!(
                "camera number {} is used by two cameras",
                c.camera.id
            )));
        }
    }
    // 1. filter
    let mut filter = FilterReport::default();
    let mut nodes = Vec::new();
    let mut cams = Vec::new();
    for (ci, c) in cameras.into_iter().enumerate() {
        let (kept, r) = filter_tracklets(c.tracklets, c.frame_size, &opts.filter);
        filter.add(&r);
        for t in kept {
            let mut src: Vec<(Duration, BBox)> = t
                .boxes
                .iter()
                .map(|b| (b.pts, c.camera.transform.to_source(&b.bbox)))
                .collect();
            src.sort_by_key(|b| b.0);
            nodes.push(Node { cam: ci, t, src });
        }
        cams.push(c.camera);
    }
    if nodes.is_empty() {
        return Err(BuildError::NoIdentities(filter));
    }

    // 2. link across cameras of the same video
    let mut edges: Vec<(f32, usize, usize)> = Vec::new();
    for i in 0..nodes.len() {
        for j in i + 1..nodes.len() {
            let (a, b) = (&nodes[i], &nodes[j]);
            if a.cam == b.cam || cams[a.cam].video != cams[b.cam].video {
                continue;
            }
            let score = if a.start() <= b.end() && b.start() <= a.end() {
                simultaneous_iou(a, b, &opts.link)
            } else if a.end() < b.start() {
                handover_iou(a, b, &opts.link)
            } else {
                handover_iou(b, a, &opts.link)
            };
            if let Some(s) = score.filter(|&s| s as f64 >= opts.link.iou) {
                edges.push((s, i, j));
            }
        }
    }
    edges.sort_by(|x, y| y.0.total_cmp(&x.0).then((x.1, x.2).cmp(&(y.1, y.2))));
    let mut groups = Groups::new(nodes.len());
    let conflict = |x: usize, y: usize| {
        let (a, b) = (&nodes[x], &nodes[y]);
        a.cam == b.cam && a.start() <= b.end() && b.start() <= a.end()
    };
    let mut links = 0;
    for &(_, i, j) in &edges {
        links += groups.join(i, j, conflict) as usize;
    }

    // identities in order of appearance
    let mut comps: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..nodes.len() {
        let r = groups.find(i);
        comps.entry(r).or_default().push(i);
    }
    let mut comps: Vec<Vec<usize>> = comps.into_values().collect();
    let first_key = |c: &Vec<usize>| {
        c.iter()
            .map(|&i| {
                (
                    cams[nodes[i].cam].video,
                    nodes[i].start(),
                    cams[nodes[i].cam].id,
                    nodes[i].t.id,
                )
            })
            .min()
    };
    comps.sort_by_key(first_key);

    // 3. sample crops per identity and camera
    struct Ident {
        pid: i32,
        members: Vec<usize>,
        /// camera index → sampled crops, by time
        crops: BTreeMap<usize, Vec<Crop>>,
    }
    let mut idents: Vec<Ident> = Vec::new();
    for (k, members) in comps.into_iter().enumerate() {
        let mut by_cam: BTreeMap<usize, Vec<Crop>> = BTreeMap::new();
        for &i in &members {
            by_cam
                .entry(nodes[i].cam)
                .or_default()
                .extend(nodes[i].t.crops.iter().cloned());
        }
        for v in by_cam.values_mut() {
            v.sort_by_key(|c| (c.pts, c.seq));
            *v = spread(v, opts.split.max_crops_per_camera.max(1));
        }
        idents.push(Ident {
            pid: k as i32 + 1,
            members,
            crops: by_cam,
        });
    }

    // 4. split identities
    let mut rng = SplitMix64::new(opts.split.seed);
    let (mut multi, mut single): (Vec<usize>, Vec<usize>) =
        (0..idents.len()).partition(|&k| idents[k].crops.len() >= 2);
    let multi_camera_identities = multi.len();
    rng.shuffle(&mut multi);
    rng.shuffle(&mut single);
    let mut test = vec![false; idents.len()];
    for v in [&multi, &single] {
        for &k in v.iter().take(test_count(v.len(), opts.split.test_fraction)) {
            test[k] = true;
        }
    }

    // 5. queries and gallery, and the image list
    let gap = Duration::from_secs_f64(opts.split.query_gap_s.max(0.0));
    let mut images = Vec::new();
    let mut index: HashMap<(i32, u32, u64), u32> = HashMap::new();
    let mut push = |split: Split, pid: i32, cam: &VirtualCamera, c: &Crop| {
        let frame = frame_of(cam, c);
        let n = index.entry((pid, cam.id, frame)).or_insert(0);
        images.push(PlannedImage {
            split,
            name: MarketName {
                pid,
                camid: cam.id,
                seq: cam.video as u32 + 1,
                frame,
                index: *n,
            },
            pts: c.pts,
            image: c.image.clone(),
        });
        *n += 1;
    };
    let mut queries_dropped = 0;
    let mut infos = Vec::new();
    for (k, id) in idents.iter().enumerate() {
        let n_images: usize = id.crops.values().map(Vec::len).sum();
        if !test[k] {
            for (&ci, v) in &id.crops {
                v.iter()
                    .for_each(|c| push(Split::Train, id.pid, &cams[ci], c));
            }
        } else if id.crops.len() < 2 {
            for (&ci, v) in &id.crops {
                v.iter()
                    .for_each(|c| push(Split::Gallery, id.pid, &cams[ci], c));
            }
        } else {
            // queries: per camera, the crops farthest in time from the other cameras' crops
            let mut queries: Vec<(usize, usize)> = Vec::new(); // (camera, crop index)
            for (&ci, v) in &id.crops {
                let others: Vec<Duration> = id
                    .crops
                    .iter()
                    .filter(|(c, _)| **c != ci)
                    .flat_map(|(_, o)| o.iter().map(|c| c.pts))
                    .collect();
                // then (cameras that saw the same moments) farthest from queries already chosen
                let chosen: Vec<Duration> = queries
                    .iter()
                    .map(|&(qc, qi)| id.crops[&qc][qi].pts)
                    .collect();
                let far = |set: &[Duration], t: Duration| {
                    set.iter()
                        .map(|s| s.abs_diff(t))
                        .min()
                        .unwrap_or(Duration::MAX)
                };
                let mut order: Vec<(Duration, Duration, usize)> = v
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (far(&others, c.pts), far(&chosen, c.pts), i))
                    .collect();
                order.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
                queries.extend(
                    order
                        .iter()
                        .take(opts.split.queries_per_camera.min(v.len().saturating_sub(1)))
                        .map(|&(_, _, i)| (ci, i)),
                );
            }
            let is_query = |ci: usize, i: usize| queries.contains(&(ci, i));
            let near_other_query = |ci: usize, c: &Crop| {
                queries
                    .iter()
                    .any(|&(qc, qi)| qc != ci && id.crops[&qc][qi].pts.abs_diff(c.pts) < gap)
            };
            let gallery: Vec<(usize, usize)> = id
                .crops
                .iter()
                .flat_map(|(&ci, v)| (0..v.len()).map(move |i| (ci, i)))
                .filter(|&(ci, i)| !is_query(ci, i) && !near_other_query(ci, &id.crops[&ci][i]))
                .collect();
            for &(ci, i) in &queries {
                if gallery.iter().any(|&(gc, _)| gc != ci) {
                    push(Split::Query, id.pid, &cams[ci], &id.crops[&ci][i]);
                } else {
                    queries_dropped += 1;
                }
            }
            for &(ci, i) in &gallery {
                push(Split::Gallery, id.pid, &cams[ci], &id.crops[&ci][i]);
            }
        }
        let mut tracklets: Vec<TrackletInfo> = id
            .members
            .iter()
            .map(|&i| TrackletInfo {
                camera: cams[nodes[i].cam].id,
                track: nodes[i].t.id,
                start_s: nodes[i].start().as_secs_f64(),
                end_s: nodes[i].end().as_secs_f64(),
            })
            .collect();
        tracklets.sort_by(|a, b| {
            a.start_s
                .total_cmp(&b.start_s)
                .then(a.camera.cmp(&b.camera))
        });
        infos.push(IdentityInfo {
            pid: id.pid,
            split: if test[k] { "test" } else { "train" }.into(),
            cameras: id.crops.keys().map(|&ci| cams[ci].id).collect(),
            tracklets,
            images: n_images,
        });
    }
    Ok(Plan {
        images,
        identities: infos,
        filter,
        links,
        multi_camera_identities,
        queries_dropped,
    })
}

/// The frame number of a crop for file names: from its time and the video's frame rate when
/// known (so names give the source frame even for windows that start late), else its `seq`.
pub fn frame_number(source: Option<&SourceInfo>, crop: &Crop) -> u64 {
    match source.and_then(|s| s.fps).filter(|f| *f > 0.0) {
        Some(fps) => (crop.pts.as_secs_f64() * fps).round() as u64,
        None => crop.seq,
    }
}

/// The note every built dataset carries in dataset.json.
pub const PSEUDO_LABEL_NOTE: &str = "Identities are pseudo-labels: each is one tracklet, or tracklets of different virtual \
cameras linked by position and time, never checked by a person; tracker mistakes (identity switches, one person split \
in two) become label noise. Virtual cameras made from one clip (time windows and image transforms) share its scene, \
background and viewpoint, so cross-camera results on them are a proxy for real cameras, usually an optimistic one.";

/// Builds the dataset in `out` from the tracklets of each virtual camera (the cameras' `video`
/// index into `sources`).
pub fn build_from_tracklets(
    out: &Path,
    sources: &[SourceInfo],
    cameras: Vec<CameraTracklets>,
    opts: &BuildOptions,
    quiet: bool,
) -> Result<BuildReport, BuildError> {
    for c in &cameras {
        if c.camera.video >= sources.len() {
            return Err(BuildError::Invalid(format!(
                "camera {} uses video {} but {} source(s) were given",
                c.camera.name,
                c.camera.video + 1,
                sources.len()
            )));
        }
    }
    let camera_info: Vec<CameraInfo> = cameras
        .iter()
        .map(|c| CameraInfo {
            id: c.camera.id,
            name: c.camera.name.clone(),
            video: c.camera.video,
            spec: c.camera.spec(),
        })
        .collect();
    let plan = plan(cameras, opts, &|cam, crop| {
        frame_number(sources.get(cam.video), crop)
    })?;
    let mut writer = MarketWriter::create(out, opts.replace, opts.jpeg_quality)?;
    let mut progress = Progress::new("writing crops", plan.images.len() as u64).quiet(quiet);
    for im in &plan.images {
        writer.write(im.split, &im.name, &im.image)?;
        progress.inc(1);
    }
    progress.finish();
    let info = DatasetInfo {
        labels: "pseudo".into(),
        note: PSEUDO_LABEL_NOTE.into(),
        created_by: format!("crosscam {} dataset build", env!("CARGO_PKG_VERSION")),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        sources: sources.to_vec(),
        cameras: camera_info,
        parameters: serde_json::to_value(opts).unwrap_or_default(),
        counts: DatasetCounts {
            identities: plan.identities.len(),
            multi_camera_identities: plan.multi_camera_identities,
            ..Default::default()
        },
        identities: plan.identities,
        ..Default::default()
    };
    let info = writer.finish(info)?;
    Ok(BuildReport {
        out: out.to_path_buf(),
        filter: plan.filter,
        links: plan.links,
        counts: info.counts,
        queries_dropped: plan.queries_dropped,
    })
}

/// The human-readable build report.
pub fn render(r: &BuildReport) -> String {
    let f = &r.filter;
    let c = &r.counts;
    let mut s = format!("dataset written to {} (pseudo-labels)\n", r.out.display());
    s.push_str(&format!(
        "tracklets  {} in, {} kept ({} overlapped, {} too short, {} too few clean crops)\n",
        f.tracklets_in, f.kept, f.dropped_overlapped, f.dropped_short, f.dropped_few_crops
    ));
    s.push_str(&format!(
        "identities {} ({} seen by 2+ cameras; {} cross-camera links)\n",
        c.identities, c.multi_camera_identities, r.links
    ));
    for (name, sc) in [
        ("train", &c.train),
        ("query", &c.query),
        ("gallery", &c.gallery),
    ] {
        s.push_str(&format!(
            "{name:<10} {} images, {} identities, {} cameras\n",
            sc.images, sc.ids, sc.cameras
        ));
    }
    if r.queries_dropped > 0 {
        s.push_str(&format!(
            "({} queries dropped: no match left in another camera)\n",
            r.queries_dropped
        ));
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::track::TrackedBox;

    /// A tracklet in `camera` over frames `first..end` (10 fps), box `f(frame)`, one crop per
    /// frame: a flat image whose colour encodes the id, so crops of one person look alike.
    pub(crate) fn synthetic_tracklet(
        camera: &str,
        id: u64,
        first: u64,
        end: u64,
        f: impl Fn(u64) -> BBox,
    ) -> Tracklet {
        let pts = |k: u64| Duration::from_millis(100 * k);
        let colour = [
            (id * 67 % 256) as u8,
            (id * 131 % 256) as u8,
            (id * 29 % 256) as u8,
        ];
        let img = Arc::new(image::RgbImage::from_pixel(8, 16, image::Rgb(colour)));
        Tracklet {
            camera: camera.to_string(),
            id,
            start: pts(first),
            end: pts(end.saturating_sub(1)),
            boxes: (first..end)
                .map(|k| TrackedBox {
                    seq: k,
                    pts: pts(k),
                    bbox: f(k),
                    score: 0.9,
                    wall_ms: 0,
                })
                .collect(),
            crops: (first..end)
                .map(|k| Crop {
                    seq: k,
                    pts: pts(k),
                    bbox: f(k),
                    quality: 1.0,
                    image: img.clone(),
                    jpeg: None,
                })
                .collect(),
        }
    }

    fn cam(spec: &str) -> VirtualCamera {
        super::super::cameras::parse_spec(spec, 1)
            .unwrap()
            .remove(0)
    }

    fn opts() -> BuildOptions {
        BuildOptions {
            filter: FilterOptions {
                min_len: 5,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A person walking right at `speed` px/frame in lane `y` from frame `first` to `end`.
    fn walker(y: f32, x0: f32, speed: f32, first: u64) -> impl Fn(u64) -> BBox {
        move |k| BBox::from_xywh(x0 + speed * (k - first) as f32, y, 40.0, 100.0)
    }

    #[test]
    fn spread_and_test_count() {
        assert_eq!(spread(&[1, 2, 3], 5), vec![1, 2, 3]);
        assert_eq!(spread(&(0..10).collect::<Vec<_>>(), 3), vec![0, 5, 9]);
        assert_eq!(spread(&(0..10).collect::<Vec<_>>(), 1), vec![5]);
        assert_eq!(test_count(10, 0.5), 5);
        assert_eq!(test_count(2, 0.9), 1);
        assert_eq!(test_count(1, 0.5), 1);
        assert_eq!(test_count(5, 0.0), 0);
    }

    #[test]
    fn handover_at_a_window_boundary_links_one_person() {
        // c1 sees 0-4 s, c2 (half resolution) sees 4-8 s; person 1 crosses the boundary,
        // person 2 is only in c1, person 3 only in c2
        let c1 = cam("c1=0-4s");
        let c2 = cam("c2=4-8s,scale=0.5");
        let half = |f: Box<dyn Fn(u64) -> BBox>| {
            move |k| {
                let b = f(k);
                BBox::new(b.x1 / 2.0, b.y1 / 2.0, b.x2 / 2.0, b.y2 / 2.0)
            }
        };
        let p1 = walker(100.0, 100.0, 5.0, 0);
        let cams = vec![
            CameraTracklets {
                camera: c1,
                frame_size: (768, 576),
                tracklets: vec![
                    synthetic_tracklet("c1", 1, 0, 40, walker(100.0, 100.0, 5.0, 0)),
                    synthetic_tracklet("c1", 2, 5, 30, walker(300.0, 100.0, 3.0, 5)),
                ],
            },
            CameraTracklets {
                camera: c2,
                frame_size: (384, 288),
                tracklets: vec![
                    synthetic_tracklet("c2", 1, 40, 70, half(Box::new(p1))),
                    synthetic_tracklet(
                        "c2",
                        2,
                        45,
                        60,
                        half(Box::new(walker(400.0, 50.0, 4.0, 45))),
                    ),
                ],
            },
        ];
        let p = plan(cams, &opts(), &|_, c| c.seq).unwrap();
        assert_eq!(p.links, 1);
        assert_eq!(p.identities.len(), 3);
        assert_eq!(p.multi_camera_identities, 1);
        let first = &p.identities[0];
        assert_eq!((first.pid, first.cameras.clone()), (1, vec![1, 2]));
        assert_eq!(first.tracklets.len(), 2);
        // the only multi-camera identity is in test (a test fraction of 0.5 rounds up to 1 of 1)
        assert_eq!(first.split, "test");
        let q: Vec<&PlannedImage> = p
            .images
            .iter()
            .filter(|i| i.split == Split::Query)
            .collect();
        assert_eq!(q.len(), 2, "one query per camera");
        // queries are far from the boundary: the earliest c1 crop and the latest c2 crop
        let mut qf: Vec<u64> = q.iter().map(|i| i.name.frame).collect();
        qf.sort();
        assert_eq!(qf, vec![0, 69]);
        // gallery holds the identity's other crops, in both cameras
        let g1: BTreeSet<u32> = p
            .images
            .iter()
            .filter(|i| i.split == Split::Gallery && i.name.pid == 1)
            .map(|i| i.name.camid)
            .collect();
        assert_eq!(g1, BTreeSet::from([1, 2]));
        // at most 10 crops per identity and camera
        let n1 = p.images.iter().filter(|i| i.name.pid == 1).count();
        assert_eq!(n1, 20);
    }

    #[test]
    fn simultaneous_cameras_link_and_the_query_gap_removes_twin_crops() {
        // c1 and c2 see the same 0-8 s, c2 darker: every person is in both
        let c1 = cam("c1=0-8s");
        let c2 = cam("c2=0-8s,brightness=0.6");
        let people = [
            (100.0, 0u64, 80u64),
            (250.0, 0, 60),
            (400.0, 20, 80),
            (500.0, 10, 50),
        ];
        let tracks = |name: &str| -> Vec<Tracklet> {
            people
                .iter()
                .enumerate()
                .map(|(i, &(y, a, b))| {
                    synthetic_tracklet(
                        name,
                        i as u64 + 1,
                        a,
                        b,
                        walker(y - 50.0, 50.0 + 40.0 * i as f32, 4.0, a),
                    )
                })
                .collect()
        };
        let mk = |c: VirtualCamera, name: &str| CameraTracklets {
            camera: c,
            frame_size: (768, 576),
            tracklets: tracks(name),
        };
        let mut o = opts();
        o.split.test_fraction = 0.5;
        o.split.query_gap_s = 1.0;
        let p = plan(vec![mk(c1, "c1"), mk(c2, "c2")], &o, &|_, c| c.seq).unwrap();
        assert_eq!(p.links, 4);
        assert_eq!(p.identities.len(), 4);
        assert_eq!(p.multi_camera_identities, 4);
        let test: Vec<i32> = p
            .identities
            .iter()
            .filter(|i| i.split == "test")
            .map(|i| i.pid)
            .collect();
        assert_eq!(test.len(), 2);
        for pid in test {
            let qs: Vec<&PlannedImage> = p
                .images
                .iter()
                .filter(|i| i.name.pid == pid && i.split == Split::Query)
                .collect();
            assert!(!qs.is_empty());
            for q in qs {
                // no gallery image of another camera within 1 s of the query
                for g in p
                    .images
                    .iter()
                    .filter(|i| i.name.pid == pid && i.split == Split::Gallery)
                {
                    if g.name.camid != q.name.camid {
                        assert!(g.pts.abs_diff(q.pts) >= Duration::from_secs(1));
                    }
                }
                // and at least one valid match
                assert!(p.images.iter().any(|g| g.name.pid == pid
                    && g.split == Split::Gallery
                    && g.name.camid != q.name.camid));
            }
        }
        // train and test identities are disjoint
        let train: BTreeSet<i32> = p
            .images
            .iter()
            .filter(|i| i.split == Split::Train)
            .map(|i| i.name.pid)
            .collect();
        let testset: BTreeSet<i32> = p
            .images
            .iter()
            .filter(|i| i.split != Split::Train)
            .map(|i| i.name.pid)
            .collect();
        assert!(train.is_disjoint(&testset));
        assert_eq!(train.len(), 2);
    }

    #[test]
    fn two_people_of_one_camera_are_never_merged() {
        // c1: two people close together at the same time; c2 (same time) has one box that
        // overlaps both equally: it may join one of them, never both
        let c1 = cam("c1=0-5s");
        let c2 = cam("c2=0-5s");
        let a = synthetic_tracklet("c1", 1, 0, 40, |_| {
            BBox::from_xywh(100.0, 100.0, 40.0, 100.0)
        });
        let b = synthetic_tracklet("c1", 2, 0, 40, |_| {
            BBox::from_xywh(120.0, 100.0, 40.0, 100.0)
        });
        let x = synthetic_tracklet("c2", 1, 0, 40, |_| {
            BBox::from_xywh(110.0, 100.0, 40.0, 100.0)
        });
        let cams = vec![
            CameraTracklets {
                camera: c1,
                frame_size: (768, 576),
                tracklets: vec![a, b],
            },
            CameraTracklets {
                camera: c2,
                frame_size: (768, 576),
                tracklets: vec![x],
            },
        ];
        let mut o = opts();
        o.filter.overlap_iou = 0.9; // keep the overlapping pair for this test
        let p = plan(cams, &o, &|_, c| c.seq).unwrap();
        // a–x and b–x both have IoU 0.6; taking both would merge a with b
        assert_eq!(p.links, 1);
        assert_eq!(p.identities.len(), 2);
        assert_eq!(p.identities[0].cameras, vec![1, 2]);
        assert_eq!(p.identities[1].cameras, vec![1]);
    }

    #[test]
    fn empty_input_and_duplicate_cameras_are_errors() {
        let e = plan(
            vec![CameraTracklets {
                camera: cam("c1=*"),
                frame_size: (768, 576),
                tracklets: vec![],
            }],
            &opts(),
            &|_, c| c.seq,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("no tracklet passed the filter"),
            "{e}"
        );
        let e = plan(
            vec![
                CameraTracklets {
                    camera: cam("c1=*"),
                    frame_size: (768, 576),
                    tracklets: vec![],
                },
                CameraTracklets {
                    camera: cam("c1=0-1s"),
                    frame_size: (768, 576),
                    tracklets: vec![],
                },
            ],
            &opts(),
            &|_, c| c.seq,
        )
        .unwrap_err();
        assert!(e.to_string().contains("used by two cameras"), "{e}");
    }
}
