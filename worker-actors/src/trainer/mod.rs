//! The tch trainer that runs one job inside the `helium-worker train` child process.
//!
//! TorchScript is a program from a stranger, so the worker agent runs training in a child
//! process it can limit and kill (DESIGN §7); this module is that child. It reads a job
//! directory, trains, checkpoints each epoch, writes `result.pt`, and reports one JSON line per
//! event on stdout ([`report::TrainerEvent`]); logs go to stderr.
//!
//! The job directory holds `spec.json` (a [`helium_protocol::job::TrainingSpec`]), `model.pt`
//! (TorchScript), `data.safetensors` (`x`, `y`, optionally `x_val`, `y_val`) and, to continue a
//! run, `resume.safetensors` (a checkpoint this trainer wrote).
//!
//! # Layout
//! - [`session`]: the job, from the directory to `result.pt`;
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
use std::path::PathBuf;
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

/// `helium-worker train --job-dir DIR [--device cpu|cuda|auto] [--threads N]`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct TrainArgs {
    /// Directory with spec.json, model.pt, data.safetensors and optionally resume.safetensors.
    #[arg(long)]
    pub job_dir: PathBuf,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Intra-op CPU threads for libtorch (default: libtorch's choice, one per core).
    #[arg(long)]
    pub threads: Option<i32>,
}

/// Trains the job in `args.job_dir`, printing `started`, `progress`… `completed` on stdout.
///
/// On error the `failed` line has already been printed when this returns; the caller only
/// has to exit non-zero.
///
/// Stdout is reserved for the events: file descriptor 1 is pointed at stderr for the rest of
/// the process, so output of the model itself goes to the logs.
pub fn run(args: &TrainArgs) -> Result<(), TrainError> {
    let result = report::reserve_stdout()
        .map_err(TrainError::Report)
        .and_then(|()| setup(args))
        .and_then(|device| session::train(&args.job_dir, device));
    if let Err(e) = &result {
        tracing::error!(job_dir = %args.job_dir.display(), error = %e, "training failed");
        let _ = TrainerEvent::Failed { reason: e.to_string() }.emit();
    }
    result
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
    match run(&args) {
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
                job_dir: "/j".into(),
                device: DeviceChoice::Cpu,
                threads: Some(1)
            }
        );
        let cli = Cli::try_parse_from(["helium-worker", "train", "--job-dir", "/j"]).unwrap();
        let Command::Train(args) = cli.command;
        assert_eq!(args.device, DeviceChoice::Auto);
    }
}
