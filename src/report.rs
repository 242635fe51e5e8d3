//! Pictures of what the server saw: the identity timeline (one row per identity, one bar per
//! sighting, coloured by camera) as SVG, from the store. `crosscam timeline` writes it.

use std::collections::BTreeMap;

use crate::plot::{esc, nice_ticks};
use crate::store::{Decision, SightingRow};

const PALETTE: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Options for the timeline.
#[derive(Debug, Clone, Copy)]
pub struct TimelineOptions {
    /// Only identities seen by at least this many cameras.
    pub min_cameras: usize,
    /// At most this many identities (the earliest first).
    pub max_rows: usize,
}

impl Default for TimelineOptions {
    fn default() -> Self {
        TimelineOptions {
            min_cameras: 1,
            max_rows: 60,
        }
    }
}

/// How many cameras these sightings come from.
fn camera_count(v: &[&SightingRow]) -> usize {
    let mut c: Vec<&str> = v.iter().map(|s| s.camera.as_str()).collect();
    c.sort_unstable();
    c.dedup();
    c.len()
}

/// How many rows the timeline would have without `max_rows`: identities seen by at least
/// `min_cameras` cameras.
pub fn timeline_identities(sightings: &[SightingRow], min_cameras: usize) -> usize {
    let mut by_id: BTreeMap<i64, Vec<&SightingRow>> = BTreeMap::new();
    for s in sightings {
        by_id.entry(s.identity).or_default().push(s);
    }
    by_id
        .values()
        .filter(|v| camera_count(v) >= min_cameras)
        .count()
}

/// The identity timeline as an SVG document (at most `max_rows` rows: count what was left out
/// with [`timeline_identities`]).
pub fn timeline_svg(sightings: &[SightingRow], opts: &TimelineOptions, title: &str) -> String {
    let mut by_id: BTreeMap<i64, Vec<&SightingRow>> = BTreeMap::new();
    for s in sightings {
        by_id.entry(s.identity).or_default().push(s);
    }
    let mut cameras: Vec<&str> = sightings.iter().map(|s| s.camera.as_str()).collect();
    cameras.sort_unstable();
    cameras.dedup();
    let mut rows: Vec<(i64, Vec<&SightingRow>)> = by_id
        .into_iter()
        .filter(|(_, v)| camera_count(v) >= opts.min_cameras)
        .collect();
    rows.sort_by_key(|(id, v)| (v.iter().map(|s| s.start_ms).min().unwrap_or(0), *id));
    rows.truncate(opts.max_rows);
    let t0 = rows
        .iter()
        .flat_map(|(_, v)| v.iter().map(|s| s.start_ms))
        .min()
        .unwrap_or(0);
    let t1 = rows
        .iter()
        .flat_map(|(_, v)| v.iter().map(|s| s.end_ms))
        .max()
        .unwrap_or(t0 + 1000)
        .max(t0 + 1000);
    let secs = (t1 - t0) as f64 / 1000.0;
    let (left, top, row_h, width) = (70.0, 40.0, 14.0, 900.0);
    let plot_w = width - left - 20.0;
    let height = top + rows.len().max(1) as f64 * row_h + 60.0;
    let x = |ms: i64| left + (ms - t0) as f64 / 1000.0 / secs * plot_w;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"20\" font-size=\"14\">{}</text>\n",
        esc(title)
    );
    for tick in nice_ticks(0.0, secs, 8) {
        let tx = left + tick / secs * plot_w;
        let bottom = top + rows.len() as f64 * row_h;
        svg.push_str(&format!(
            "<line x1=\"{tx:.1}\" y1=\"{top}\" x2=\"{tx:.1}\" y2=\"{bottom}\" stroke=\"#ddd\"/>\n<text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{tick}</text>\n",
            bottom + 14.0
        ));
    }
    for (i, (id, v)) in rows.iter().enumerate() {
        let y = top + i as f64 * row_h;
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">id {id}</text>\n",
            left - 6.0,
            y + row_h - 4.0
        ));
        for s in v {
            let c =
                PALETTE[cameras.iter().position(|c| *c == s.camera).unwrap_or(0) % PALETTE.len()];
            let (x0, x1) = (x(s.start_ms), x(s.end_ms).max(x(s.start_ms) + 2.0));
            let opacity = if s.decision == Decision::Uncertain {
                0.4
            } else {
                0.9
            };
            svg.push_str(&format!(
                "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{c}\" fill-opacity=\"{opacity}\"><title>{} tracklet {} ({:?}{})</title></rect>\n",
                y + 2.0,
                x1 - x0,
                row_h - 4.0,
                esc(&s.camera),
                s.tracklet,
                s.decision,
                s.similarity.map(|v| format!(", similarity {v:.2}")).unwrap_or_default()
            ));
        }
    }
    let ly = top + rows.len() as f64 * row_h + 34.0;
    svg.push_str(&format!(
        "<text x=\"{left}\" y=\"{ly:.1}\">seconds</text>\n"
    ));
    for (k, cam) in cameras.iter().enumerate() {
        let lx = left + 90.0 + k as f64 * 110.0;
        svg.push_str(&format!(
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"10\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{ly:.1}\">{}</text>\n",
            ly - 9.0,
            PALETTE[k % PALETTE.len()],
            lx + 16.0,
            esc(cam)
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: i64, cam: &str, a: i64, b: i64, d: Decision) -> SightingRow {
        SightingRow {
            tracklet: a,
            camera: cam.into(),
            track_id: 1,
            start_ms: a,
            end_ms: b,
            identity: id,
            similarity: Some(0.8),
            margin: None,
            decision: d,
            model: "m".into(),
            created_ms: b,
        }
    }

    #[test]
    fn one_row_per_identity_coloured_by_camera() {
        let rows = [
            s(1, "a", 0, 4000, Decision::New),
            s(1, "b", 6000, 9000, Decision::Linked),
            s(2, "a", 1000, 2000, Decision::Uncertain),
        ];
        let svg = timeline_svg(&rows, &TimelineOptions::default(), "test");
        assert_eq!(
            svg.matches("<rect x=").count(),
            3 + 2,
            "3 bars and 2 legend swatches"
        );
        assert!(svg.contains("id 1") && svg.contains("id 2"));
        assert!(
            svg.contains("fill-opacity=\"0.4\""),
            "uncertain links are pale"
        );
        let multi = timeline_svg(
            &rows,
            &TimelineOptions {
                min_cameras: 2,
                max_rows: 10,
            },
            "t",
        );
        assert!(multi.contains("id 1") && !multi.contains("id 2"));
        assert_eq!(timeline_identities(&rows, 1), 2);
        assert_eq!(timeline_identities(&rows, 2), 1);
        assert_eq!(timeline_identities(&rows, 3), 0);
        let first = timeline_svg(
            &rows,
            &TimelineOptions {
                min_cameras: 1,
                max_rows: 1,
            },
            "t",
        );
        assert!(
            first.contains("id 1") && !first.contains("id 2"),
            "max_rows keeps the earliest"
        );
    }
}
