//! The tch trainer that runs one job inside the `helium-worker train` child process.
//!
//! TorchScript is a program from a stranger, so the worker agent runs training in a child
//! process it can limit and kill (DESIGN §7); this module is that child. It reads a job
//! directory, trains, checkpoints each epoch, writes `result.safetensors` (tensors only), and reports one JSON line per
//! event on stdout ([`report::TrainerEvent`]); logs go to stderr.
//!
//! The job directory holds `spec.json` (a [`helium_protocol::job::TrainingSpec`]), `model.pt`
//! (TorchScript), `data.safetensors` (`x`, `y`, optionally `x_val`, `y_val`) and, to continue a
//! run, `resume.safetensors` (a checkpoint this trainer wrote).
//!
//! # Layout
//! - [`session`]: the job, from the directory to `result.safetensors`;
//! - [`model`]: the TorchScript module made trainable;
//! - [`data`]: the data set and the batch order, a pure function of (seed, epoch);
//! - [`loss`]: the loss menu, with torch's semantics;
//! - [`optim`]: SGD, Adam, AdamW as torch.optim computes them, with saveable state;
//! - [`checkpoint`]: the safetensors checkpoint and its tensor names;
//! - [`report`]: the stdout protocol to the agent;
//! - [`bench`](mod@bench): the start-up throughput benchmark;
//! - [`error`]: why a run failed, in words.

pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod loss;
pub mod model;
pub mod optim;
pub mod report;
pub mod session;

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tch::Device;

pub use bench::benchmark;
pub use error::TrainError;
pub use report::TrainerEvent;

/// Where to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DeviceChoice {
    /// CUDA when this machine has it, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

/// `helium-worker train (--job-dir DIR | --job-dir-from-stdin) [--device cpu|cuda|auto] [--threads N]`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct TrainArgs {
    /// Directory with spec.json, model.pt, data.safetensors and optionally resume.safetensors.
    #[arg(
        long,
        required_unless_present = "job_dir_from_stdin",
        conflicts_with = "job_dir_from_stdin"
    )]
    pub job_dir: Option<PathBuf>,
    /// Load libtorch, then read the job as one line on stdin (a warm spare child):
    /// `<cpu-secs> <file-bytes> <job dir>`, its limits and directory; exit quietly if stdin
    /// closes first.
    #[arg(long)]
    pub job_dir_from_stdin: bool,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Intra-op CPU threads for libtorch (default: libtorch's choice, one per core).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Landlock and seccomp, entered once the job directory is known, before the model loads
    /// (see [`crate::sandbox`]); `enforce` exits with status 3 if they cannot be.
    #[arg(long, value_enum, default_value_t = crate::sandbox::Mode::Enforce)]
    pub sandbox: crate::sandbox::Mode,
    /// Enter the sandbox, test it, print what holds as one JSON line, and exit.
    #[arg(long)]
    pub sandbox_probe: bool,
    /// The probe's target outside the sandbox: the agent's pid…
    #[arg(long, hide = true, requires = "sandbox_probe")]
    pub probe_agent_pid: Option<i32>,
    /// …and its IPC namespace (`ipc:[…]`).
    #[arg(long, hide = true, requires = "sandbox_probe")]
    pub probe_agent_ipc: Option<String>,
}

/// A spare's job line: `<cpu-secs> <file-bytes> <job dir>` (the directory may hold spaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLine {
    pub cpu_secs: u64,
    pub file_bytes: u64,
    pub dir: PathBuf,
}

impl JobLine {
    /// The line the agent writes to a spare's stdin, newline included.
    pub fn encode(&self) -> Vec<u8> {
        let mut line = format!("{} {} ", self.cpu_secs, self.file_bytes).into_bytes();
        line.extend_from_slice(self.dir.as_os_str().as_encoded_bytes());
        line.push(b'\n');
        line
    }

    /// The line without its newline; `None` if it is not one.
    pub fn parse(line: &[u8]) -> Option<JobLine> {
        use std::os::unix::ffi::OsStrExt;
        let mut parts = line.splitn(3, |&b| b == b' ');
        let number = |p: Option<&[u8]>| std::str::from_utf8(p?).ok()?.parse::<u64>().ok();
        let cpu_secs = number(parts.next())?;
        let file_bytes = number(parts.next())?;
        let dir = parts.next().filter(|d| !d.is_empty())?;
        Some(JobLine {
            cpu_secs,
            file_bytes,
            dir: PathBuf::from(std::ffi::OsStr::from_bytes(dir)),
        })
    }
}

/// Trains the job in `args.job_dir`, printing `started`, `progress`… `completed` on stdout.
///
/// On error the `failed` line has already been printed when this returns; the caller only
/// has to exit non-zero.
///
/// Stdout is reserved for the events: file descriptor 1 is pointed at stderr for the rest of
/// the process, so output of the model itself goes to the logs.
pub fn run(args: &TrainArgs, job_dir: &Path) -> Result<(), TrainError> {
    keep_freed_memory();
    let result = report::reserve_stdout()
        .map_err(TrainError::Report)
        .and_then(|()| setup(args))
        .and_then(|device| session::train(job_dir, device));
    if let Err(e) = &result {
        tracing::error!(job_dir = %job_dir.display(), error = %e, "training failed");
        let _ = TrainerEvent::Failed { reason: e.to_string() }.emit();
    }
    result
}

/// The job of a spare child: one line on stdin, or `None` once stdin closed.
fn job_from_stdin() -> std::io::Result<Option<JobLine>> {
    use std::io::BufRead;
    // Paths longer than PATH_MAX are refused by the kernel anyway.
    const MAX_LINE: u64 = 4096 + 64;
    let mut line = Vec::new();
    std::io::stdin().lock().take(MAX_LINE).read_until(b'\n', &mut line)?;
    if line.pop() != Some(b'\n') || line.is_empty() {
        return Ok(None);
    }
    JobLine::parse(&line)
        .map(Some)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not a job line"))
}

/// Keeps memory that libtorch frees in the process for its next allocation instead of handing
/// it back to the kernel. Every step allocates and frees the same temporaries (an optimizer's
/// intermediate of a 1024×1024 layer is 4 MiB); by default glibc serves those with `mmap`, or
/// trims them off the heap, and the kernel then zero-fills fresh pages on every step: a
/// profile of a 1024-wide MLP had most of its time in page faults, and this setting more than
/// doubled its samples/s (docs/BENCHMARKS.md). Memory stays at the run's peak, which a
/// training child reaches in its first step anyway.
fn keep_freed_memory() {
    // glibc's largest mmap threshold (larger requests are still mapped, and unmapped on free).
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;
    // SAFETY: mallopt only sets allocator parameters; it is called before training allocates.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

/// Whether libtorch sees a usable CUDA device.
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

fn setup(args: &TrainArgs) -> Result<Device, TrainError> {
    if let Some(n) = args.threads {
        if n < 1 {
            return Err(TrainError::Device(format!("--threads must be at least 1, got {n}")));
        }
        tch::set_num_threads(n);
    }
    match args.device {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(if cuda_available() { Device::Cuda(0) } else { Device::Cpu }),
        DeviceChoice::Cuda if cuda_available() => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => Err(TrainError::Device(
            "CUDA was asked for but libtorch sees no CUDA device here".into(),
        )),
    }
}

#[derive(Debug, clap::Parser)]
#[command(name = "helium-worker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Train one job directory (run by the worker agent as a child process).
    Train(TrainArgs),
}

/// A complete `main` for `helium-worker train …`: parses `argv` (program name first), sends
/// logs to stderr, trains, and maps the outcome to the exit status.
pub fn cli_main<I, T>(argv: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    use clap::Parser;
    use crate::sandbox::{pidns, EXIT_NO_SANDBOX};
    // First, while this process is one thread: a trainer spawned into a new pid namespace
    // forks its pid 1 there, and this process waits for it (sandbox::pidns).
    match pidns::become_pid_one() {
        Ok(pidns::Role::Trainer) => {}
        Ok(pidns::Role::KeeperDone(status)) => pidns::mirror(status),
        Err(e) => {
            eprintln!("helium-worker train: cannot enter the trainer's pid namespace: {e}");
            return ExitCode::from(EXIT_NO_SANDBOX);
        }
    }
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let Command::Train(args) = cli.command;
    let job_dir = match (&args.job_dir, args.job_dir_from_stdin) {
        (Some(dir), _) => dir.clone(),
        (None, _) => match job_from_stdin() {
            Ok(Some(job)) => {
                // Before any of the job's code runs: the limits the agent would have set.
                if let Err(e) = crate::sandbox::spawn::limit_self(job.cpu_secs, job.file_bytes) {
                    eprintln!("helium-worker train: cannot set the job's limits: {e}");
                    if args.sandbox == crate::sandbox::Mode::Enforce {
                        return ExitCode::from(EXIT_NO_SANDBOX);
                    }
                }
                job.dir
            }
            // The agent let its spare go without a job: nothing to report.
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("helium-worker train: reading the job from stdin: {e}");
                return ExitCode::from(2);
            }
        },
    };
    // Relative paths a model opens land in its job directory, never in the worker's cwd.
    let job_dir = match job_dir.canonicalize() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("helium-worker train: the job directory {}: {e}", job_dir.display());
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::env::set_current_dir(&job_dir) {
        eprintln!("helium-worker train: cannot enter the job directory {}: {e}", job_dir.display());
        return ExitCode::from(2);
    }
    if args.sandbox_probe {
        let outside = crate::sandbox::probe_checks::Outside {
            agent_pid: args.probe_agent_pid.unwrap_or(0),
            agent_ipc: args.probe_agent_ipc.clone().unwrap_or_default(),
        };
        return crate::sandbox::probe::child_main(&job_dir, args.device, &outside);
    }
    if let Err(reason) = crate::sandbox::enter(&job_dir, args.device, args.sandbox) {
        eprintln!("helium-worker train: cannot sandbox the trainer: {reason}");
        return ExitCode::from(EXIT_NO_SANDBOX);
    }
    match run(&args, &job_dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn parses_the_child_command_line() {
        let cli = Cli::try_parse_from([
            "helium-worker",
            "train",
            "--job-dir",
            "/j",
            "--device",
            "cpu",
            "--threads",
            "1",
        ])
        .unwrap();
        let Command::Train(args) = cli.command;
        assert_eq!(
            args,
            TrainArgs {
                job_dir: Some("/j".into()),
                job_dir_from_stdin: false,
                device: DeviceChoice::Cpu,
                threads: Some(1),
                sandbox: crate::sandbox::Mode::Enforce,
                sandbox_probe: false,
                probe_agent_pid: None,
                probe_agent_ipc: None,
            }
        );
        let cli = Cli::try_parse_from(["helium-worker", "train", "--job-dir", "/j"]).unwrap();
        let Command::Train(args) = cli.command;
        assert_eq!(args.device, DeviceChoice::Auto);
        let cli = Cli::try_parse_from(["helium-worker", "train", "--job-dir-from-stdin"]).unwrap();
        let Command::Train(args) = cli.command;
        assert!(args.job_dir_from_stdin && args.job_dir.is_none());
        assert!(
            Cli::try_parse_from(["helium-worker", "train"]).is_err(),
            "a job dir is required"
        );
        assert!(Cli::try_parse_from(["helium-worker", "train", "--job-dir", "/j", "--job-dir-from-stdin"]).is_err());
    }

    #[test]
    fn a_job_line_round_trips_with_spaces_in_the_directory() {
        let job = JobLine {
            cpu_secs: 630,
            file_bytes: 1 << 30,
            dir: "/work dir/award 1".into(),
        };
        let line = job.encode();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(JobLine::parse(&line[..line.len() - 1]), Some(job));
        for bad in [&b"/j"[..], b"1 /j", b"x 1 /j", b"1 2 ", b"-1 2 /j"] {
            assert_eq!(JobLine::parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
