//! Key paths (`cameras[1].url`) and where they are in the TOML text.

use toml::de::{DeTable, DeValue};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn new() -> KeyPath {
        KeyPath(Vec::new())
    }
    pub fn key(mut self, k: &str) -> KeyPath {
        self.0.push(Seg::Key(k.to_string()));
        self
    }
    pub fn index(mut self, i: usize) -> KeyPath {
        self.0.push(Seg::Index(i));
        self
    }

    pub fn from_serde_path(p: &serde_path_to_error::Path) -> KeyPath {
        use serde_path_to_error::Segment;
        KeyPath(
            p.iter()
                .filter_map(|s| match s {
                    Segment::Map { key } | Segment::Enum { variant: key } => {
                        Some(Seg::Key(key.clone()))
                    }
                    Segment::Seq { index } => Some(Seg::Index(*index)),
                    Segment::Unknown => None,
                })
                .collect(),
        )
    }

    /// The 1-based line where this key (or the deepest existing part of it) is written.
    pub fn line_in(&self, text: &str) -> Option<usize> {
        let doc = DeTable::parse(text).ok()?;
        let mut span = None;
        let mut table: Option<&DeTable> = Some(doc.get_ref());
        let mut array: Option<&toml::de::DeArray> = None;
        for seg in &self.0 {
            let value = match (seg, table, array) {
                (Seg::Key(k), Some(t), _) => {
                    let (key, v) = t.get_key_value(k.as_str())?;
                    span = Some(key.span());
                    v
                }
                (Seg::Index(i), _, Some(a)) => {
                    let v = a.get(*i)?;
                    span = Some(v.span());
                    v
                }
                _ => break,
            };
            table = None;
            array = None;
            match value.get_ref() {
                DeValue::Table(t) => table = Some(t),
                DeValue::Array(a) => array = Some(a),
                _ => {}
            }
        }
        span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
    }
}

impl std::fmt::Display for KeyPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}
