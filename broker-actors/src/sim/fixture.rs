//! A job record as a submission makes it, for the simulator and the core's unit tests.

use helium_protocol::{
    api::JobView,
    artifacts::ArtifactInfo,
    job::{CheckpointEvery, DeclaredWork, DeviceKind, JobState, Loss, OptimizerKind, OptimizerSpec, Requirements, TrainingSpec},
};

use crate::jobs::record::JobRecord;

pub fn info(name: &str) -> ArtifactInfo {
    ArtifactInfo {
        name: name.into(),
        size: 64,
        sha256: format!("{:064x}", name.len()),
    }
}

/// A queued job of `principal`: `epochs` epochs of `samples` samples at batch 10, with
/// `budget` micro-credits and a deadline (`0` for none).
pub fn record(job_id: &str, principal: &str, epochs: u32, samples: u64, budget: u64, deadline_ms: u64) -> JobRecord {
    let training = TrainingSpec {
        epochs,
        batch_size: 10,
        loss: Loss::CrossEntropy,
        optimizer: OptimizerSpec {
            kind: OptimizerKind::Sgd,
            lr: 0.1,
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        seed: 1,
        shuffle: true,
        checkpoint_every: CheckpointEvery::Steps(5),
    };
    JobRecord {
        view: JobView {
            job_id: job_id.into(),
            principal: principal.into(),
            name: None,
            state: JobState::Queued,
            reason: None,
            reason_code: None,
            worker: None,
            price: None,
            paid: 0,
            epochs,
            epochs_done: 0,
            last_loss: None,
            result: None,
            created_ms: 0,
            updated_ms: 0,
        },
        training,
        requirements: Requirements {
            device: DeviceKind::Any,
            min_memory_bytes: 0,
            max_price_per_hour: 1_000_000_000,
            budget,
            deadline_ms,
        },
        work: DeclaredWork {
            parameters: 1_000,
            samples,
            epochs,
        },
        model: info("model"),
        data: info("data"),
        awards: 0,
        accepted_awards: 0,
        award: None,
        checkpoint: None,
        excluded_workers: Vec::new(),
        state: Vec::new(),
        reason: None,
        swept: false,
    }
}
