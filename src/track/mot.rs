//! MOTChallenge text formats, so standard tools can score crosscam's output:
//! detections `frame,-1,x,y,w,h,score,-1,-1,-1` and tracks `frame,id,x,y,w,h,score,-1,-1,-1`,
//! frames numbered from 1, boxes as top-left x, y, width, height in pixels.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use super::Detection;
use crate::frame::BBox;

/// One line of a MOTChallenge file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotRow {
    pub frame: u64,
    pub id: i64,
    pub bbox: BBox,
    pub score: f32,
}

impl MotRow {
    pub fn to_line(&self) -> String {
        format!(
            "{},{},{:.2},{:.2},{:.2},{:.2},{:.4},-1,-1,-1",
            self.frame,
            self.id,
            self.bbox.x1,
            self.bbox.y1,
            self.bbox.width(),
            self.bbox.height(),
            self.score
        )
    }
}

/// Parses a MOTChallenge file; errors name the file and line.
pub fn read(path: &Path) -> anyhow::Result<Vec<MotRow>> {
    let f = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let mut rows = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let p: Vec<&str> = t.split(',').map(str::trim).collect();
        let bad = |what: &str| {
            anyhow::anyhow!(
                "{}:{}: {what} in {t:?}; expected frame,id,x,y,w,h,score,…",
                path.display(),
                n + 1
            )
        };
        if p.len() < 6 {
            return Err(bad("too few fields"));
        }
        let num = |i: usize| {
            p[i].parse::<f64>()
                .map_err(|_| bad(&format!("field {} is not a number", i + 1)))
        };
        let frame = num(0)?;
        if frame < 1.0 {
            return Err(bad("frames are numbered from 1"));
        }
        let (x, y, w, h) = (
            num(2)? as f32,
            num(3)? as f32,
            num(4)? as f32,
            num(5)? as f32,
        );
        rows.push(MotRow {
            frame: frame as u64,
            id: num(1)? as i64,
            bbox: BBox::from_xywh(x, y, w, h),
            score: if p.len() > 6 { num(6)? as f32 } else { 1.0 },
        });
    }
    Ok(rows)
}

/// Detections grouped by frame (1-based), every frame from 1 to the last one present.
pub fn detections_by_frame(rows: &[MotRow]) -> BTreeMap<u64, Vec<Detection>> {
    let mut m: BTreeMap<u64, Vec<Detection>> = BTreeMap::new();
    let last = rows.iter().map(|r| r.frame).max().unwrap_or(0);
    for f in 1..=last {
        m.insert(f, Vec::new());
    }
    for r in rows {
        m.entry(r.frame).or_default().push(Detection {
            bbox: r.bbox,
            score: r.score,
        });
    }
    m
}

pub fn write(path: &Path, rows: &[MotRow]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?,
    );
    for r in rows {
        writeln!(out, "{}", r.to_line())?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("det.txt");
        let rows = vec![
            MotRow {
                frame: 1,
                id: -1,
                bbox: BBox::from_xywh(10.0, 20.0, 30.0, 60.0),
                score: 0.9,
            },
            MotRow {
                frame: 3,
                id: -1,
                bbox: BBox::from_xywh(1.5, 2.0, 3.0, 4.0),
                score: 0.25,
            },
        ];
        write(&p, &rows).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.starts_with("1,-1,10.00,20.00,30.00,60.00,0.9000,-1,-1,-1\n"),
            "{text}"
        );
        assert_eq!(read(&p).unwrap(), rows);
        let by = detections_by_frame(&rows);
        assert_eq!(by.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        std::fs::write(&p, "1,-1,1,2,3,4,0.5\n2,-1,x,2,3,4,0.5\n").unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("det.txt:2") && e.contains("field 3"), "{e}");
    }
}
