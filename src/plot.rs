//! Small dependency-free SVG charts: line and scatter series on linear axes, with ticks, grid,
//! labels and a legend — enough for pruning curves (MACs / params / accuracy against kept
//! channels) and study figures, readable in any browser and embeddable in Markdown docs.
//!
//! ```
//! use crosscam::plot::{Chart, Figure, Series};
//! let macs = Chart::new("ResNet-50: MACs")
//!     .x_label("kept channels")
//!     .y_label("fraction of original")
//!     .y_range(0.0, 1.0)
//!     .series(Series::line("l1", vec![(1.0, 1.0), (0.5, 0.3)]).markers())
//!     .series(Series::scatter("random", vec![(0.7, 0.5)]));
//! let svg = Figure::new(vec![macs.clone(), macs]).columns(2).title("sweep").to_svg();
//! assert!(svg.starts_with("<svg"));
//! ```

use std::fmt::Write as _;
use std::path::Path;

/// Colours for series without an explicit one (Tableau 10: distinguishable, colour-blind aware).
pub const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// One colour per camera, the same in every picture: the server's SVG timelines, the CLI's
/// `crosscam timeline` and the web UI (ui/app.js `cameraColour` uses this formula). A camera's
/// colour is the palette colour of its place in the sorted list of known camera ids (so a site
/// with up to ten cameras never has two cameras of one colour); an id missing from that list
/// takes the colour of its FNV-1a hash.
pub fn camera_colour(camera: &str, known: &[String]) -> &'static str {
    let mut ids: Vec<&str> = known.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    let i = match ids.binary_search(&camera) {
        Ok(i) => i,
        Err(_) => fnv1a(camera) as usize,
    };
    PALETTE[i % PALETTE.len()]
}

/// FNV-1a, 32 bits, of the UTF-8 bytes.
pub fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The colour of an identity's boxes: hues a golden-ratio step apart (identities with nearby
/// numbers get far-apart hues, and no two of the first dozens share one), bright enough to see
/// on video; grey for a track not linked yet. ui/app.js `idColour` uses the same formula.
pub fn identity_colour(identity: Option<i64>) -> [u8; 3] {
    let Some(id) = identity else {
        return [160, 160, 160];
    };
    let h = (id as f64 * 0.618_033_988_749_895).rem_euclid(1.0);
    hsl_to_rgb(h, 0.85, 0.5)
}

/// HSL (each 0–1) to 8-bit RGB.
pub fn hsl_to_rgb(h: f64, s: f64, l: f64) -> [u8; 3] {
    let a = s * l.min(1.0 - l);
    let f = |n: f64| {
        let k = (n + h * 12.0) % 12.0;
        let v = l - a * (k - 3.0).min(9.0 - k).clamp(-1.0, 1.0);
        (v * 255.0).round() as u8
    };
    [f(0.0), f(8.0), f(4.0)]
}

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Line,
    Scatter,
    LineAndMarkers,
}

#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    /// (x, y); non-finite points are skipped (and break a line).
    pub points: Vec<(f64, f64)>,
    pub mark: Mark,
    /// CSS colour; `None` = the palette colour of its position in the chart.
    pub color: Option<String>,
    pub dashed: bool,
}

impl Series {
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
            mark: Mark::Line,
            color: None,
            dashed: false,
        }
    }
    pub fn scatter(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            mark: Mark::Scatter,
            ..Series::line(name, points)
        }
    }
    /// Draws markers on the line's points too.
    pub fn markers(mut self) -> Series {
        self.mark = Mark::LineAndMarkers;
        self
    }
    pub fn dashed(mut self) -> Series {
        self.dashed = true;
        self
    }
    pub fn color(mut self, c: impl Into<String>) -> Series {
        self.color = Some(c.into());
        self
    }
}

/// Where the legend box goes (inside the plot area).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Legend {
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
    Hidden,
}

/// One chart: title, axes, series.
#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
    pub width: f64,
    pub height: f64,
    pub legend: Legend,
}

const MARGIN_LEFT: f64 = 64.0;
const MARGIN_RIGHT: f64 = 20.0;
const MARGIN_TOP: f64 = 36.0;
const MARGIN_BOTTOM: f64 = 48.0;
const FONT: &str = "font-family=\"Helvetica, Arial, sans-serif\"";

impl Chart {
    pub fn new(title: impl Into<String>) -> Chart {
        Chart {
            title: title.into(),
            x_label: String::new(),
            y_label: String::new(),
            series: Vec::new(),
            x_range: None,
            y_range: None,
            width: 560.0,
            height: 380.0,
            legend: Legend::TopRight,
        }
    }
    pub fn x_label(mut self, l: impl Into<String>) -> Chart {
        self.x_label = l.into();
        self
    }
    pub fn y_label(mut self, l: impl Into<String>) -> Chart {
        self.y_label = l.into();
        self
    }
    /// Fixes the x axis (otherwise it covers the data, extended to round ticks).
    pub fn x_range(mut self, lo: f64, hi: f64) -> Chart {
        self.x_range = Some((lo, hi));
        self
    }
    pub fn y_range(mut self, lo: f64, hi: f64) -> Chart {
        self.y_range = Some((lo, hi));
        self
    }
    pub fn size(mut self, width: f64, height: f64) -> Chart {
        self.width = width;
        self.height = height;
        self
    }
    pub fn legend(mut self, l: Legend) -> Chart {
        self.legend = l;
        self
    }
    pub fn series(mut self, s: Series) -> Chart {
        self.series.push(s);
        self
    }
    pub fn push(&mut self, s: Series) {
        self.series.push(s);
    }

    /// A standalone SVG document.
    pub fn to_svg(&self) -> String {
        let mut s = svg_open(self.width, self.height);
        self.render(&mut s, "c0");
        s.push_str("</svg>\n");
        s
    }

    pub fn save_svg(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_svg())
    }

    fn data_range(&self, pick: impl Fn(&(f64, f64)) -> f64) -> (f64, f64) {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for p in self.series.iter().flat_map(|s| s.points.iter()) {
            if p.0.is_finite() && p.1.is_finite() {
                let v = pick(p);
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        if !lo.is_finite() {
            return (0.0, 1.0);
        }
        if hi - lo < 1e-12 {
            let pad = if lo.abs() > 0.0 { lo.abs() * 0.1 } else { 1.0 };
            return (lo - pad, hi + pad);
        }
        (lo, hi)
    }

    /// Draws the chart with its top-left corner at the origin; `id` keeps clip ids unique.
    fn render(&self, s: &mut String, id: &str) {
        let (w, h) = (self.width, self.height);
        let (px0, px1) = (MARGIN_LEFT, w - MARGIN_RIGHT);
        let (py0, py1) = (MARGIN_TOP, h - MARGIN_BOTTOM);
        let (xt, (x0, x1)) = axis(self.x_range, self.data_range(|p| p.0));
        let (yt, (y0, y1)) = axis(self.y_range, self.data_range(|p| p.1));
        let sx = |x: f64| px0 + (x - x0) / (x1 - x0) * (px1 - px0);
        let sy = |y: f64| py1 - (y - y0) / (y1 - y0) * (py1 - py0);
        let _ = writeln!(
            s,
            "<rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n\
             <clipPath id=\"{id}-clip\"><rect x=\"{px0}\" y=\"{py0}\" width=\"{}\" height=\"{}\"/></clipPath>",
            px1 - px0,
            py1 - py0
        );
        // grid, ticks and tick labels
        let xd = decimals(&xt);
        for &t in &xt {
            let x = sx(t);
            let _ = writeln!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{py0}\" x2=\"{x:.1}\" y2=\"{py1}\" stroke=\"#e5e5e5\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\" {FONT} fill=\"#333\">{}</text>",
                py1 + 16.0,
                fmt_tick(t, xd)
            );
        }
        let yd = decimals(&yt);
        for &t in &yt {
            let y = sy(t);
            let _ = writeln!(
                s,
                "<line x1=\"{px0}\" y1=\"{y:.1}\" x2=\"{px1}\" y2=\"{y:.1}\" stroke=\"#e5e5e5\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\" {FONT} fill=\"#333\">{}</text>",
                px0 - 6.0,
                y + 4.0,
                fmt_tick(t, yd)
            );
        }
        let _ = writeln!(
            s,
            "<rect x=\"{px0}\" y=\"{py0}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>",
            px1 - px0,
            py1 - py0
        );
        // titles
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\" {FONT}>{}</text>",
            w / 2.0,
            esc(&self.title)
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"12\" {FONT}>{}</text>",
            (px0 + px1) / 2.0,
            h - 10.0,
            esc(&self.x_label)
        );
        let (lx, ly) = (16.0, (py0 + py1) / 2.0);
        let _ = writeln!(
            s,
            "<text x=\"{lx}\" y=\"{ly:.1}\" text-anchor=\"middle\" font-size=\"12\" {FONT} transform=\"rotate(-90 {lx} {ly:.1})\">{}</text>",
            esc(&self.y_label)
        );
        // series
        let _ = writeln!(s, "<g clip-path=\"url(#{id}-clip)\">");
        for (i, ser) in self.series.iter().enumerate() {
            let color = ser
                .color
                .clone()
                .unwrap_or_else(|| PALETTE[i % PALETTE.len()].into());
            let dash = if ser.dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            };
            if ser.mark != Mark::Scatter {
                for run in ser.points.split(|p| !(p.0.is_finite() && p.1.is_finite())) {
                    if run.len() < 2 {
                        continue;
                    }
                    let pts: Vec<String> = run
                        .iter()
                        .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1)))
                        .collect();
                    let _ = writeln!(
                        s,
                        "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>",
                        pts.join(" ")
                    );
                }
            }
            if ser.mark != Mark::Line {
                for p in ser
                    .points
                    .iter()
                    .filter(|p| p.0.is_finite() && p.1.is_finite())
                {
                    let _ = writeln!(
                        s,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{color}\"/>",
                        sx(p.0),
                        sy(p.1)
                    );
                }
            }
        }
        s.push_str("</g>\n");
        self.render_legend(s, (px0, py0, px1, py1));
    }

    fn render_legend(&self, s: &mut String, (px0, py0, px1, py1): (f64, f64, f64, f64)) {
        let named: Vec<(usize, &Series)> = self
            .series
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.name.is_empty())
            .collect();
        if self.legend == Legend::Hidden || named.is_empty() {
            return;
        }
        let longest = named
            .iter()
            .map(|(_, s)| s.name.chars().count())
            .max()
            .unwrap_or(0) as f64;
        let (bw, bh) = (longest * 7.0 + 40.0, named.len() as f64 * 18.0 + 8.0);
        let (bx, by) = match self.legend {
            Legend::TopLeft => (px0 + 8.0, py0 + 8.0),
            Legend::TopRight | Legend::Hidden => (px1 - bw - 8.0, py0 + 8.0),
            Legend::BottomLeft => (px0 + 8.0, py1 - bh - 8.0),
            Legend::BottomRight => (px1 - bw - 8.0, py1 - bh - 8.0),
        };
        let _ = writeln!(
            s,
            "<rect x=\"{bx:.1}\" y=\"{by:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#999\"/>"
        );
        for (row, (i, ser)) in named.iter().enumerate() {
            let color = ser
                .color
                .clone()
                .unwrap_or_else(|| PALETTE[i % PALETTE.len()].into());
            let y = by + 14.0 + row as f64 * 18.0;
            let dash = if ser.dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            };
            if ser.mark != Mark::Scatter {
                let _ = write!(
                    s,
                    "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>",
                    bx + 6.0,
                    y - 4.0,
                    bx + 28.0,
                    y - 4.0
                );
            }
            if ser.mark != Mark::Line {
                let _ = write!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{color}\"/>",
                    bx + 17.0,
                    y - 4.0
                );
            }
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{y:.1}\" font-size=\"11\" {FONT}>{}</text>",
                bx + 34.0,
                esc(&ser.name)
            );
        }
    }
}

/// Several charts in a grid, in one SVG.
#[derive(Clone, Debug)]
pub struct Figure {
    pub charts: Vec<Chart>,
    pub columns: usize,
    pub title: Option<String>,
}

impl Figure {
    pub fn new(charts: Vec<Chart>) -> Figure {
        Figure {
            charts,
            columns: 1,
            title: None,
        }
    }
    pub fn columns(mut self, c: usize) -> Figure {
        self.columns = c.max(1);
        self
    }
    pub fn title(mut self, t: impl Into<String>) -> Figure {
        self.title = Some(t.into());
        self
    }

    pub fn to_svg(&self) -> String {
        let cols = self.columns.min(self.charts.len()).max(1);
        let rows = self.charts.len().div_ceil(cols);
        let cw = self.charts.iter().map(|c| c.width).fold(0.0, f64::max);
        let ch = self.charts.iter().map(|c| c.height).fold(0.0, f64::max);
        let top = if self.title.is_some() { 32.0 } else { 0.0 };
        let (w, h) = (cw * cols as f64, ch * rows as f64 + top);
        let mut s = svg_open(w, h);
        let _ = writeln!(
            s,
            "<rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"white\"/>"
        );
        if let Some(t) = &self.title {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"22\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\" {FONT}>{}</text>",
                w / 2.0,
                esc(t)
            );
        }
        for (i, c) in self.charts.iter().enumerate() {
            let (x, y) = ((i % cols) as f64 * cw, (i / cols) as f64 * ch + top);
            let _ = writeln!(s, "<g transform=\"translate({x},{y})\">");
            c.render(&mut s, &format!("c{i}"));
            s.push_str("</g>\n");
        }
        s.push_str("</svg>\n");
        s
    }

    pub fn save_svg(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_svg())
    }
}

fn svg_open(w: f64, h: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\n"
    )
}

/// Ticks and the axis range: a fixed range keeps its ends; a data range grows to round ticks.
fn axis(fixed: Option<(f64, f64)>, data: (f64, f64)) -> (Vec<f64>, (f64, f64)) {
    match fixed {
        Some((lo, hi)) if hi > lo => (nice_ticks(lo, hi, 6), (lo, hi)),
        _ => {
            let t = nice_ticks(data.0, data.1, 6);
            let step = if t.len() > 1 { t[1] - t[0] } else { 1.0 };
            let lo = (data.0 / step).floor() * step;
            let hi = (data.1 / step).ceil() * step;
            let hi = if hi - lo < 1e-12 { lo + step } else { hi };
            (nice_ticks(lo, hi, 6), (lo, hi))
        }
    }
}

/// Round tick positions (1, 2 or 5 × 10^k apart) covering [lo, hi], about `target` of them.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step - 1e-9).ceil() * step;
    let mut t = Vec::new();
    let mut k = 0;
    loop {
        let v = first + k as f64 * step;
        if v > hi + step * 1e-9 {
            break;
        }
        // snap -0.0 and float noise
        t.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        k += 1;
    }
    t
}

fn decimals(ticks: &[f64]) -> usize {
    if ticks.len() < 2 {
        return 2;
    }
    let step = (ticks[1] - ticks[0]).abs();
    (-(step.log10().floor())).max(0.0) as usize
}

fn fmt_tick(v: f64, decimals: usize) -> String {
    if v.abs() >= 1e6 || (v != 0.0 && v.abs() < 1e-4) {
        format!("{v:.1e}")
    } else {
        format!("{v:.decimals$}")
    }
}

/// Escapes text for SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cameras_have_one_colour_each_and_identities_spread_hues() {
        let known: Vec<String> = ["plaza", "entrance", "dock"].map(String::from).into();
        // sorted: dock, entrance, plaza
        assert_eq!(camera_colour("dock", &known), PALETTE[0]);
        assert_eq!(camera_colour("entrance", &known), PALETTE[1]);
        assert_eq!(camera_colour("plaza", &known), PALETTE[2]);
        // not in the list: by hash, the same every time (ui/app.js computes the same)
        assert_eq!(fnv1a(""), 0x811c_9dc5);
        assert_eq!(fnv1a("a"), 0xe40c_292c);
        assert_eq!(
            camera_colour("lobby", &known),
            PALETTE[fnv1a("lobby") as usize % PALETTE.len()]
        );
        assert_eq!(hsl_to_rgb(0.0, 1.0, 0.5), [255, 0, 0]);
        assert_eq!(hsl_to_rgb(1.0 / 3.0, 1.0, 0.5), [0, 255, 0]);
        assert_eq!(identity_colour(None), [160, 160, 160]);
        // tests/browser/ui.mjs checks that the web UI draws these same colours
        assert_eq!(identity_colour(Some(1)), [19, 82, 236]);
        assert_eq!(identity_colour(Some(2)), [146, 236, 19]);
        // the old scheme (id % 8) gave 1 and 9 one colour
        let c: Vec<[u8; 3]> = (1..=16).map(|i| identity_colour(Some(i))).collect();
        for i in 0..c.len() {
            for j in i + 1..c.len() {
                assert_ne!(c[i], c[j], "identities {} and {}", i + 1, j + 1);
            }
        }
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            nice_ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        let t = nice_ticks(0.13, 0.87, 6);
        assert!(
            t.first().unwrap() >= &0.13 && t.last().unwrap() <= &0.87,
            "{t:?}"
        );
        assert_eq!(
            nice_ticks(0.0, 4000.0, 4),
            vec![0.0, 1000.0, 2000.0, 3000.0, 4000.0]
        );
        assert_eq!(decimals(&[0.0, 0.2]), 1);
        assert_eq!(fmt_tick(0.6000000000000001, 1), "0.6");
    }

    #[test]
    fn chart_draws_every_series_with_legend_and_escaped_text() {
        let svg = Chart::new("MACs <vs> kept")
            .x_label("kept fraction")
            .y_label("MACs")
            .series(Series::line("l1 & l2", vec![(0.0, 0.0), (0.5, 0.3), (1.0, 1.0)]).markers())
            .series(Series::scatter("random", vec![(0.2, 0.1), (f64::NAN, 1.0)]))
            .series(Series::line("params", vec![(0.0, 0.1), (1.0, 0.9)]).dashed())
            .to_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        // 3 markers for the first series + 1 valid scatter point + 2 legend markers
        assert_eq!(svg.matches("<circle").count(), 6);
        assert!(svg.contains("MACs &lt;vs&gt; kept") && svg.contains("l1 &amp; l2"));
        assert!(svg.contains("stroke-dasharray"));
        assert_eq!(svg.matches('<').count(), svg.matches('>').count());
    }

    #[test]
    fn figure_places_charts_in_a_grid() {
        let c = Chart::new("a")
            .size(200.0, 100.0)
            .series(Series::line("x", vec![(0.0, 1.0), (1.0, 2.0)]));
        let svg = Figure::new(vec![c.clone(), c.clone(), c])
            .columns(2)
            .title("fig")
            .to_svg();
        assert!(
            svg.contains("width=\"400\" height=\"232\""),
            "{}",
            &svg[..120]
        );
        assert!(svg.contains("translate(200,32)") && svg.contains("translate(0,132)"));
        assert!(svg.contains("id=\"c2-clip\""));
    }
}
