//! What can go wrong in the gallery, phrased for the caller that has to act on it.

use std::path::PathBuf;

use super::IdentityId;

#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error("vector has {found} dimensions, the gallery holds {expected}-dimensional vectors")]
    Dimension { expected: usize, found: usize },
    #[error("vector is not usable: {0}")]
    BadVector(&'static str),
    #[error("id {0} is already in the index (ids are never reused)")]
    DuplicateId(u64),
    #[error("observation of {camera}/{tracklet}: {message}")]
    BadObservation {
        camera: String,
        tracklet: u64,
        message: String,
    },
    #[error("no identity {0}")]
    UnknownIdentity(IdentityId),
    #[error("{0}")]
    Refused(String),
    #[error("gallery dump {}: {message}", path.display())]
    Dump { path: PathBuf, message: String },
    #[error("gallery dump {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gallery snapshot: {0}")]
    Snapshot(String),
}

impl GalleryError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> GalleryError {
        GalleryError::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn dump(path: impl Into<PathBuf>, message: impl Into<String>) -> GalleryError {
        GalleryError::Dump {
            path: path.into(),
            message: message.into(),
        }
    }
}
