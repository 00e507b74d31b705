//! The trainer's environment: an allowlist, never the worker's whole environment.
//!
//! A worker's environment holds its owner's secrets (cloud keys, tokens, `HELIUM_*` settings
//! naming credentials), and a trainer may run a stranger's native code. The agent starts every
//! trainer with an empty environment plus only the variables named here ([`trainer_env`]).
//!
//! What the trainer itself reads: `RUST_LOG` (its log filter), nothing else of ours; its
//! settings come as arguments (`--threads`, `--device`, `--sandbox`). What the libraries it
//! loads read: the dynamic loader `LD_LIBRARY_PATH` (a worker whose libtorch or CUDA libraries
//! are found through it needs it in the child too); OpenMP and MKL their thread and wait
//! policies (`OMP_*`, `GOMP_*`, `KMP_*`, `MKL_*`); CUDA and PyTorch their device selection and
//! allocator settings (`CUDA_*`, `PYTORCH_*`, `TORCH_*`, `CUBLAS_WORKSPACE_CONFIG`). None of
//! these is a place for secrets. `PATH` and `HOME` are not passed: a trainer cannot start a
//! program (seccomp) nor read a home directory (Landlock).

use std::ffi::{OsStr, OsString};

/// Variables passed by exact name.
pub const PASSED: &[&str] = &["RUST_LOG", "RUST_BACKTRACE", "LD_LIBRARY_PATH", "CUBLAS_WORKSPACE_CONFIG"];

/// Variables passed by prefix.
pub const PASSED_PREFIXES: &[&str] = &["OMP_", "GOMP_", "KMP_", "MKL_", "CUDA_", "PYTORCH_", "TORCH_"];

/// Whether a variable of this name reaches the trainer.
pub fn passed(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    PASSED.contains(&name) || PASSED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The trainer's environment, from the worker's (`std::env::vars_os()`): the allowed
/// variables only, in their order.
pub fn trainer_env(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Vec<(OsString, OsString)> {
    vars.into_iter().filter(|(name, _)| passed(name)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_allowlist_reaches_the_trainer() {
        let worker: Vec<(OsString, OsString)> = [
            ("AWS_SECRET_ACCESS_KEY", "k"),
            ("HELIUM_TEST_SECRET", "s"),
            ("HELIUM_CREDS", "/home/o/w.creds"),
            ("PATH", "/usr/bin"),
            ("HOME", "/home/o"),
            ("OMP_NUM_THREADS", "2"),
            ("CUDA_VISIBLE_DEVICES", "0"),
            ("RUST_LOG", "info"),
            ("LD_LIBRARY_PATH", "/opt/cuda/lib64"),
            ("OMP", "no underscore"),
        ]
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
        let names: Vec<String> = trainer_env(worker)
            .into_iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "RUST_LOG", "LD_LIBRARY_PATH"]
        );
    }
}
