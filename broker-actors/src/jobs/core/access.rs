//! Who may read and write a job's artifacts, as pure questions to the job: [`read_access`]
//! for reads (the researcher its own job's, the awarded worker its inputs and the checkpoint
//! to resume from), [`upload_target`] for a worker's uploads (its result, and checkpoints up
//! to the grid's quota per award).

use helium_protocol::{artifacts::{self, ArtifactInfo}, subjects::keys, ErrorCode, WireError};

use super::Job;
use crate::jobs::record::AwardRecord;

/// An award is in force from its hold until its settlement is decided.
fn in_force(a: &AwardRecord) -> bool {
    a.held && a.settle_steps.is_none()
}
use crate::artifacts::Caller;

/// May `caller` read artifact `name` of `job`? Its key and digest.
pub fn read_access(job: &Job, caller: &Caller, name: &str) -> Result<(String, ArtifactInfo), WireError> {
    let job_id = job.job_id();
    let not_found = || {
        WireError::new(
            ErrorCode::NotFound,
            format!("job {job_id} has no artifact {name} for you"),
        )
    };
    match caller {
        Caller::Researcher(p) if p == &job.record.view.principal => {}
        Caller::Worker(w)
            if job.record.award.as_ref().is_some_and(|a| &a.worker_id == w && in_force(a)) => {}
        _ => return Err(not_found()),
    }
    let checkpoint = job.record.checkpoint.as_ref();
    match name {
        artifacts::MODEL => Ok((keys::model(job_id), job.record.model.clone())),
        artifacts::DATA => Ok((keys::data(job_id), job.record.data.clone())),
        artifacts::RESULT => match (&job.record.view.result, caller) {
            (Some(info), Caller::Researcher(_)) => Ok((keys::result(job_id), info.clone())),
            _ => Err(not_found()),
        },
        other => match checkpoint {
            Some(c) if other == format!("{}{}", artifacts::CHECKPOINTS, c.step) => {
                Ok((keys::checkpoint(job_id, c.step), c.artifact.clone()))
            }
            _ => Err(not_found()),
        },
    }
}

/// Where may worker `worker_id` upload artifact `name` of `job`?
pub fn upload_target(job: &Job, worker_id: &str, name: &str) -> Result<String, WireError> {
    let job_id = job.job_id();
    let awarded = job.record.award.as_ref().is_some_and(|a| a.worker_id == worker_id && in_force(a));
    if !awarded || job.record.view.state.is_terminal() {
        return Err(WireError::new(
            ErrorCode::Unauthorized,
            format!("job {job_id} is not awarded to {worker_id}"),
        ));
    }
    if name == artifacts::RESULT {
        return Ok(keys::result(job_id));
    }
    let stored = job.record.award.as_ref().map_or(0, |a| a.checkpoint_uploads);
    let max = job.config.max_checkpoints_per_award;
    if name.starts_with(artifacts::CHECKPOINTS) && stored >= max {
        // Each checkpoint is an object in the store: the run goes on without more.
        return Err(WireError::new(
            ErrorCode::QuotaExceeded,
            format!("this award stored {stored} checkpoints, the most this grid allows per award ({max})"),
        ));
    }
    match name
        .strip_prefix(artifacts::CHECKPOINTS)
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(step) if step > job.record.checkpoint.as_ref().map_or(0, |c| c.step) && step < job.total_steps() => {
            Ok(keys::checkpoint(job_id, step))
        }
        Some(step) => Err(WireError::bad_request(format!(
            "checkpoint step {step} is not after the job's last checkpoint, or not before its last step {}",
            job.total_steps()
        ))),
        None => Err(WireError::bad_request(format!(
            "a worker uploads `result` or `checkpoints/<step>`, not `{name}`"
        ))),
    }
}
