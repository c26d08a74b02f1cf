//! Device selection, and the one place anomalyd uses `unsafe`: loading libtorch_cuda.
//!
//! rustc links with `--as-needed`, so `libtorch_cuda.so` (which the binary references no
//! symbol of) is dropped at link time and libtorch never registers its CUDA backend. At
//! start-up we `dlopen` it from the folder of the already loaded `libtorch_cpu.so`, with
//! `RTLD_GLOBAL` so its static initialisers register CUDA with libtorch. On a CPU-only
//! install the file is missing or its dependencies are, the load fails harmlessly, and
//! anomalyd runs on the CPU.
#![allow(unsafe_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
use tch::Device;

use super::ModelError;
use crate::config::DeviceChoice;

static CUDA_LIBRARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The folder of the `libtorch_cpu.so` this process loaded, from `/proc/self/maps`.
fn libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| PathBuf::from(p).parent().map(PathBuf::from))
}

/// Loads libtorch_cuda once per process; returns where from, or why not.
pub fn load_cuda() -> &'static Result<PathBuf, String> {
    CUDA_LIBRARY.get_or_init(|| {
        let dir = libtorch_dir().ok_or("libtorch_cpu.so not found among loaded libraries")?;
        let path = dir.join("libtorch_cuda.so");
        // SAFETY: loading a shared library runs its initialisers. libtorch_cuda.so is the
        // CUDA half of the very libtorch this process already runs (same folder, same
        // build), whose initialisers only register CUDA kernels and allocators with it. It
        // stays loaded for the life of the process (the handle is leaked below), so no
        // symbol it registers can dangle.
        let lib = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_GLOBAL) }
            .map_err(|e| format!("{}: {e}", path.display()))?;
        std::mem::forget(lib);
        Ok(path)
    })
}

/// The device for a configured choice.
pub fn select(choice: DeviceChoice) -> Result<Device, ModelError> {
    let loaded = load_cuda();
    let available = loaded.is_ok() && tch::Cuda::is_available();
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto if available => Ok(Device::Cuda(0)),
        DeviceChoice::Auto => Ok(Device::Cpu),
        DeviceChoice::Cuda if available => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => Err(ModelError::Mismatch(format!(
            "model.device = \"cuda\" but CUDA is not available ({})",
            match loaded {
                Ok(_) => "libtorch_cuda loaded, no GPU visible".to_string(),
                Err(e) => e.clone(),
            }
        ))),
    }
}

/// libtorch intra-op threads: the configured count, or the CPUs this process may use.
pub fn set_threads(configured: usize) -> usize {
    let n = if configured == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        configured
    };
    tch::set_num_threads(n as i32);
    n
}
