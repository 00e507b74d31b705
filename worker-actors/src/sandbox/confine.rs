//! The trainer's side of the sandbox: Landlock, applied by the child to itself once it knows
//! its job directory and before it loads the model (`__setstate__` runs inside
//! `torch.jit.load`), while it is still one thread.
//!
//! Guarantee, once [`landlock`] returned `Ok`: the process (and every thread it creates
//! later) can open, for anything, only
//! - its job directory and what is beneath it: read, write, create, remove, truncate;
//! - read-only (and executable): its own binary, and the directories of the shared
//!   libraries it has loaded (libtorch's `torch/lib`, the CUDA wheels', the system's), so
//!   that libraries opened lazily still load;
//! - read-only: `/proc/self` (its own pid's entries only, not another process's),
//!   `/proc/cpuinfo`, `/proc/meminfo`, `/sys/devices/system/cpu` (OpenMP, cpuinfo),
//!   `/etc/ld.so.cache`, `/dev/urandom`, `/dev/random`; read-write `/dev/null`, `/dev/zero`;
//! - on CUDA workers (untested here): `/dev/nvidia*` read-write with ioctls,
//!   `/proc/driver/nvidia`, `/sys/bus/pci`, `/sys/devices` read-only;
//! - no TCP bind or connect, no abstract unix socket and no signal outside its own Landlock
//!   domain (so not to the worker that runs as the same uid).
//!
//! Everything else (another job's files, the grid's store, the owner's home) fails with
//! EACCES, which libtorch reports as "Permission denied" in the job's failure reason.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
    ABI,
};

use crate::trainer::DeviceChoice;

/// The Landlock ABI whose rights the trainer asks for: 5 for device ioctls, 6 for scopes.
/// A kernel offering less enforces less, and [`landlock`] says so.
const ABI_WANTED: ABI = ABI::V6;

const READ_ONLY: &[&str] = &[
    "/proc/self",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/sys/devices/system/cpu",
    "/etc/ld.so.cache",
    "/dev/urandom",
    "/dev/random",
];
const READ_WRITE_DEVICES: &[&str] = &["/dev/null", "/dev/zero"];
const CUDA_READ_ONLY: &[&str] = &["/proc/driver/nvidia", "/sys/bus/pci", "/sys/devices"];

/// Confines this process with Landlock (see the module's guarantee). `Err` says what could
/// not be enforced; the process may then be partly confined.
pub fn landlock(job_dir: &Path, device: DeviceChoice) -> Result<(), String> {
    let threads = thread_count();
    if threads != 1 {
        // Landlock before ABI 8 confines only the calling thread and those it creates later.
        return Err(format!(
            "{threads} threads were running; Landlock would confine only one"
        ));
    }
    let job_dir = job_dir
        .canonicalize()
        .map_err(|e| format!("the job directory {}: {e}", job_dir.display()))?;
    let read_exec = loaded_code_paths()?;
    let abi = ABI_WANTED;
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let mut devices: Vec<PathBuf> = READ_WRITE_DEVICES.iter().map(PathBuf::from).collect();
    let mut read_only: Vec<PathBuf> = READ_ONLY.iter().map(PathBuf::from).collect();
    if device != DeviceChoice::Cpu {
        devices.extend(nvidia_devices());
        read_only.extend(CUDA_READ_ONLY.iter().map(PathBuf::from));
    }
    let device_access = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
        .and_then(|r| r.scope(Scope::AbstractUnixSocket | Scope::Signal))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules([&job_dir], AccessFs::from_all(abi))))
        .and_then(|r| r.add_rules(path_beneath_rules(&read_exec, AccessFs::from_read(abi))))
        .and_then(|r| r.add_rules(path_beneath_rules(&read_only, read)))
        .and_then(|r| r.add_rules(path_beneath_rules(&devices, device_access)))
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("Landlock: {e}"))?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(()),
        RulesetStatus::PartiallyEnforced => Err("this kernel enforces only part of Landlock (ABI below 6)".into()),
        RulesetStatus::NotEnforced => Err("this kernel does not offer Landlock".into()),
    }
}

/// The running binary and the directories of every shared library mapped into this process.
fn loaded_code_paths() -> Result<Vec<PathBuf>, String> {
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("reading /proc/self/maps: {e}"))?;
    let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
    if let Ok(exe) = std::env::current_exe() {
        paths.insert(exe);
    }
    for line in maps.lines() {
        // address perms offset dev inode path
        let Some(path) = line.split_whitespace().nth(5).filter(|p| p.starts_with('/')) else {
            continue;
        };
        let path = Path::new(path);
        let is_library = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(".so"));
        if let (true, Some(dir)) = (is_library, path.parent()) {
            paths.insert(dir.to_path_buf());
        }
    }
    Ok(paths.into_iter().collect())
}

fn nvidia_devices() -> Vec<PathBuf> {
    std::fs::read_dir("/dev")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("nvidia"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Threads of this process (0 if unknown).
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}
