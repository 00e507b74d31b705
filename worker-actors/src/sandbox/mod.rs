//! The trainer child's sandbox (DESIGN §7): a job's TorchScript is a stranger's program, and
//! it runs with only what training needs.
//!
//! # Layers, and where each is applied
//! - At spawn ([`spawn`], [`env`]): an environment of allowed variables only (never the
//!   owner's secrets); stdin null (a spare's: a pipe carrying its job line), stdout a pipe for
//!   the events, stderr a pipe the agent reads with bounds ([`stderr`]).
//! - Between fork and exec ([`spawn`]): its own session (no controlling terminal) and process
//!   group, death with the worker, its own user, network, IPC and pid namespaces, rlimits on
//!   core dumps, open files, processes and (CPU workers) address space, SIGXFSZ ignored, the
//!   highest OOM score.
//! - First thing after exec ([`pidns`]): the started process forks the trainer as pid 1 of
//!   its pid namespace and waits for it.
//! - Per job ([`limits`], set at spawn, or by a spare on itself from its job line before the
//!   job's code runs): RLIMIT_CPU and RLIMIT_FSIZE; the agent's wall-clock limit, and its
//!   bounds on the job directory's bytes and entries ([`jobdir`]), past which it kills the
//!   trainer's process group (`run.rs`). The limits come from the job's declared work at this
//!   worker's measured speed, its inputs' sizes and its deadline.
//! - In the child, once it knows its job directory and before it loads the model, while it
//!   is one thread ([`enter`]): Landlock ([`confine`]), then a seccomp filter ([`seccomp`]).
//!
//! A worker probes at start-up which layers this machine gives it ([`probe`]), by starting a
//! trainer that enters the sandbox and then tries to break out. With every layer the trainer
//! runs in [`Mode::Enforce`]: a layer that fails to apply fails the spawn or the child, and
//! the run fails as this worker's fault. A worker missing a layer refuses to start unless its
//! owner passed `--allow-unsandboxed`; then its trainers run in [`Mode::BestEffort`], and its
//! ask says which layers it has.
//!
//! # Layout
//! - [`spawn`] — pre-exec setup, a spare's per-job rlimits, process-group kill.
//! - [`pidns`] — the fork into the pid namespace, and the keeper that waits outside it.
//! - [`env`] — the environment's allowlist.
//! - [`stderr`] — the bounded reader of the trainer's stderr.
//! - [`limits`] — the numbers, from the job, and why a trainer ended, in words.
//! - [`jobdir`] — the bounded measurement of a job directory.
//! - [`confine`] — Landlock.
//! - [`seccomp`] — the seccomp deny list.
//! - [`probe`] — the start-up probe, both sides; [`probe_checks`] — what it tries.

pub mod confine;
pub mod env;
pub mod jobdir;
pub mod limits;
pub mod pidns;
pub mod probe;
pub mod probe_checks;
pub mod seccomp;
pub mod spawn;
pub mod stderr;

use std::path::Path;

use crate::trainer::DeviceChoice;

/// Exit status of a trainer that could not enter its sandbox in [`Mode::Enforce`].
pub const EXIT_NO_SANDBOX: u8 = 3;

/// How strictly a trainer is sandboxed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Every layer, or the trainer does not run.
    #[default]
    Enforce,
    /// Every layer this machine offers (`--allow-unsandboxed`).
    BestEffort,
    /// None of the child's own layers (Landlock, seccomp): for measuring their cost by hand.
    Off,
}

impl Mode {
    pub fn flag(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::BestEffort => "best-effort",
            Mode::Off => "off",
        }
    }
}

/// Confines this trainer process to `job_dir`: Landlock, then seccomp. In
/// [`Mode::Enforce`] any layer that does not apply is an `Err` with the reasons; in
/// [`Mode::BestEffort`] they are logged.
pub fn enter(job_dir: &Path, device: DeviceChoice, mode: Mode) -> Result<(), String> {
    if mode == Mode::Off {
        return Ok(());
    }
    let failures: Vec<String> = [confine::landlock(job_dir, device), seccomp::install()]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if failures.is_empty() {
        tracing::debug!(job_dir = %job_dir.display(), "trainer sandboxed");
        return Ok(());
    }
    let reasons = failures.join("; ");
    match mode {
        Mode::Enforce => Err(reasons),
        _ => {
            tracing::warn!(reasons, "trainer runs partly sandboxed (--allow-unsandboxed)");
            Ok(())
        }
    }
}
