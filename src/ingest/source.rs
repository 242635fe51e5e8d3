//! Camera source URLs: which kind of source a camera is, parsed once and checked at config time.

use std::path::{Component, Path, PathBuf};

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
        if let Some(bad) = url.chars().find(|c| c.is_control()) {
            return Err(format!(
                "a camera URL cannot contain control characters (found {bad:?})"
            ));
        }
        if (url.starts_with("rtsp") || url.starts_with("v4l2")) && url.contains(' ') {
            return Err(
                "an RTSP or V4L2 URL cannot contain spaces; percent-encode them (%20)".into(),
            );
        }
        if url.starts_with("rtsp://") || url.starts_with("rtsps://") {
            let rest = url.split_once("://").map(|(_, r)| r).unwrap_or("");
            if rest.is_empty() || rest.starts_with('/') {
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
            let device = if p.is_empty() { "/dev/video0" } else { p };
            // only capture devices: /dev/video<N>, nothing else the daemon could open or write
            let n = device.strip_prefix("/dev/video").unwrap_or("");
            if n.is_empty() || n.len() > 4 || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "expected a capture device v4l2:///dev/video<N> (e.g. v4l2:///dev/video0), found {:?}",
                    device.chars().take(80).collect::<String>()
                ));
            }
            Ok(SourceUrl::V4l2(PathBuf::from(device)))
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

/// For cameras added through the API: a `file:` camera must play a video inside one of
/// `media_dirs` (symbolic links may not lead out). A path outside gets the same answer whether
/// or not it exists, so the API cannot be used to find out which files the daemon can see.
pub fn check_media_dir(url: &str, media_dirs: &[PathBuf]) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("file://") else {
        return Ok(());
    };
    let path = Path::new(rest);
    let refuse = || {
        let dirs: Vec<String> = media_dirs.iter().map(|d| d.display().to_string()).collect();
        format!(
            "file cameras added through the API must play a video inside the media folders ([ingest] media_dirs: {}); ask an admin to put the clip there",
            if dirs.is_empty() {
                "none configured".to_string()
            } else {
                dirs.join(", ")
            }
        )
    };
    if path.is_relative()
        || path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(refuse());
    }
    let canonical_dirs: Vec<PathBuf> = media_dirs
        .iter()
        .filter_map(|d| d.canonicalize().ok())
        .collect();
    let inside = |p: &Path| {
        media_dirs
            .iter()
            .chain(&canonical_dirs)
            .any(|d| d.is_absolute() && p.starts_with(d) && p != d)
    };
    if !inside(path) {
        return Err(refuse());
    }
    match path.canonicalize() {
        Ok(real) if !canonical_dirs.iter().any(|d| real.starts_with(d)) => Err(refuse()),
        // inside (or missing inside a media folder: the camera check says so)
        _ => Ok(()),
    }
}

/// Query keys whose values are credentials (compared without case).
const SECRET_KEYS: [&str; 12] = [
    "password",
    "pass",
    "passwd",
    "pwd",
    "user",
    "username",
    "token",
    "auth",
    "secret",
    "key",
    "apikey",
    "access_token",
];

/// A URL as it may be shown or logged: the password of its user information and the values of
/// credential query keys (`password`, `pass`, `pwd`, `user`, `username`, `token`, `auth`, …)
/// replaced by `***`. Parsed, not pattern-matched: a password containing `@`, `:` or `/` is
/// hidden whole.
pub fn redact(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (url, None),
    };
    let mut out = match before_query.split_once("://") {
        // the user information ends at the last '@' before the query: a password may hold '@'
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(at) => {
                let creds = &rest[..at];
                let user = creds.split(':').next().unwrap_or("");
                // a user name with a '/' means the '@' was in the path, not after a user: hide all
                let user = if user.contains('/') { "***" } else { user };
                if creds.contains(':') || user == "***" {
                    format!("{scheme}://{user}:***@{}", &rest[at + 1..])
                } else {
                    format!("{scheme}://{user}@{}", &rest[at + 1..])
                }
            }
            None => before_query.to_string(),
        },
        None => before_query.to_string(),
    };
    if let Some(q) = query {
        out.push('?');
        let parts: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if SECRET_KEYS.iter().any(|s| s.eq_ignore_ascii_case(k)) => {
                    format!("{k}=***")
                }
                _ => kv.to_string(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    out
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

    #[test]
    fn v4l2_takes_capture_devices_only() {
        for bad in [
            "v4l2:///dev/video0  fakesrc ! filesink location=/x",
            "v4l2:///etc/passwd",
            "v4l2:///dev/sda",
            "v4l2:///dev/video0/../../etc/x",
            "v4l2:///dev/video",
        ] {
            assert!(SourceUrl::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            SourceUrl::parse("v4l2:///dev/video12").unwrap(),
            SourceUrl::V4l2("/dev/video12".into())
        );
    }

    #[test]
    fn urls_with_spaces_or_controls_are_refused() {
        for bad in [
            "rtsp://h/a b",
            "rtsp://h/a\nb",
            "file:///a\u{1b}b",
            "rtsp:///nohost",
        ] {
            assert!(SourceUrl::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn api_file_cameras_stay_in_the_media_folders() {
        let media = tempfile::tempdir().unwrap();
        let clip = media.path().join("clip.mp4");
        std::fs::write(&clip, b"x").unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.key");
        std::fs::write(&secret, b"k").unwrap();
        std::os::unix::fs::symlink(&secret, media.path().join("link.mp4")).unwrap();
        let dirs = vec![media.path().to_path_buf()];
        let url = |p: &Path| format!("file://{}", p.display());
        assert!(check_media_dir(&url(&clip), &dirs).is_ok());
        // outside: the same answer for a file that exists and one that does not
        let a = check_media_dir(&url(&secret), &dirs).unwrap_err();
        let b = check_media_dir(&url(&outside.path().join("nope")), &dirs).unwrap_err();
        assert_eq!(a, b);
        assert!(a.contains("media_dirs"), "{a}");
        for p in [
            media.path().join("link.mp4"),
            media
                .path()
                .join("../")
                .join(outside.path().file_name().unwrap())
                .join("secret.key"),
        ] {
            assert_eq!(
                check_media_dir(&url(&p), &dirs).unwrap_err(),
                a,
                "{}",
                p.display()
            );
        }
        assert!(
            check_media_dir(&url(&clip), &[])
                .unwrap_err()
                .contains("none configured")
        );
        assert!(check_media_dir("rtsp://h/s", &[]).is_ok());
    }

    #[test]
    fn redaction_parses_user_information_and_query() {
        assert_eq!(
            redact("rtsp://admin:hunter2@10.0.0.5/s1"),
            "rtsp://admin:***@10.0.0.5/s1"
        );
        assert_eq!(redact("rtsp://10.0.0.5/s1"), "rtsp://10.0.0.5/s1");
        let r = redact("rtsp://user:P@ss-At@host/stream");
        assert_eq!(r, "rtsp://user:***@host/stream");
        assert!(!r.contains("ss-At"));
        let r = redact("rtsp://host/x?user=admin&password=Secret9&channel=1&PWD=z&token=t");
        assert_eq!(
            r,
            "rtsp://host/x?user=***&password=***&channel=1&PWD=***&token=***"
        );
        assert!(!redact("rtsp://u:a/b@c@host/x").contains("a/b"));
    }
}
