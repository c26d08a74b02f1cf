//! Bakes libtorch's folder into the binary's RUNPATH so `cargo run`, `cargo test` and
//! `target/release/anomalyd` find libtorch without LD_LIBRARY_PATH, and fails early with a
//! clear message when the libtorch found is not the version tch was written for.

use std::path::Path;

const TORCH_VERSION: &str = "2.11.0";

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags,-rpath,{lib}");
        check_version(Path::new(&lib));
    }
}

/// The PyPI wheel has no `build-version` file, so torch-sys does not check it: read
/// `torch/version.py` next to `torch/lib` instead.
fn check_version(lib: &Path) {
    let Some(torch) = lib.parent() else { return };
    let Ok(text) = std::fs::read_to_string(torch.join("version.py")) else {
        return;
    };
    let found = text
        .lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
        .unwrap_or_default();
    if !found.starts_with(TORCH_VERSION) {
        panic!(
            "libtorch at {} is version {found:?}, but tch 0.24 needs torch {TORCH_VERSION}: \
             run scripts/setup.sh",
            torch.display()
        );
    }
}
