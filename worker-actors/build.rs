//! Gives every binary of this crate (`helium-worker`, its tests) an rpath to libtorch, so a GPU
//! owner runs `helium-worker` without setting `LD_LIBRARY_PATH` (DESIGN §7, §10).
//!
//! The libtorch directory is found the way torch-sys found it when it linked us: with
//! `LIBTORCH_USE_PYTORCH` it is the `torch/lib` of the Python on `PATH` (the project's
//! virtualenv); otherwise `LIBTORCH_LIB` or `LIBTORCH` + `/lib`, or `/usr/lib`. torch-sys
//! exports its choice as `DEP_TCH_LIBTORCH_LIB`, but only to crates that depend on torch-sys
//! directly, which this crate does not, so it is used when present and recomputed otherwise.
//!
//! The binary gets relative rpaths first, `$ORIGIN/../lib/python3.X/{site,dist}-packages/torch/lib`
//! (and `lib64`), then the absolute one: installed from the wheel (`make wheel`,
//! `worker-actors/pyproject.toml`), `helium-worker` lands in the `bin/` of a virtualenv, of
//! `~/.local` (`pip install --user`) or of a system prefix, beside the `lib/` holding the
//! `torch` wheel that pip installed as its dependency, and loads that libtorch. Python versions
//! are tried in [`PYTHONS`]' order; a prefix holding several Pythons' torch uses the first.
//! Built in the repository, no relative path exists and the absolute one (the build venv's)
//! is used.
//!
//! It compiles `csrc/buffers.cpp`, the one libtorch call tch lacks (a module's named buffers,
//! so checkpoints and results carry tensors only), with the include dirs and C++ ABI torch-sys
//! used.
//!
//! It also keeps `libtorch_cuda.so` as a dependency of the binary: nothing references its
//! symbols, so the default `--as-needed` link would drop it, and libtorch would then report
//! CUDA unavailable on a machine that has it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python minor versions whose `site-packages` the relative rpaths name, tried in order.
const PYTHONS: &[&str] = &["3.11", "3.12", "3.13", "3.10"];

/// Where pip puts a wheel's packages, relative to the prefix whose `bin/` gets its scripts:
/// virtualenvs and `--user` (`lib`), Debian's system Python (`dist-packages`), Fedora's
/// platform wheels (`lib64`).
const SITE_DIRS: &[&str] = &[
    "lib/python{}/site-packages",
    "lib/python{}/dist-packages",
    "lib64/python{}/site-packages",
];

const PRINT_TORCH_LIB: &str = "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))";

fn main() {
    for var in [
        "LIBTORCH_USE_PYTORCH",
        "LIBTORCH",
        "LIBTORCH_LIB",
        "DEP_TCH_LIBTORCH_LIB",
        "VIRTUAL_ENV",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    println!("cargo:rerun-if-changed=csrc/buffers.cpp");
    match libtorch_lib_dir() {
        Ok(dir) => {
            compile_shim(&dir);
            for rpath in relative_rpaths() {
                println!("cargo:rustc-link-arg=-Wl,-rpath,{rpath}");
            }
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
            if dir.join("libtorch_cuda.so").exists() {
                println!("cargo:rustc-link-search=native={}", dir.display());
                println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
            }
        }
        // torch-sys has already failed the build with a better message in this case.
        Err(why) => println!("cargo:warning=no rpath to libtorch: {why}"),
    }
}

/// `$ORIGIN/../<site dir>/torch/lib` for each of [`PYTHONS`] and [`SITE_DIRS`], in order.
/// `$ORIGIN` is literal here: the linker writes it and the loader expands it to the binary's
/// directory (no shell runs in between).
fn relative_rpaths() -> Vec<String> {
    PYTHONS
        .iter()
        .flat_map(|py| {
            SITE_DIRS
                .iter()
                .map(move |dir| format!("$ORIGIN/../{}/torch/lib", dir.replace("{}", py)))
        })
        .collect()
}

/// `csrc/buffers.cpp` against the headers next to `lib_dir`, as torch-sys builds its own C++.
fn compile_shim(lib_dir: &Path) {
    let root = lib_dir.parent().unwrap_or(lib_dir);
    let include = root.join("include");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={}", cxx11_abi()))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/buffers.cpp")
        .compile("helium_shim");
}

/// `LIBTORCH_CXX11_ABI` if set, else what the Python's torch was built with (torch-sys's
/// rule), else 1 (every torch wheel since 2.7).
fn cxx11_abi() -> String {
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    if let Ok(abi) = env::var("LIBTORCH_CXX11_ABI") {
        return abi;
    }
    if env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        for python in ["python", "python3"] {
            let asked = Command::new(python)
                .args(["-c", "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"])
                .output();
            if let Ok(out) = asked {
                if out.status.success() {
                    return String::from_utf8_lossy(&out.stdout).trim().to_string();
                }
            }
        }
    }
    "1".into()
}

fn libtorch_lib_dir() -> Result<PathBuf, String> {
    if let Some(dir) = env::var_os("DEP_TCH_LIBTORCH_LIB") {
        return Ok(PathBuf::from(dir));
    }
    if env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        return torch_lib_from_python();
    }
    if let Some(lib) = env::var_os("LIBTORCH_LIB") {
        return Ok(Path::new(&lib).join("lib"));
    }
    if let Some(root) = env::var_os("LIBTORCH") {
        return Ok(Path::new(&root).join("lib"));
    }
    if Path::new("/usr/lib/libtorch.so").exists() {
        return Ok(PathBuf::from("/usr/lib"));
    }
    Err("neither LIBTORCH_USE_PYTORCH, LIBTORCH_LIB nor LIBTORCH is set".into())
}

/// torch-sys runs `python` inside an activated virtualenv and `python3` otherwise; try that one
/// first so both agree, then the other.
fn torch_lib_from_python() -> Result<PathBuf, String> {
    let order = if env::var_os("VIRTUAL_ENV").is_some() {
        ["python", "python3"]
    } else {
        ["python3", "python"]
    };
    let mut errors = Vec::new();
    for python in order {
        match Command::new(python).args(["-c", PRINT_TORCH_LIB]).output() {
            Ok(out) if out.status.success() => {
                let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                if dir.join("libtorch_cpu.so").exists() || dir.join("libtorch.so").exists() {
                    return Ok(dir);
                }
                errors.push(format!("{python}: {} has no libtorch", dir.display()));
            }
            Ok(out) => errors.push(format!(
                "{python}: {}",
                String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("failed")
            )),
            Err(e) => errors.push(format!("{python}: {e}")),
        }
    }
    Err(errors.join("; "))
}
