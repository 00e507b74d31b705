//! The start-up probe: which sandbox layers this machine gives a trainer, found by starting
//! one exactly as a job's trainer starts (best effort), letting it enter its sandbox, and
//! having it try what each layer forbids. A layer counts only if the attempt fails.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use helium_protocol::worker::SandboxLayer;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::limits::OPEN_FILES;
use super::{confine, seccomp, Mode};
use crate::child::ChildSpec;
use crate::trainer::DeviceChoice;

/// How long a probe trainer may take (it loads libtorch: about a second).
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the probe trainer found: the layers in force and, for each missing one, why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub layers: Vec<SandboxLayer>,
    pub missing: Vec<String>,
}

impl ProbeReport {
    pub fn complete(&self) -> bool {
        SandboxLayer::ALL.iter().all(|l| self.layers.contains(l))
    }

    fn check(&mut self, layer: SandboxLayer, result: Result<(), String>) {
        match result {
            Ok(()) => self.layers.push(layer),
            Err(why) => self.missing.push(format!("{}: {why}", layer.name())),
        }
    }
}

/// Starts a probe trainer of `spec` and reads its report.
pub async fn run(spec: &ChildSpec) -> Result<ProbeReport, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("a directory for the sandbox probe: {e}"))?;
    let mut command = spec.command_in(Mode::BestEffort, None);
    command
        .arg("--sandbox-probe")
        .arg("--job-dir")
        .arg(dir.path())
        .stdin(Stdio::null());
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting the sandbox probe: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("the sandbox probe has no stdout")?;
    let mut out = Vec::new();
    let read = async {
        // A report is a few hundred bytes; more is not a report.
        let _ = (&mut stdout).take(64 * 1024).read_to_end(&mut out).await;
        child.wait().await
    };
    let status = tokio::time::timeout(PROBE_TIMEOUT, read)
        .await
        .map_err(|_| "the sandbox probe did not answer within 60 s".to_string())?
        .map_err(|e| format!("waiting for the sandbox probe: {e}"))?;
    let text = String::from_utf8_lossy(&out);
    let line = text.lines().rev().find(|l| l.starts_with('{'));
    line.and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("the sandbox probe ({status}) gave no report"))
}

/// The probe trainer's `main`: enter the sandbox (best effort), test each layer, print the
/// report as one JSON line on stdout.
pub fn child_main(job_dir: &Path, device: DeviceChoice) -> ExitCode {
    let landlock = confine::landlock(job_dir, device);
    let seccomp = seccomp::install();
    let mut report = ProbeReport::default();
    report.check(SandboxLayer::UserNamespace, own_user_namespace());
    report.check(SandboxLayer::NetworkNamespace, own_network_namespace());
    report.check(SandboxLayer::Landlock, landlock.and_then(|()| landlock_holds(job_dir)));
    report.check(SandboxLayer::Seccomp, seccomp.and_then(|()| seccomp_holds()));
    report.check(SandboxLayer::Rlimits, rlimits_hold());
    match serde_json::to_string(&report) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(_) => ExitCode::FAILURE,
    }
}

/// The initial user namespace maps every uid: `0 0 4294967295`.
fn own_user_namespace() -> Result<(), String> {
    let map = std::fs::read_to_string("/proc/self/uid_map").map_err(|e| format!("reading uid_map: {e}"))?;
    let full = map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
    if full {
        Err("the trainer is in the worker's user namespace (user namespaces unavailable?)".into())
    } else {
        Ok(())
    }
}

/// A fresh network namespace has one interface: `lo`.
fn own_network_namespace() -> Result<(), String> {
    let dev = std::fs::read_to_string("/proc/self/net/dev").map_err(|e| format!("reading /proc/self/net/dev: {e}"))?;
    let others: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .filter(|name| *name != "lo")
        .collect();
    if others.is_empty() {
        Ok(())
    } else {
        Err(format!("the trainer sees the network ({})", others.join(", ")))
    }
}

fn landlock_holds(job_dir: &Path) -> Result<(), String> {
    std::fs::write(job_dir.join("probe"), b"inside").map_err(|e| format!("cannot write its job directory: {e}"))?;
    match std::fs::read_dir("/") {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(format!("listing / failed, but not for Landlock: {e}")),
        Ok(_) => Err("the trainer could list /".into()),
    }
}

fn seccomp_holds() -> Result<(), String> {
    // SAFETY: socket(2) with constant arguments; a descriptor it returns is closed.
    let (fd, errno) = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        (fd, std::io::Error::last_os_error().raw_os_error())
    };
    if fd >= 0 {
        // SAFETY: closes the descriptor just opened.
        unsafe { libc::close(fd) };
        return Err("the trainer could open a socket".into());
    }
    match errno {
        Some(libc::EPERM) => Ok(()),
        other => Err(format!("socket failed with errno {other:?}, not the filter's EPERM")),
    }
}

fn rlimits_hold() -> Result<(), String> {
    let get = |resource| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid out-pointer.
        unsafe { libc::getrlimit(resource, &mut limit) };
        limit.rlim_cur as u64
    };
    match (get(libc::RLIMIT_CORE), get(libc::RLIMIT_NOFILE)) {
        (0, n) if n == OPEN_FILES => Ok(()),
        (core, files) => Err(format!(
            "core {core}, open files {files}: the spawn limits did not apply"
        )),
    }
}
