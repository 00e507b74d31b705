//! The Helium worker: a GPU owner's machine on the grid. The agent registers a standing ask,
//! bids in auctions and accepts awards; each award runs as a [`run::TrainingRun`] that trains
//! in a supervised `helium-worker train` child process with tch.
//!
//! # Layout
//! - [`agent`]: the WorkerAgent actor (register, heartbeat, bid, accept, cancel).
//! - [`run`]: the TrainingRun actor (fetch artifacts, supervise the child, report, upload).
//! - [`child`]: how the training child starts, and the warm spare.
//! - [`sandbox`]: the child's sandbox: namespaces, rlimits, Landlock, seccomp, the probe.
//! - [`transfer`]: chunked, digest-checked artifact transfer through the broker.
//! - [`uploader`]: a run's checkpoint uploads, one in flight, newest wins.
//! - [`jobfs`]: file access inside a job directory that no link the child planted escapes.
//! - [`trainer`]: the tch trainer that runs inside the child process.
//! - [`config`]: the binary's flags.
//! - [`owner`]: the owner's terms: idle-only, hours, largest job, price policy.
//! - [`status`]: the owner's status line.

pub mod agent;
pub mod child;
pub mod config;
pub mod jobfs;
pub mod owner;
pub mod run;
pub mod sandbox;
pub mod status;
pub mod trainer;
pub mod transfer;
pub mod uploader;

use helium_protocol::{job::DeviceKind, worker::Ask};

use config::{machine_memory_bytes, WorkerConfig, BENCHMARK_SECS};
use trainer::DeviceChoice;

/// Builds this worker's ask: device from libtorch, memory from the flag or the machine, and
/// throughput from the flag or a short start-up benchmark on the chosen device.
pub fn measure_ask(config: &WorkerConfig) -> Ask {
    let cuda = match config.device {
        DeviceChoice::Cpu => false,
        DeviceChoice::Cuda => true,
        DeviceChoice::Auto => trainer::cuda_available(),
    };
    let device = if cuda { tch::Device::Cuda(0) } else { tch::Device::Cpu };
    tch::set_num_threads(config.training_threads());
    let throughput = config
        .throughput
        .unwrap_or_else(|| trainer::benchmark(device, BENCHMARK_SECS));
    let memory_bytes = config
        .memory_gb
        .map(|g| (g * (1u64 << 30) as f64) as u64)
        .unwrap_or_else(machine_memory_bytes);
    Ask {
        price_per_hour: config.price_micro(),
        device: if cuda { DeviceKind::Cuda } else { DeviceKind::Cpu },
        device_name: if cuda { "cuda:0".into() } else { "cpu".into() },
        memory_bytes,
        throughput,
        // Filled in from the start-up sandbox probe.
        sandbox: Vec::new(),
    }
}
