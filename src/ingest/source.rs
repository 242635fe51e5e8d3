//! Camera source URLs: which kind of source a camera is, parsed once and checked at config time.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceUrl {
    /// `rtsp://[user:pass@]host[:port]/path` (credentials are better given in the config keys)
    Rtsp(String),
    /// `file:///abs/path` — a video file.
    File(PathBuf),
    /// `test:<pattern>` — GStreamer `videotestsrc` (`smpte`, `ball`, `snow`, …) for load tests.
    Test(String),
    /// `v4l2:///dev/videoN` — a local capture device.
    V4l2(PathBuf),
}

impl SourceUrl {
    pub fn parse(url: &str) -> Result<SourceUrl, String> {
        if url.starts_with("rtsp://") || url.starts_with("rtsps://") {
            if url.len() <= "rtsp://".len() {
                return Err("expected rtsp://host/path, found an RTSP URL without a host".into());
            }
            Ok(SourceUrl::Rtsp(url.to_string()))
        } else if let Some(p) = url.strip_prefix("file://") {
            if p.is_empty() {
                return Err("expected file:///path/to/video, found no path".into());
            }
            Ok(SourceUrl::File(PathBuf::from(p)))
        } else if let Some(p) = url.strip_prefix("test:") {
            let pattern = if p.is_empty() { "smpte" } else { p };
            if !pattern
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(format!(
                    "expected a videotestsrc pattern name (e.g. test:ball), found {pattern:?}"
                ));
            }
            Ok(SourceUrl::Test(pattern.to_string()))
        } else if let Some(p) = url.strip_prefix("v4l2://") {
            Ok(SourceUrl::V4l2(PathBuf::from(if p.is_empty() {
                "/dev/video0"
            } else {
                p
            })))
        } else {
            Err(format!(
                "expected a URL starting with rtsp://, file://, test: or v4l2://, found {url:?}"
            ))
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SourceUrl::Rtsp(_) => "rtsp",
            SourceUrl::File(_) => "file",
            SourceUrl::Test(_) => "test",
            SourceUrl::V4l2(_) => "v4l2",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_and_rejects_others() {
        assert_eq!(
            SourceUrl::parse("rtsp://10.0.0.5:554/s1").unwrap().kind(),
            "rtsp"
        );
        assert_eq!(
            SourceUrl::parse("file:///x/y.mp4").unwrap(),
            SourceUrl::File("/x/y.mp4".into())
        );
        assert_eq!(
            SourceUrl::parse("test:ball").unwrap(),
            SourceUrl::Test("ball".into())
        );
        assert_eq!(
            SourceUrl::parse("v4l2://").unwrap(),
            SourceUrl::V4l2("/dev/video0".into())
        );
        let e = SourceUrl::parse("http://cam/stream").unwrap_err();
        assert!(e.contains("rtsp://"), "{e}");
    }
}
