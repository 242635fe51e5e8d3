//! Pictures of what the server saw: the identity timeline (one row per identity, one bar per
//! sighting, coloured by camera) as SVG, from the store. `crosscam timeline` writes it.

use std::collections::BTreeMap;

use crate::plot::{camera_colour, esc};
use crate::store::{Decision, SightingRow};

/// Options for the timeline.
#[derive(Debug, Clone)]
pub struct TimelineOptions {
    /// Only identities seen by at least this many cameras.
    pub min_cameras: usize,
    /// At most this many identities (the earliest first).
    pub max_rows: usize,
    /// The camera ids the site knows: each camera's colour is its place in this list
    /// ([`camera_colour`], the same in the web UI).
    pub cameras: Vec<String>,
    /// The time axis shows wall-clock times at this offset from UTC (minutes; the web UI sends
    /// the browser's).
    pub utc_offset_min: i32,
    /// Camera names by id, for the legend and tooltips (the id when missing).
    pub names: BTreeMap<String, String>,
}

impl Default for TimelineOptions {
    fn default() -> Self {
        TimelineOptions {
            min_cameras: 1,
            max_rows: 60,
            cameras: Vec::new(),
            utc_offset_min: 0,
            names: BTreeMap::new(),
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

/// Wall-clock ticks for `t0_ms..=t1_ms`: (ms since the epoch, label) at a round step, about
/// `target` of them, labelled at `utc_offset_min`.
pub fn time_ticks(t0_ms: i64, t1_ms: i64, utc_offset_min: i32, target: i64) -> Vec<(i64, String)> {
    const STEPS: [i64; 18] = [
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200,
        86_400,
    ];
    let span = ((t1_ms - t0_ms) / 1000).max(1);
    let step = STEPS
        .iter()
        .copied()
        .find(|s| span / s <= target.max(1))
        .unwrap_or(86_400);
    let off = i64::from(utc_offset_min) * 60;
    let first = (t0_ms / 1000 + off).div_euclid(step) * step;
    let mut out = Vec::new();
    let mut t = first;
    while t - off <= t1_ms / 1000 {
        let ms = (t - off) * 1000;
        if ms >= t0_ms {
            let d = t.rem_euclid(86_400);
            let label = if step >= 86_400 {
                let (_, m, day) = civil(t.div_euclid(86_400));
                format!("{m:02}-{day:02}")
            } else if step >= 60 {
                format!("{:02}:{:02}", d / 3600, (d / 60) % 60)
            } else {
                format!("{:02}:{:02}:{:02}", d / 3600, (d / 60) % 60, d % 60)
            };
            out.push((ms, label));
        }
        t += step;
    }
    out
}

/// `UTC`, `UTC+01:00`, `UTC-05:30`.
pub fn utc_label(offset_min: i32) -> String {
    if offset_min == 0 {
        return "UTC".into();
    }
    let sign = if offset_min < 0 { '-' } else { '+' };
    let m = offset_min.unsigned_abs();
    format!("UTC{sign}{:02}:{:02}", m / 60, m % 60)
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
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
    let known: Vec<String> = if opts.cameras.is_empty() {
        cameras.iter().map(|c| c.to_string()).collect()
    } else {
        opts.cameras.clone()
    };
    let colour = |cam: &str| camera_colour(cam, &known);
    let name = |cam: &str| {
        opts.names
            .get(cam)
            .map(String::as_str)
            .unwrap_or(cam)
            .to_string()
    };
    let (left, top, row_h, width) = (70.0, 40.0, 14.0, 900.0);
    let plot_w = width - left - 20.0;
    let height = top + rows.len().max(1) as f64 * row_h + 60.0;
    let x = |ms: i64| left + (ms - t0) as f64 / 1000.0 / secs * plot_w;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"20\" font-size=\"14\">{}</text>\n",
        esc(title)
    );
    for (ms, label) in time_ticks(t0, t1, opts.utc_offset_min, 7) {
        let tx = x(ms);
        let bottom = top + rows.len() as f64 * row_h;
        svg.push_str(&format!(
            "<line x1=\"{tx:.1}\" y1=\"{top}\" x2=\"{tx:.1}\" y2=\"{bottom}\" stroke=\"#ddd\"/>\n<text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>\n",
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
            let c = colour(&s.camera);
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
                esc(&name(&s.camera)),
                s.tracklet,
                s.decision,
                s.similarity.map(|v| format!(", similarity {v:.2}")).unwrap_or_default()
            ));
        }
    }
    let ly = top + rows.len() as f64 * row_h + 34.0;
    let off = i64::from(opts.utc_offset_min) * 60;
    let (y, m, d) = civil((t0 / 1000 + off).div_euclid(86_400));
    svg.push_str(&format!(
        "<text x=\"{left}\" y=\"{ly:.1}\">{y:04}-{m:02}-{d:02}, {}</text>\n",
        utc_label(opts.utc_offset_min)
    ));
    for (k, cam) in cameras.iter().enumerate() {
        let lx = left + 150.0 + k as f64 * 110.0;
        svg.push_str(&format!(
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"10\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{ly:.1}\">{}</text>\n",
            ly - 9.0,
            colour(cam),
            lx + 16.0,
            esc(&name(cam))
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
                ..TimelineOptions::default()
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
                ..TimelineOptions::default()
            },
            "t",
        );
        assert!(
            first.contains("id 1") && !first.contains("id 2"),
            "max_rows keeps the earliest"
        );
    }

    #[test]
    fn colours_follow_the_site_camera_list_and_the_axis_shows_wall_clock_times() {
        // 2026-12-03 10:00:00 UTC
        let t = 1_796_292_000_000;
        let rows = [
            s(1, "b", t, t + 40_000, Decision::New),
            s(2, "c", t + 50_000, t + 90_000, Decision::Linked),
        ];
        let opts = TimelineOptions {
            cameras: ["a", "b", "c"].map(String::from).into(),
            utc_offset_min: 60,
            names: [("b".to_string(), "Back door".to_string())].into(),
            ..TimelineOptions::default()
        };
        let svg = timeline_svg(&rows, &opts, "t");
        // b and c are the 2nd and 3rd of the site's cameras, whatever this chart shows
        assert!(
            svg.contains(&format!("fill=\"{}\"", crate::plot::PALETTE[1])),
            "{svg}"
        );
        assert!(
            svg.contains(&format!("fill=\"{}\"", crate::plot::PALETTE[2])),
            "{svg}"
        );
        assert!(
            !svg.contains(&format!("fill=\"{}\"", crate::plot::PALETTE[0])),
            "{svg}"
        );
        assert!(svg.contains("Back door"), "names in the legend");
        assert!(
            svg.contains(">11:00:00<") && svg.contains("2026-12-03, UTC+01:00"),
            "{svg}"
        );
        assert!(!svg.contains("seconds"));
    }

    #[test]
    fn time_ticks_are_round_wall_clock_times() {
        let t = 1_796_292_000_000 + 7_000; // 10:00:07 UTC
        let ticks = time_ticks(t, t + 95_000, 0, 7);
        let labels: Vec<&str> = ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            labels,
            [
                "10:00:15", "10:00:30", "10:00:45", "10:01:00", "10:01:15", "10:01:30"
            ]
        );
        let long = time_ticks(t, t + 3 * 3_600_000, -300, 7);
        assert_eq!(long[0].1, "05:30", "{long:?}");
        assert_eq!(utc_label(-330), "UTC-05:30");
    }
}
