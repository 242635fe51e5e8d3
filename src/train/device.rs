//! Where training runs. One place decides: burn's CUDA backend when crosscam was built with the
//! `cuda` feature and a GPU driver is visible, the Flex CPU backend otherwise; the decision is
//! logged once. Training needs autodiff on top ([`Device::autodiff`]); inference snapshots
//! (`Module::valid`) run on the plain device.

use std::sync::OnceLock;

use burn::tensor::Device;

/// The CPU device (Flex backend, SIMD kernels, rayon threads).
pub fn cpu() -> Device {
    Device::flex()
}

/// Which backend [`select`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cpu,
    Cuda,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Cpu => "cpu (burn flex)",
            Backend::Cuda => "cuda (burn cubecl)",
        })
    }
}

/// The training device (with autodiff). `want_gpu` false forces the CPU.
pub fn select(want_gpu: bool) -> (Device, Backend) {
    let (device, backend, why) = pick(want_gpu);
    static LOGGED: OnceLock<()> = OnceLock::new();
    LOGGED.get_or_init(
        || tracing::info!(backend = %backend, reason = why, "training device selected"),
    );
    (device.autodiff(), backend)
}

#[cfg(feature = "cuda")]
fn pick(want_gpu: bool) -> (Device, Backend, &'static str) {
    if !want_gpu {
        return (cpu(), Backend::Cpu, "CPU requested");
    }
    match crate::runtime::gpu_visible() {
        Some(_) => (
            Device::cuda(0usize),
            Backend::Cuda,
            "built with cuda and a GPU driver is visible",
        ),
        None => (cpu(), Backend::Cpu, "no GPU driver visible"),
    }
}

#[cfg(not(feature = "cuda"))]
fn pick(want_gpu: bool) -> (Device, Backend, &'static str) {
    let why = if want_gpu {
        "crosscam was built without the `cuda` feature"
    } else {
        "CPU requested"
    };
    (cpu(), Backend::Cpu, why)
}
