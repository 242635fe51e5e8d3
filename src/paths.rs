//! Where crosscam finds its own files: the project root (models, pipelines, configs) and the
//! dependency folder `.deps/` that `make setup` fills (ONNX Runtime, test media).
//!
//! Search order for the root: `CROSSCAM_HOME`; the executable's ancestors (`target/release/crosscam`
//! sits two levels below the root; an installed `bin/crosscam` finds `share/crosscam`); the
//! source tree the binary was built from. Never the working directory or its parents: a
//! library or model file planted there must not be loaded by a daemon started from there.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn is_root(p: &Path) -> bool {
    p.join("models/manifest.toml").is_file()
}

pub fn project_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(h) = std::env::var_os("CROSSCAM_HOME") {
            return PathBuf::from(h);
        }
        let exe = std::env::current_exe().ok();
        for dir in exe.iter().flat_map(|e| e.ancestors().skip(1)) {
            for c in [dir.to_path_buf(), dir.join("share/crosscam")] {
                if is_root(&c) {
                    return c;
                }
            }
        }
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    })
    .clone()
}

/// The dependency folder (`CROSSCAM_DEPS_DIR`, else `<root>/.deps`).
pub fn deps_dir() -> PathBuf {
    std::env::var_os("CROSSCAM_DEPS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join(".deps"))
}

/// A test or demo media file from `.deps/media` (vtest.avi, vtest-h264.mp4, messi5.jpg).
pub fn media(name: &str) -> PathBuf {
    deps_dir().join("media").join(name)
}
