//! An edge's disk buffer: messages the broker has not taken yet, past what the edge keeps in
//! memory (`cluster.buffer_max`), in order, in segment files `DATA/cluster-spool/<n>.seg` of
//! length-prefixed records. The oldest messages are on disk, the newest in memory; the disk is
//! published first. Over `cluster.buffer_disk_mb` the oldest segment goes (its messages are
//! counted as dropped). A stopping edge writes what the broker never took here, and the next
//! start delivers it (the messages keep their ids, so nothing is stored twice).
//!
//! Record: `u32 subject length, subject, u32 id length (u32::MAX: none), id, u32 payload length,
//! payload, u8 flags` (little endian; flags: 1 = the tracklet ended, 2 = it had a descriptor).
//! A record that cannot be read (a crash in the middle of a write) ends its segment.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A segment is closed at this size and a new one started.
const SEGMENT_BYTES: u64 = 4 << 20;
/// Bounds of a record's parts (a damaged length never makes a huge allocation).
const MAX_SUBJECT: u32 = 1024;
const MAX_PAYLOAD: u32 = 16 << 20;

/// One message waiting for the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub subject: String,
    pub id: Option<String>,
    pub payload: bytes::Bytes,
    pub ended: bool,
    pub described: bool,
}

struct Segment {
    n: u64,
    path: PathBuf,
    bytes: u64,
    records: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segments: VecDeque<Segment>,
    /// The newest segment, open for appending.
    writer: Option<File>,
    /// Read position in the oldest segment: byte offset and records before it.
    read_off: u64,
    read_records: u64,
    /// Byte offsets after each record of the last `peek`.
    peeked: Vec<u64>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:012}.seg"))
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Reads one record; `Ok(None)` at the end of the segment (or at a damaged record).
fn read_record(r: &mut impl Read) -> std::io::Result<Option<(Record, u64)>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let slen = match read_u32(r) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    let rec = (|| {
        if slen > MAX_SUBJECT {
            return Err(bad("subject length"));
        }
        let mut subject = vec![0u8; slen as usize];
        r.read_exact(&mut subject)?;
        let ilen = read_u32(r)?;
        let id = if ilen == u32::MAX {
            None
        } else {
            if ilen > MAX_SUBJECT {
                return Err(bad("id length"));
            }
            let mut id = vec![0u8; ilen as usize];
            r.read_exact(&mut id)?;
            Some(String::from_utf8(id).map_err(|_| bad("id"))?)
        };
        let plen = read_u32(r)?;
        if plen > MAX_PAYLOAD {
            return Err(bad("payload length"));
        }
        let mut payload = vec![0u8; plen as usize];
        r.read_exact(&mut payload)?;
        let mut flags = [0u8; 1];
        r.read_exact(&mut flags)?;
        let size =
            4 + slen as u64 + 4 + id.as_ref().map_or(0, |i| i.len() as u64) + 4 + plen as u64 + 1;
        Ok((
            Record {
                subject: String::from_utf8(subject).map_err(|_| bad("subject"))?,
                id,
                payload: payload.into(),
                ended: flags[0] & 1 != 0,
                described: flags[0] & 2 != 0,
            },
            size,
        ))
    })();
    match rec {
        Ok(r) => Ok(Some(r)),
        // a record cut short by a crash, or damaged: the segment ends here
        Err(e) => {
            tracing::warn!(error = %e, "edge: a damaged record in the disk buffer; the rest of its segment is skipped");
            Ok(None)
        }
    }
}

fn encode(r: &Record) -> Vec<u8> {
    let mut b = Vec::with_capacity(13 + r.subject.len() + r.payload.len() + 64);
    b.extend_from_slice(&(r.subject.len() as u32).to_le_bytes());
    b.extend_from_slice(r.subject.as_bytes());
    match &r.id {
        Some(id) => {
            b.extend_from_slice(&(id.len() as u32).to_le_bytes());
            b.extend_from_slice(id.as_bytes());
        }
        None => b.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    b.extend_from_slice(&(r.payload.len() as u32).to_le_bytes());
    b.extend_from_slice(&r.payload);
    b.push(u8::from(r.ended) | (u8::from(r.described) << 1));
    b
}

impl Spool {
    /// Opens (making it if needed) the buffer in `dir`, with what an earlier run left there.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        crate::store::private::private_dir(dir)?;
        let mut ns: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse::<u64>()
                    .ok()
            })
            .collect();
        ns.sort_unstable();
        let mut segments = VecDeque::new();
        for n in ns {
            let path = segment_path(dir, n);
            let mut r = BufReader::new(File::open(&path)?);
            let (mut records, mut bytes) = (0, 0);
            while let Some((_, size)) = read_record(&mut r)? {
                records += 1;
                bytes += size;
            }
            if records == 0 {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            segments.push_back(Segment {
                n,
                path,
                bytes,
                records,
            });
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes: max_bytes.max(SEGMENT_BYTES),
            segments,
            writer: None,
            read_off: 0,
            read_records: 0,
            peeked: Vec::new(),
        })
    }

    /// Messages waiting on disk.
    pub fn len(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum::<u64>() - self.read_records
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Appends a message (the newest on disk); returns how many messages the bound dropped
    /// (oldest first, whole segments).
    pub fn push(&mut self, r: &Record) -> std::io::Result<u64> {
        let data = encode(r);
        let roll = self
            .segments
            .back()
            .is_none_or(|s| s.bytes + data.len() as u64 > SEGMENT_BYTES)
            || self.writer.is_none();
        if roll {
            let n = self.segments.back().map_or(0, |s| s.n + 1);
            let path = segment_path(&self.dir, n);
            // observations hold pictures of people: readable by the daemon's user only
            self.writer = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(crate::store::private::FILE_MODE)
                    .open(&path)?,
            );
            self.segments.push_back(Segment {
                n,
                path,
                bytes: 0,
                records: 0,
            });
        }
        let w = self.writer.as_mut().expect("a segment open for writing");
        w.write_all(&data)?;
        let s = self.segments.back_mut().expect("a segment");
        s.bytes += data.len() as u64;
        s.records += 1;
        let mut dropped = 0;
        while self.bytes() > self.max_bytes && self.segments.len() > 1 {
            dropped += self.drop_oldest();
        }
        Ok(dropped)
    }

    /// Removes the oldest segment; returns the messages it still held.
    fn drop_oldest(&mut self) -> u64 {
        let Some(s) = self.segments.pop_front() else {
            return 0;
        };
        let _ = std::fs::remove_file(&s.path);
        let left = s.records - self.read_records;
        self.read_off = 0;
        self.read_records = 0;
        self.peeked.clear();
        if self.segments.is_empty() {
            self.writer = None;
        }
        left
    }

    /// The oldest waiting messages, at most `n`, from one segment.
    pub fn peek(&mut self, n: usize) -> std::io::Result<Vec<Record>> {
        self.peeked.clear();
        let Some(s) = self.segments.front() else {
            return Ok(Vec::new());
        };
        if let Some(w) = &mut self.writer {
            w.flush()?;
        }
        let mut f = File::open(&s.path)?;
        f.seek(SeekFrom::Start(self.read_off))?;
        let mut r = BufReader::new(f);
        let mut out = Vec::new();
        let mut off = self.read_off;
        while out.len() < n {
            match read_record(&mut r)? {
                Some((rec, size)) => {
                    off += size;
                    self.peeked.push(off);
                    out.push(rec);
                }
                None => break,
            }
        }
        if out.is_empty() && self.read_records < s.records {
            // damaged: what is left of this segment cannot be read
            let lost = self.drop_oldest();
            tracing::warn!(
                lost,
                "edge: a segment of the disk buffer could not be read to its end"
            );
            return self.peek(n);
        }
        Ok(out)
    }

    /// The first `k` messages of the last `peek` were taken by the broker.
    pub fn consume(&mut self, k: usize) {
        if k == 0 {
            return;
        }
        let Some(&off) = self.peeked.get(k - 1) else {
            return;
        };
        self.read_off = off;
        self.read_records += k as u64;
        self.peeked.clear();
        let done = self
            .segments
            .front()
            .is_some_and(|s| self.read_records >= s.records);
        if done {
            let last = self.segments.len() == 1;
            if let Some(s) = self.segments.pop_front() {
                let _ = std::fs::remove_file(&s.path);
            }
            self.read_off = 0;
            self.read_records = 0;
            if last {
                self.writer = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize) -> Record {
        Record {
            subject: format!("crosscam.s.obs.c{}", i % 3),
            id: i.is_multiple_of(2).then(|| format!("c/run/{i}/0")),
            payload: vec![i as u8; 1000 + i].into(),
            ended: i.is_multiple_of(5),
            described: i.is_multiple_of(10),
        }
    }

    #[test]
    fn messages_come_back_in_order_across_segments_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        // about 4.6 MB: two segments
        for i in 0..4000 {
            assert_eq!(s.push(&rec(i)).unwrap(), 0);
        }
        assert_eq!(s.len(), 4000);
        assert!(s.segments.len() >= 2);
        let first = s.peek(100).unwrap();
        assert_eq!(first, (0..100).map(rec).collect::<Vec<_>>());
        s.consume(60);
        assert_eq!(s.len(), 3940);
        drop(s);
        // a new run finds the rest (from the start of the oldest segment: the consumed part is
        // delivered again, and the broker drops the copies by their ids)
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(s.len(), 4000);
        let mut got = Vec::new();
        loop {
            let b = s.peek(333).unwrap();
            if b.is_empty() {
                break;
            }
            s.consume(b.len());
            got.extend(b);
        }
        assert_eq!(got, (0..4000).map(rec).collect::<Vec<_>>());
        assert!(s.is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn over_the_bound_the_oldest_segment_goes_and_a_torn_record_ends_its_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 0).unwrap();
        let mut dropped = 0;
        for i in 0..9000 {
            dropped += s.push(&rec(i)).unwrap();
        }
        assert!(dropped > 0);
        assert_eq!(s.len() + dropped, 9000);
        assert!(s.bytes() <= SEGMENT_BYTES * 2);
        // the newest survive
        let mut last = Vec::new();
        loop {
            let b = s.peek(500).unwrap();
            if b.is_empty() {
                break;
            }
            s.consume(b.len());
            last = b;
        }
        assert_eq!(last.last(), Some(&rec(8999)));
        // a crash in the middle of a write: the torn record and what follows are skipped
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        for i in 0..10 {
            s.push(&rec(i)).unwrap();
        }
        drop(s);
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let len = std::fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 500)
            .unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(s.len(), 9);
        assert_eq!(s.peek(100).unwrap(), (0..9).map(rec).collect::<Vec<_>>());
    }
}
