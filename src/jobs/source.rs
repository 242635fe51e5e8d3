//! Where a job's crops come from. The server's crop store will implement [`CropSource`]; today
//! the CLI reads a dataset folder's train split ([`DatasetSource`]).

use std::path::PathBuf;

use anyhow::Result;

use crate::train::Cancel;
use crate::train::site::SiteData;

/// A site's tracklets (crops of one person each, with camera and time), with identity labels
/// where the source has them (an operator's confirmed matches; a labelled dataset).
pub trait CropSource {
    /// What the crops are, for reports.
    fn describe(&self) -> String;
    /// Collects the tracklets. Long: check `cancel`.
    fn collect(&mut self, cancel: &Cancel) -> Result<SiteData>;
}

/// The train split of a dataset folder (crosscam-built, Market-1501 layout, …).
pub struct DatasetSource {
    pub dir: PathBuf,
    /// Only these cameras (`c1`, …); all when empty.
    pub cameras: Vec<String>,
    /// Keep the dataset's identity labels (off: the crops are treated as unlabelled footage, as a
    /// site's own would be).
    pub labels: bool,
}

impl CropSource for DatasetSource {
    fn describe(&self) -> String {
        format!(
            "train split of {}{}{}",
            self.dir.display(),
            if self.cameras.is_empty() {
                String::new()
            } else {
                format!(", cameras {}", self.cameras.join(","))
            },
            if self.labels {
                ", with identity labels"
            } else {
                ", unlabelled"
            }
        )
    }

    fn collect(&mut self, cancel: &Cancel) -> Result<SiteData> {
        let (_, site) = crate::train::site::load_dataset(&self.dir)?;
        anyhow::ensure!(!cancel.is_cancelled(), "cancelled");
        let site = site.with_cameras(&self.cameras);
        Ok(if self.labels {
            site
        } else {
            site.without_labels()
        })
    }
}
