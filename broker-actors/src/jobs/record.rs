//! A job's durable record (the value in the `helium_jobs` KV bucket) and the pure rules around
//! it: what a valid submission is, and how a held price is split when a run ends.

use helium_protocol::{
    api::{JobView, SubmitJob},
    artifacts::ArtifactInfo,
    state::{validate_manifest, TensorSpec},
    job::{CheckpointEvery, DeclaredWork, Requirements, TrainingSpec, MIN_CHECKPOINT_SECS},
    limits::{JOB_RECORD_GROWTH_BYTES, MAX_JOB_RECORD_BYTES},
    ErrorCode, WireError,
};
use serde::{Deserialize, Serialize};

use super::core::Reason;

/// The award in force: who trains, for how much.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwardRecord {
    pub award_id: String,
    /// 1-based award number within the job; ledger transfer ids derive from it.
    pub n: u32,
    pub worker_id: String,
    pub owner: String,
    pub price: u64,
    pub eta_secs: f64,
    /// The throughput the winner's ask advertised (parameter-samples/s); 0 in records from
    /// before it was kept, whose claims are then not held to a pace.
    #[serde(default)]
    pub throughput: f64,
    /// Epochs already done (and paid) before this award started.
    pub start_epoch: u32,
    /// Optimizer steps already done (and paid) before this award started: where it resumes.
    #[serde(default)]
    pub start_step: u64,
    /// Whether the hold (`hold.<job>.<n>`) is known to be in escrow. An award is recorded
    /// before its hold is asked for, so that a restart asks again under the same id (the
    /// ledger applies an id once) instead of guessing.
    #[serde(default = "yes")]
    pub held: bool,
    /// How long the award has been in force (ms, measured on the broker's monotonic clock, as
    /// of the record's last write): checkpoints and results are judged against it.
    #[serde(default)]
    pub elapsed_ms: u64,
    /// Whether this award's settlement transfers (pay and refund) are known to be applied.
    pub settled: bool,
    /// Steps of this award to pay for, once settlement was decided. The decision is persisted
    /// (with the state it implies) before the transfers are made; a restart makes the same
    /// transfers again, under the same ids, until they are known to be applied.
    #[serde(default)]
    pub settle_steps: Option<u64>,
    /// Result uploaded by this award's worker and verified on commit.
    #[serde(default)]
    pub stored_result: Option<ArtifactInfo>,
    /// Checkpoints this award's worker uploaded and the broker verified on commit, newest
    /// last, not yet named by a `checkpoint` run event: the worker uploads the next one while
    /// the event of the last travels through the stream. At most [`STORED_CHECKPOINTS`].
    #[serde(default)]
    pub stored_checkpoints: Vec<ArtifactInfo>,
    /// Checkpoints this award's worker stored (the quota per award bounds them).
    #[serde(default)]
    pub checkpoint_uploads: u32,
}

/// The newest checkpoint the broker verified: where the job resumes, and what a worker that
/// does not finish is paid up to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// Epochs complete at `step`.
    pub epoch: u32,
    pub step: u64,
    pub artifact: ArtifactInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub view: JobView,
    pub training: TrainingSpec,
    pub requirements: Requirements,
    pub work: DeclaredWork,
    pub model: ArtifactInfo,
    pub data: ArtifactInfo,
    /// Awards made (accepted or not); transfer ids derive from this counter.
    pub awards: u32,
    /// Awards a worker accepted; [`MAX_AWARDS`] bounds these.
    #[serde(default)]
    pub accepted_awards: u32,
    pub award: Option<AwardRecord>,
    pub checkpoint: Option<CheckpointRecord>,
    /// Workers that failed this job through their own fault; it does not invite them again.
    #[serde(default)]
    pub excluded_workers: Vec<String>,
    /// The model's parameters and buffers as submitted: what every result and checkpoint
    /// must match. Empty only in records from before state manifests, whose uploads are
    /// refused.
    #[serde(default)]
    pub state: Vec<TensorSpec>,
    /// Why the job is in its state (typed; `view.reason` is its text).
    #[serde(default)]
    pub reason: Option<Reason>,
    /// Whether a finished job's escrow is known to be empty.
    #[serde(default)]
    pub swept: bool,
}

fn yes() -> bool {
    true
}

/// Verified checkpoint uploads an award keeps waiting for their run event.
pub const STORED_CHECKPOINTS: usize = 4;

/// What a record holds besides the submission, at most (view, artifact infos, counters).
const RECORD_FIXED_BYTES: usize = 4096;

/// Accepted awards a job may go through (lost workers, preemptions) before it fails.
pub const MAX_AWARDS: u32 = 10;

/// Checks a submission's numbers; the loss and optimizer names were checked by decoding.
pub fn validate(req: &SubmitJob, now_ms: u64) -> Result<(), WireError> {
    let t = &req.training;
    let o = &t.optimizer;
    let bad = |m: &str| Err(WireError::bad_request(m.to_string()));
    if t.epochs == 0 || t.epochs > 100_000 {
        return bad("epochs must be between 1 and 100000");
    }
    if t.batch_size == 0 {
        return bad("batch_size must be at least 1");
    }
    if !(o.lr.is_finite() && o.lr > 0.0) {
        return bad("lr must be a positive number");
    }
    if !(o.momentum.is_finite() && (0.0..1.0).contains(&o.momentum)) {
        return bad("momentum must be in [0, 1)");
    }
    if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
        return bad("weight_decay must be ≥ 0");
    }
    if !((0.0..1.0).contains(&o.beta1) && (0.0..1.0).contains(&o.beta2)) {
        return bad("betas must be in [0, 1)");
    }
    if !(o.eps.is_finite() && o.eps > 0.0) {
        return bad("eps must be positive");
    }
    match t.checkpoint_every {
        CheckpointEvery::Secs(s) if !(s.is_finite() && s >= MIN_CHECKPOINT_SECS) => {
            return bad("checkpoint_every must be at least 1 second");
        }
        CheckpointEvery::Steps(0) => return bad("checkpoint_every must be at least 1 step"),
        _ => {}
    }
    validate_requirements(&req.requirements, now_ms)?;
    if req.work.epochs != t.epochs {
        return bad("declared work epochs differ from training epochs");
    }
    if req.name.as_ref().is_some_and(|n| n.len() > 200) {
        return bad("name is longer than 200 characters");
    }
    validate_manifest(&req.state).map_err(|e| WireError::new(ErrorCode::InvalidModel, format!("state: {e}")))?;
    // The record holds the request; what a job adds later (reasons, awards, checkpoints) must
    // still fit the bucket's largest value.
    let room = (MAX_JOB_RECORD_BYTES as usize).saturating_sub(JOB_RECORD_GROWTH_BYTES + RECORD_FIXED_BYTES);
    let size = helium_protocol::encode(req).len();
    if size > room {
        return Err(WireError::new(
            ErrorCode::TooLarge,
            format!("the job's description (mostly its state manifest) takes {size} bytes, over the {room} a job record has room for"),
        ));
    }
    Ok(())
}

/// Checks a job's constraints (a submission's, or a quote's).
pub fn validate_requirements(r: &Requirements, now_ms: u64) -> Result<(), WireError> {
    let bad = |m: &str| Err(WireError::bad_request(m.to_string()));
    if r.budget == 0 {
        return bad("budget must be positive");
    }
    if r.max_price_per_hour == 0 {
        return bad("max_price must be positive");
    }
    if r.deadline_ms != 0 && r.deadline_ms <= now_ms {
        return bad("deadline is in the past");
    }
    Ok(())
}

/// How a held `price` splits when an award ends: the owner is paid for the fraction of the
/// award's optimizer steps that are done and checkpointed (all of it on completion), the rest
/// goes back.
pub fn settlement(price: u64, award_steps: u64, paid_steps: u64) -> (u64, u64) {
    if award_steps == 0 {
        return (0, price);
    }
    let paid_steps = paid_steps.min(award_steps);
    let pay = (u128::from(price) * u128::from(paid_steps) / u128::from(award_steps)) as u64;
    (pay, price - pay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settlement_pays_checkpointed_fraction() {
        assert_eq!(settlement(100, 10, 10), (100, 0));
        assert_eq!(settlement(100, 10, 3), (30, 70));
        assert_eq!(settlement(100, 3, 1), (33, 67));
        assert_eq!(settlement(100, 10, 0), (0, 100));
        assert_eq!(settlement(u64::MAX, 3, 2).0 + settlement(u64::MAX, 3, 2).1, u64::MAX);
    }
}
