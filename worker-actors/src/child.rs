//! The training child process: how it is started, limited, and kept warm.
//!
//! Starting `helium-worker train` costs about 0.3 s of CPU before it reads a byte of the job:
//! libtorch registers its operators in static initialisers. So the agent keeps one spare child
//! started ahead of time ([`Spare`]), waiting on stdin for its job directory; an award hands it
//! the directory and training starts at once. A spare is the same program with the same
//! limits as a child started for the job; it takes nothing from the job until it is handed one.
//!
//! Every child is sandboxed ([`crate::sandbox`]): an allowlisted environment, its own session,
//! namespaces and the job-independent rlimits at spawn, the job's own limits at spawn or (a
//! spare) set on itself from its job line before any of the job's code runs, Landlock and
//! seccomp by the child itself once it has its job directory. Its stderr is a pipe: whoever
//! takes the child reads it with [`crate::sandbox::stderr::forward`].

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::{io::AsyncWriteExt, process::Child, process::Command};

use crate::sandbox::{self, limits::JobLimits, Mode};
use crate::trainer::{DeviceChoice, JobLine};

/// How every training child of this worker is started.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The `helium-worker` binary.
    pub exe: PathBuf,
    pub device: DeviceChoice,
    /// Intra-op threads.
    pub threads: i32,
    /// RLIMIT_AS, CPU workers only.
    pub memory_bytes: Option<u64>,
    /// How strictly children are sandboxed: [`Mode::Enforce`] unless the owner allowed less.
    pub sandbox: Mode,
}

impl ChildSpec {
    /// `helium-worker train …` with stdout piped for the events and stderr piped for the
    /// worker's log (read with bounds by whoever takes the child).
    fn command(&self, job: Option<&JobLimits>) -> Command {
        self.command_in(self.sandbox, job)
    }

    /// [`Self::command`] in sandbox `mode` (the start-up probe runs best effort).
    pub(crate) fn command_in(&self, mode: Mode, job: Option<&JobLimits>) -> Command {
        let mut command = Command::new(&self.exe);
        command
            .arg("train")
            .arg("--device")
            .arg(device_flag(self.device))
            .arg("--threads")
            .arg(self.threads.to_string())
            .arg("--sandbox")
            .arg(mode.flag());
        // Nothing of the worker's environment but the allowlist (the owner's secrets stay out).
        command.env_clear().envs(sandbox::env::trainer_env(std::env::vars_os()));
        // OpenMP keeps libgomp's default wait policy (spin briefly, then sleep), which the
        // owner may change in the worker's environment (OMP_WAIT_POLICY, GOMP_SPINCOUNT are
        // passed). Measured (docs/BENCHMARKS.md): a passive policy made two threads slower
        // than one at libtorch's op granularity, and spinning collapses only when another
        // process wants the same cores, which the agent and broker no longer do during
        // training (checkpoints are rare and hashed off the trainer), but a second worker on
        // the same cores does: give each worker its share with --threads.
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        sandbox::spawn::prepare(&mut command, mode, self.memory_bytes, self.threads, job);
        command
    }

    /// A child that trains `job_dir` now, under `limits`.
    pub fn start(&self, job_dir: &Path, limits: &JobLimits) -> std::io::Result<Child> {
        let mut command = self.command(Some(limits));
        command.arg("--job-dir").arg(job_dir).stdin(Stdio::null());
        command.spawn()
    }

    /// A child that loads libtorch and waits for its job directory on stdin.
    pub fn start_spare(&self) -> std::io::Result<Child> {
        let mut command = self.command(None);
        command.arg("--job-dir-from-stdin").stdin(Stdio::piped());
        command.spawn()
    }
}

/// At most one warm child waiting for a job.
pub struct Spare {
    spec: ChildSpec,
    child: Option<Child>,
}

impl Spare {
    pub fn new(spec: ChildSpec) -> Self {
        Self { spec, child: None }
    }

    /// Starts a spare unless one is waiting already.
    pub fn refill(&mut self) {
        if self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None))) {
            return;
        }
        self.child = match self.spec.start_spare() {
            Ok(child) => Some(child),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a spare trainer; the next run starts its own");
                None
            }
        };
    }

    /// The waiting spare, if it is still alive.
    pub fn take(&mut self) -> Option<Child> {
        self.child
            .take()
            .and_then(|mut c| matches!(c.try_wait(), Ok(None)).then_some(c))
    }
}

/// A child training `job_dir` under `limits`: `spare` if it takes its job line (the limits
/// and the directory), else a new one.
pub async fn begin(
    spare: Option<Child>,
    spec: &ChildSpec,
    job_dir: &Path,
    limits: &JobLimits,
) -> std::io::Result<Child> {
    if let Some(mut child) = spare {
        if let Some(mut stdin) = child.stdin.take() {
            let line = JobLine {
                cpu_secs: limits.cpu_secs,
                file_bytes: limits.file_bytes,
                dir: job_dir.to_path_buf(),
            }
            .encode();
            if stdin.write_all(&line).await.is_ok() && stdin.flush().await.is_ok() {
                return Ok(child);
            }
        }
        tracing::warn!("the spare trainer did not take its job; starting a new one");
        sandbox::spawn::kill_group(&mut child).await;
    }
    spec.start(job_dir, limits)
}

fn device_flag(device: DeviceChoice) -> &'static str {
    match device {
        DeviceChoice::Auto => "auto",
        DeviceChoice::Cpu => "cpu",
        DeviceChoice::Cuda => "cuda",
    }
}
