//! What a researcher asks the grid to do, and the states a job goes through.

use serde::{Deserialize, Serialize};

/// `Queued → Auctioning → Assigned → Running → Completed | Failed | Cancelled | Expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Auctioning,
    Assigned,
    Running,
    Completed,
    Failed,
    Cancelled,
    Expired,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled | Self::Expired)
    }
}

/// The device a job needs, or a worker offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    #[default]
    Any,
    Cpu,
    Cuda,
}

impl DeviceKind {
    /// Whether a worker offering `self` can run a job asking for `wanted`.
    pub fn satisfies(self, wanted: DeviceKind) -> bool {
        wanted == DeviceKind::Any || wanted == self
    }
}

/// The loss menu; `Module` calls the model's exported `training_loss(x, y)` instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    CrossEntropy,
    Mse,
    L1,
    BceWithLogits,
    Nll,
    Module,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    Adamw,
}

/// Hyper-parameters with torch.optim's meaning and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerSpec {
    pub kind: OptimizerKind,
    pub lr: f64,
    #[serde(default)]
    pub momentum: f64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default)]
    pub nesterov: bool,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

/// How to train: everything the worker needs besides the model and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSpec {
    pub epochs: u32,
    pub batch_size: u32,
    pub loss: Loss,
    pub optimizer: OptimizerSpec,
    /// Batch order is a pure function of (seed, epoch).
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_true")]
    pub shuffle: bool,
    /// When the trainer takes a checkpoint (the result is taken at the end in any case).
    #[serde(default)]
    pub checkpoint_every: CheckpointEvery,
}

fn default_true() -> bool {
    true
}

/// How often a run checkpoints: after this much training time or this many optimizer steps.
/// A worker that is lost is paid for the steps up to its last checkpoint the broker verified,
/// and the job resumes there, so a longer interval costs more work redone per failure, and a
/// shorter one costs more checkpoint traffic. On the wire: `{"secs": 30.0}` or `{"steps": 500}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointEvery {
    Secs(f64),
    Steps(u64),
}

/// Seconds of training between checkpoints unless the job says otherwise.
pub const DEFAULT_CHECKPOINT_SECS: f64 = 30.0;
/// The shortest time-based interval a job may ask for.
pub const MIN_CHECKPOINT_SECS: f64 = 1.0;

impl Default for CheckpointEvery {
    fn default() -> Self {
        Self::Secs(DEFAULT_CHECKPOINT_SECS)
    }
}

impl TrainingSpec {
    /// Optimizer steps in one epoch of `samples` rows: the last batch may be short.
    pub fn steps_per_epoch(&self, samples: u64) -> u64 {
        samples.div_ceil(u64::from(self.batch_size.max(1)))
    }

    /// Optimizer steps of the whole job.
    pub fn total_steps(&self, samples: u64) -> u64 {
        self.steps_per_epoch(samples).saturating_mul(u64::from(self.epochs))
    }
}

/// The constraints of the reverse auction. Money is in micro-credits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requirements {
    #[serde(default)]
    pub device: DeviceKind,
    #[serde(default)]
    pub min_memory_bytes: u64,
    /// Highest acceptable price per device-hour.
    pub max_price_per_hour: u64,
    /// Most the researcher will pay for the whole job.
    pub budget: u64,
    /// Unix milliseconds by which the job must be done; 0 = none.
    #[serde(default)]
    pub deadline_ms: u64,
}

/// The work a job declares so that workers can estimate their time:
/// parameters × samples × epochs "parameter-samples".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredWork {
    pub parameters: u64,
    pub samples: u64,
    pub epochs: u32,
}

/// Seconds a worker adds to its compute estimate for fetching artifacts and starting up.
pub const FIXED_OVERHEAD_SECS: f64 = 5.0;

impl DeclaredWork {
    pub fn parameter_samples(&self) -> f64 {
        self.parameters as f64 * self.samples as f64 * self.epochs as f64
    }

    /// The ETA a worker measuring `throughput` parameter-samples/s quotes for this work. Broker
    /// (to rank invitees) and worker (to bid) use this same estimate.
    pub fn eta_secs(&self, throughput: f64) -> f64 {
        let compute = if throughput > 0.0 {
            self.parameter_samples() / throughput
        } else {
            f64::INFINITY
        };
        compute + FIXED_OVERHEAD_SECS
    }
}

/// Micro-credits for `eta_secs` at `price_per_hour` micro-credits, rounded up.
pub fn cost(price_per_hour: u64, eta_secs: f64) -> u64 {
    if !eta_secs.is_finite() || eta_secs < 0.0 {
        return u64::MAX;
    }
    let micro = (price_per_hour as f64) * eta_secs / 3600.0;
    if micro >= u64::MAX as f64 {
        u64::MAX
    } else {
        micro.ceil() as u64
    }
}
