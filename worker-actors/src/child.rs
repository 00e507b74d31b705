//! The training child process: how it is started, limited, and kept warm.
//!
//! Starting `helium-worker train` costs about 0.3 s of CPU before it reads a byte of the job:
//! libtorch registers its operators in static initialisers. So the agent keeps one spare child
//! started ahead of time ([`Spare`]), waiting on stdin for its job directory; an award hands it
//! the directory and training starts at once. A spare is the same program with the same
//! limits as a child started for the job; it takes nothing from the job until it is handed one.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::{io::AsyncWriteExt, process::Child, process::Command};

use crate::trainer::DeviceChoice;

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
}

impl ChildSpec {
    /// `helium-worker train …` with stdout piped for the events and stderr to the worker's log.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.exe);
        command
            .arg("train")
            .arg("--device")
            .arg(device_flag(self.device))
            .arg("--threads")
            .arg(self.threads.to_string());
        // OpenMP keeps libgomp's default wait policy (spin briefly, then sleep), which the
        // owner may change in the worker's environment (OMP_WAIT_POLICY, GOMP_SPINCOUNT are
        // inherited). Measured (docs/BENCHMARKS.md): a passive policy made two threads slower
        // than one at libtorch's op granularity, and spinning collapses only when another
        // process wants the same cores, which the agent and broker no longer do during
        // training (checkpoints are rare and hashed off the trainer), but a second worker on
        // the same cores does: give each worker its share with --threads.
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        limit_child(&mut command, self.memory_bytes);
        command
    }

    /// A child that trains `job_dir` now.
    pub fn start(&self, job_dir: &Path) -> std::io::Result<Child> {
        let mut command = self.command();
        command.arg("--job-dir").arg(job_dir).stdin(Stdio::null());
        command.spawn()
    }

    /// A child that loads libtorch and waits for its job directory on stdin.
    pub fn start_spare(&self) -> std::io::Result<Child> {
        let mut command = self.command();
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

/// A child training `job_dir`: `spare` if it takes the directory, else a new one.
pub async fn begin(spare: Option<Child>, spec: &ChildSpec, job_dir: &Path) -> std::io::Result<Child> {
    if let Some(mut child) = spare {
        if let Some(mut stdin) = child.stdin.take() {
            let mut line = job_dir.as_os_str().as_encoded_bytes().to_vec();
            line.push(b'\n');
            if stdin.write_all(&line).await.is_ok() && stdin.flush().await.is_ok() {
                return Ok(child);
            }
        }
        tracing::warn!("the spare trainer did not take its job; starting a new one");
    }
    spec.start(job_dir)
}

fn device_flag(device: DeviceChoice) -> &'static str {
    match device {
        DeviceChoice::Auto => "auto",
        DeviceChoice::Cpu => "cpu",
        DeviceChoice::Cuda => "cuda",
    }
}

/// The child dies with the worker (no orphaned training), and on CPU workers gets an address
/// space limit so a hostile or oversized model cannot take the machine down.
fn limit_child(command: &mut Command, memory_bytes: Option<u64>) {
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if let Some(bytes) = memory_bytes {
                let limit = libc::rlimit {
                    rlim_cur: bytes as libc::rlim_t,
                    rlim_max: bytes as libc::rlim_t,
                };
                libc::setrlimit(libc::RLIMIT_AS, &limit);
            }
            Ok(())
        });
    }
}
