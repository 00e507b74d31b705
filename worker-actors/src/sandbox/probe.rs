//! The start-up probe: which sandbox layers this machine gives a trainer, found by starting
//! one exactly as a job's trainer starts (best effort), letting it enter its sandbox, and
//! having it try what each layer forbids ([`super::probe_checks`]). A layer counts only if
//! the attempt fails. The probe also reports anything a trainer must never have whatever the
//! machine (an owner's environment variable, a terminal): a worker refuses to start on that.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use helium_protocol::worker::SandboxLayer;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::probe_checks::{self as check, Outside};
use super::{confine, pidns, seccomp, stderr, Mode};
use crate::child::ChildSpec;
use crate::trainer::DeviceChoice;

/// How long a probe trainer may take (it loads libtorch: about a second).
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the probe trainer found: the layers in force and, for each missing one, why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub layers: Vec<SandboxLayer>,
    pub missing: Vec<String>,
    /// What reached the trainer that never should (see [`check::exposures`]).
    #[serde(default)]
    pub exposed: Vec<String>,
}

impl ProbeReport {
    /// Every layer in force, and nothing exposed.
    pub fn complete(&self) -> bool {
        SandboxLayer::ALL.iter().all(|l| self.layers.contains(l)) && self.exposed.is_empty()
    }

    /// What keeps the report from being complete, in words.
    pub fn shortfalls(&self) -> Vec<String> {
        self.missing.iter().chain(&self.exposed).cloned().collect()
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
        .arg("--probe-agent-pid")
        .arg(std::process::id().to_string())
        .arg("--probe-agent-ipc")
        .arg(pidns::namespace("ipc").unwrap_or_default())
        .arg("--job-dir")
        .arg(dir.path())
        .stdin(Stdio::null());
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting the sandbox probe: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("the sandbox probe has no stdout")?;
    if let Some(err) = child.stderr.take() {
        let source = stderr::Source {
            job: "-".into(),
            award: "sandbox-probe".into(),
        };
        tokio::spawn(stderr::forward(err, source));
    }
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

/// The probe trainer's `main`: look at what it was given, check the namespaces, enter the
/// sandbox (best effort), try what each layer forbids, print the report as one JSON line on
/// stdout.
pub fn child_main(job_dir: &Path, device: DeviceChoice, outside: &Outside) -> ExitCode {
    let mut report = ProbeReport {
        exposed: check::exposures(),
        ..ProbeReport::default()
    };
    report.check(SandboxLayer::UserNamespace, check::own_user_namespace());
    report.check(SandboxLayer::NetworkNamespace, check::own_network_namespace());
    report.check(SandboxLayer::PidNamespace, check::own_pid_namespace(outside));
    report.check(SandboxLayer::IpcNamespace, check::own_ipc_namespace(outside));
    let landlock = confine::landlock(job_dir, device);
    let seccomp = seccomp::install();
    report.check(SandboxLayer::Landlock, landlock.and_then(|()| check::landlock_holds(job_dir)));
    report.check(SandboxLayer::Seccomp, seccomp.and_then(|()| check::seccomp_holds(outside)));
    report.check(SandboxLayer::Rlimits, check::rlimits_hold());
    match serde_json::to_string(&report) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(_) => ExitCode::FAILURE,
    }
}
