//! The inference runtime: finds the ONNX Runtime shared library, loads it once per process, and
//! decides once where models run (CUDA when the loaded library has it and it starts, CPU
//! otherwise), logging the decision.
//!
//! Library choice ([`gpu::choose_library`]): the `runtime.onnxruntime` config key or
//! `ORT_DYLIB_PATH` when set; else, unless `[runtime] device = "cpu"`, the GPU build in
//! `.deps/onnxruntime-gpu/` with the CUDA libraries of `.deps/cuda/lib/` preloaded, when both are
//! installed and `nvidia-smi` finds a card; else the CPU build in `.deps/onnxruntime/` (`auto`
//! says why, `cuda` fails with the reason). `make setup` fills `.deps/`. Users set nothing.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::ep::{self, ExecutionProvider};
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};

use crate::config::{DevicePref, RuntimeSettings};

pub mod gpu;

/// The ONNX Runtime version `make setup` installs and crosscam is tested with.
pub const ORT_VERSION: &str = "1.32.0";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime library not found (looked in: {}); run `make setup`, or set ORT_DYLIB_PATH / runtime.onnxruntime to libonnxruntime.so",
        .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound(Vec<PathBuf>),
    #[error(
        "cannot load the ONNX Runtime library {path}: {msg}; reinstall it with `rm -rf .deps/onnxruntime && make setup`"
    )]
    Load { path: PathBuf, msg: String },
    #[error("CUDA was required (runtime.device = \"cuda\") but {0}")]
    CudaRequired(String),
    #[error("ONNX Runtime: {0}")]
    Ort(String),
}

/// Where sessions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Cuda,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Cpu => "CPU",
            Device::Cuda => "CUDA",
        })
    }
}

/// The loaded runtime. One per process (ONNX Runtime can be loaded only once).
pub struct Runtime {
    pub library: PathBuf,
    pub version: String,
    /// Whether the loaded library was built with the CUDA execution provider.
    pub cuda_in_library: bool,
    /// Why this library was chosen (GPU build or CPU build, and why not CUDA).
    pub choice_reason: String,
    /// The CUDA/cuDNN libraries loaded before ONNX Runtime (empty on the CPU path).
    pub cuda_preloaded: Vec<PathBuf>,
    env: ort::environment::Environment,
    settings: RuntimeSettings,
    /// The device decision, made at the first session and then reused.
    decided: Mutex<Option<Device>>,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Candidate library paths, in search order.
pub fn library_candidates(settings: &RuntimeSettings) -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = &settings.onnxruntime {
        c.push(p.clone());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        c.push(PathBuf::from(p));
    }
    let dir = crate::paths::deps_dir().join("onnxruntime");
    c.push(dir.join(format!("libonnxruntime.so.{ORT_VERSION}")));
    c.push(dir.join("libonnxruntime.so"));
    c
}

/// The first candidate that exists.
pub fn locate_library(settings: &RuntimeSettings) -> Result<PathBuf, RuntimeError> {
    let cands = library_candidates(settings);
    cands
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(RuntimeError::NotFound(cands))
}

/// Loads ONNX Runtime (once per process) and returns it.
pub fn init(settings: &RuntimeSettings) -> Result<&'static Runtime, RuntimeError> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    static INIT: Mutex<()> = Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let probe = gpu::Probe::of_machine(settings);
    let mut choice = gpu::choose_library(&probe, settings.device, gpu::card_name)?;
    let mut cuda_preloaded = Vec::new();
    if choice.preload_cuda {
        match gpu::preload_cuda(&probe.cuda_dir) {
            Ok(libs) => cuda_preloaded = libs,
            Err(e) => {
                let why = format!("the CUDA libraries failed to load ({e})");
                if settings.device == DevicePref::Cuda {
                    return Err(RuntimeError::CudaRequired(why));
                }
                if probe.explicit.is_some() {
                    choice.preload_cuda = false;
                    choice.reason = format!("{}; {why}", choice.reason);
                } else {
                    choice = gpu::cpu_choice(&probe, why)?;
                }
            }
        }
    }
    tracing::info!(library = %choice.library.display(), reason = %choice.reason, "ONNX Runtime library chosen");
    let path = choice.library.clone();
    let path = path.canonicalize().unwrap_or(path);
    let builder = std::panic::catch_unwind(|| ort::init_from(&path))
        .map_err(|_| RuntimeError::Load {
            path: path.clone(),
            msg: "the library panicked while loading".into(),
        })?
        .map_err(|e| RuntimeError::Load {
            path: path.clone(),
            msg: e.to_string(),
        })?;
    let env = builder
        .with_name("crosscam")
        .build()
        .map_err(|e| RuntimeError::Ort(e.to_string()))?;
    let version = library_version(&path).unwrap_or_else(|| "unknown".into());
    let cuda_in_library = ep::CUDA::is_available().unwrap_or(false);
    tracing::info!(library = %path.display(), %version, cuda_in_library, "ONNX Runtime loaded");
    let rt = Runtime {
        library: path,
        version,
        cuda_in_library,
        choice_reason: choice.reason,
        cuda_preloaded,
        env,
        settings: settings.clone(),
        decided: Mutex::new(None),
    };
    Ok(RUNTIME.get_or_init(|| rt))
}

/// The runtime if `init` already ran.
pub fn get() -> Option<&'static Runtime> {
    RUNTIME.get()
}

/// Options for one session.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionOptions {
    /// Intra-op threads; 0 = the runtime setting (which defaults to one per core).
    pub threads: usize,
    /// Force CPU for this session (e.g. small helper models).
    pub cpu_only: bool,
}

impl Runtime {
    fn builder(&self, opts: SessionOptions) -> Result<SessionBuilder, RuntimeError> {
        let threads = if opts.threads > 0 {
            opts.threads
        } else if self.settings.threads > 0 {
            self.settings.threads
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        };
        Session::builder(&self.env)
            .and_then(|b| {
                b.with_optimization_level(GraphOptimizationLevel::Level3)
                    .map_err(Into::into)
            })
            .and_then(|b| b.with_intra_threads(threads).map_err(Into::into))
            .and_then(|b| {
                b.with_intra_op_spinning(self.settings.spin)
                    .map_err(Into::into)
            })
            .map_err(|e: ort::Error| RuntimeError::Ort(e.to_string()))
    }

    /// Registers CUDA when wanted and possible; returns the builder and the device it will use.
    fn with_device(
        &self,
        b: SessionBuilder,
        opts: SessionOptions,
    ) -> Result<(SessionBuilder, Device), RuntimeError> {
        let pref = if opts.cpu_only {
            DevicePref::Cpu
        } else {
            self.settings.device
        };
        if pref == DevicePref::Cpu {
            return Ok((b, Device::Cpu));
        }
        if !self.cuda_in_library {
            if pref == DevicePref::Cuda {
                return Err(RuntimeError::CudaRequired(format!(
                    "{} was built without the CUDA execution provider (`make setup` on a machine with an NVIDIA card installs the GPU build; docs/gpu.md)",
                    self.library.display()
                )));
            }
            self.log_decision(
                Device::Cpu,
                "the loaded ONNX Runtime has no CUDA execution provider",
            );
            return Ok((b, Device::Cpu));
        }
        match b.with_execution_providers([ep::CUDA::default().build().error_on_failure()]) {
            Ok(b) => {
                self.log_decision(Device::Cuda, "CUDA execution provider registered");
                Ok((b, Device::Cuda))
            }
            Err(e) => {
                let msg = e.to_string();
                if pref == DevicePref::Cuda {
                    return Err(RuntimeError::CudaRequired(msg));
                }
                self.log_decision(Device::Cpu, &format!("CUDA failed to start ({msg})"));
                Ok((e.recover(), Device::Cpu))
            }
        }
    }

    fn log_decision(&self, d: Device, why: &str) {
        let mut decided = self.decided.lock().unwrap_or_else(|e| e.into_inner());
        if decided.replace(d) != Some(d) {
            tracing::info!(device = %d, reason = why, "inference device selected");
        }
    }

    /// A session for the model file at `path`.
    pub fn session(
        &self,
        path: &Path,
        opts: SessionOptions,
    ) -> Result<(Session, Device), RuntimeError> {
        let (mut b, dev) = self.with_device(self.builder(opts)?, opts)?;
        let s = b
            .commit_from_file(path)
            .map_err(|e| RuntimeError::Ort(format!("{}: {e}", path.display())))?;
        Ok((s, dev))
    }

    /// A session for an in-memory model.
    pub fn session_from_bytes(
        &self,
        bytes: &[u8],
        opts: SessionOptions,
    ) -> Result<(Session, Device), RuntimeError> {
        let (mut b, dev) = self.with_device(self.builder(opts)?, opts)?;
        let s = b
            .commit_from_memory(bytes)
            .map_err(|e| RuntimeError::Ort(e.to_string()))?;
        Ok((s, dev))
    }

    /// The execution providers this library was built with (of those crosscam knows).
    pub fn providers_in_library(&self) -> Vec<&'static str> {
        let mut v = vec!["CPU"];
        if self.cuda_in_library {
            v.push("CUDA");
        }
        v
    }

    /// Tries to start the CUDA execution provider on a throw-away session builder: `Ok` when it
    /// registers, else why not (for `crosscam doctor`; sessions decide for themselves).
    pub fn try_cuda(&self) -> Result<(), String> {
        if !self.cuda_in_library {
            return Err(format!(
                "{} has no CUDA execution provider",
                self.library.display()
            ));
        }
        let b = self
            .builder(SessionOptions::default())
            .map_err(|e| e.to_string())?;
        b.with_execution_providers([ep::CUDA::default().build().error_on_failure()])
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The device sessions use (decided at the first session; CPU before that).
    pub fn device(&self) -> Device {
        self.decided
            .lock()
            .map(|d| d.unwrap_or(Device::Cpu))
            .unwrap_or(Device::Cpu)
    }
}

/// The version string the library reports (`OrtGetApiBase()->GetVersionString()`).
fn library_version(path: &Path) -> Option<String> {
    #[repr(C)]
    struct OrtApiBase {
        get_api: unsafe extern "C" fn(u32) -> *const std::ffi::c_void,
        get_version_string: unsafe extern "C" fn() -> *const std::ffi::c_char,
    }
    // SAFETY: the library was just loaded successfully by `ort::init_from`; opening it again returns
    // the same handle, and `OrtGetApiBase` has this signature in every ONNX Runtime release.
    unsafe {
        let lib = libloading::Library::new(path).ok()?;
        let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const OrtApiBase> =
            lib.get(b"OrtGetApiBase").ok()?;
        let base = get_base();
        if base.is_null() {
            return None;
        }
        let v = ((*base).get_version_string)();
        (!v.is_null()).then(|| std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned())
    }
}

/// Whether an NVIDIA driver is loaded (`/proc/driver/nvidia/version`), for the training device
/// choice of a `--features cuda` build; the inference runtime and `crosscam doctor` ask
/// `nvidia-smi` instead ([`gpu::card_name`], [`gpu::card_info`]).
pub fn gpu_visible() -> Option<String> {
    let v = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    Some(
        v.lines()
            .next()
            .unwrap_or("NVIDIA driver")
            .trim()
            .to_string(),
    )
}
