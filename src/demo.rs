//! `crosscam demo`: the embedded default run.

use anyhow::Result;

use crate::config::Config;

pub fn run(cfg: &Config, seconds: Option<f64>) -> Result<()> {
    let _ = (cfg, seconds);
    anyhow::bail!("the demo pipeline is not built yet")
}
