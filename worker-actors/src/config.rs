//! The worker's one configuration struct: every flag has an environment variable.

use std::path::PathBuf;

use clap::Parser;

use crate::trainer::DeviceChoice;

pub const DEFAULT_GRID: &str = "nats://127.0.0.1:4222";
/// Seconds the start-up benchmark trains for.
pub const BENCHMARK_SECS: f64 = 1.0;

/// `helium-worker --grid <url> --price <credits/hour>`: rent this machine's GPU (or CPU) out.
#[derive(Debug, Clone, Parser)]
#[command(name = "helium-worker", version)]
pub struct WorkerConfig {
    /// NATS URL of the grid; for a cluster, several URLs separated by commas.
    #[arg(long, env = "HELIUM_GRID", default_value = DEFAULT_GRID)]
    pub grid: String,
    /// Asking price in credits per device-hour.
    #[arg(long, env = "HELIUM_PRICE")]
    pub price: f64,
    /// This worker's NATS credential (`helium creds issue worker <id> --owner <principal>`):
    /// it names the worker's id and the owner whose account earns the credits.
    #[arg(long, env = "HELIUM_CREDS")]
    pub creds: PathBuf,
    /// A CA certificate (PEM) to trust for the grid's TLS certificate, and require TLS.
    #[arg(long, env = "HELIUM_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    #[arg(long, env = "HELIUM_DEVICE", value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Device memory to advertise, GiB (default: the machine's RAM for CPU workers).
    #[arg(long, env = "HELIUM_MEMORY_GB")]
    pub memory_gb: Option<f64>,
    /// Parameter-samples/s to advertise instead of running the start-up benchmark.
    #[arg(long, env = "HELIUM_THROUGHPUT")]
    pub throughput: Option<f64>,
    /// Where job directories live (default: a temporary directory).
    #[arg(long, env = "HELIUM_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// CPU threads the trainer uses (default: every core this process may run on).
    #[arg(long, env = "HELIUM_THREADS", value_parser = clap::value_parser!(i32).range(1..=4096))]
    pub threads: Option<i32>,
    /// Memory limit for the training child, GiB (RLIMIT_AS; CPU workers only). Default: the
    /// memory this worker advertises plus what libtorch needs (`sandbox::limits`).
    #[arg(long, env = "HELIUM_CHILD_MEMORY_GB")]
    pub child_memory_gb: Option<f64>,
    /// Take jobs even where this machine cannot sandbox the trainer (no user or network
    /// namespaces, no Landlock, no seccomp): the worker then runs them with the layers it has
    /// and its ask says which. Without it such a worker refuses to start.
    #[arg(long, env = "HELIUM_ALLOW_UNSANDBOXED")]
    pub allow_unsandboxed: bool,
}

impl WorkerConfig {
    /// `--threads`, or every core this process may run on.
    pub fn training_threads(&self) -> i32 {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| i32::try_from(n.get()).unwrap_or(i32::MAX))
        })
    }

    pub fn price_micro(&self) -> u64 {
        (self.price.max(0.0) * helium_protocol::limits::MICRO_PER_CREDIT as f64).round() as u64
    }
}

/// Total RAM from /proc/meminfo, in bytes (0 if unknown).
pub fn machine_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}
