//! What the awarded worker reports: its run's events and its verified uploads. Only what the
//! broker verified counts — a checkpoint or result it stored after checking names, shapes,
//! size and digest — and no further than the time since the award makes plausible.

use helium_protocol::{
    api::JobEventKind,
    artifacts::{self, ArtifactInfo},
    job::JobState,
    subjects::keys,
    worker::{RunEvent, RunEventKind},
    ErrorCode, WireError,
};

use super::{Effect, Job, Reason, Track, PLAUSIBLE_SPEEDUP};
use crate::jobs::record::{AwardRecord, CheckpointRecord, STORED_CHECKPOINTS};

/// The step of a `checkpoints/<step>` artifact name.
pub(super) fn checkpoint_step(name: &str) -> Option<u64> {
    name.strip_prefix(artifacts::CHECKPOINTS)?.parse().ok()
}

/// Same size and digest: names differ between what a worker echoes and what the broker stored.
fn same_bytes(a: &ArtifactInfo, b: &ArtifactInfo) -> bool {
    a.size == b.size && a.sha256 == b.sha256
}

impl Job {
    /// Milliseconds the award in force has been in force, on the monotonic clock.
    fn elapsed_ms(&self, a: &AwardRecord) -> u64 {
        self.mem
            .award_clock
            .map_or(a.elapsed_ms, |(since, then)| then.saturating_add(self.mem.mono.saturating_sub(since)))
    }

    fn elapsed_secs(&self, a: &AwardRecord) -> f64 {
        self.elapsed_ms(a) as f64 / 1000.0
    }

    /// The most steps of `a` its worker can plausibly have trained by now: at
    /// `PLAUSIBLE_SPEEDUP` times the pace its own ask advertised (parameter-samples per second
    /// over the declared parameters and the batch), all of them at most.
    fn plausible_steps(&self, a: &AwardRecord) -> u64 {
        let steps = self.award_steps(a);
        let per_step = self.record.work.parameters as f64 * f64::from(self.record.training.batch_size);
        if !(a.throughput.is_finite() && a.throughput > 0.0 && per_step > 0.0) {
            return steps;
        }
        let pace = PLAUSIBLE_SPEEDUP * a.throughput / per_step; // steps per second
        let plausible = (pace * self.elapsed_secs(a)).ceil();
        if plausible >= steps as f64 {
            steps
        } else {
            plausible as u64
        }
    }

    pub(super) fn run_event(
        &mut self,
        fx: &mut Vec<Effect>,
        worker_id: &str,
        event: RunEvent,
        now: u64,
    ) -> Result<(), WireError> {
        let Some(award) = self.record.award.clone() else {
            return Err(WireError::new(ErrorCode::Unauthorized, "job has no award"));
        };
        if award.worker_id != worker_id {
            return Err(WireError::new(
                ErrorCode::Unauthorized,
                format!("job {} is not awarded to {worker_id}", self.job_id()),
            ));
        }
        let over = award.settle_steps.is_some() || !award.held || self.state().is_terminal();
        if award.award_id != event.award_id || over {
            return Ok(()); // a stale run's late (or redelivered) event: acknowledged, ignored
        }
        let elapsed = self.elapsed_ms(&award);
        if let Some(a) = self.record.award.as_mut() {
            a.elapsed_ms = elapsed; // written with whatever this event changes
        }
        match event.kind {
            RunEventKind::Started { parameters, .. } => {
                let declared = self.record.work.parameters;
                if let Some(actual) = parameters.filter(|&p| p > declared.saturating_add(declared / 100)) {
                    // The price was computed for the declared work; a bigger model would be
                    // trained below cost. The worker is stopped and paid nothing.
                    self.abandon(fx, Track::Neutral);
                    self.move_to(fx, JobState::Failed, Some(Reason::LargerThanDeclared { actual, declared }));
                    self.finish_if_done(fx);
                    return Ok(());
                }
                self.accepted_by_run();
                self.move_to(fx, JobState::Running, None);
            }
            RunEventKind::Progress {
                epoch,
                epochs,
                step,
                loss,
                samples_per_sec,
                val_loss,
                val_accuracy,
            } => {
                if epoch > self.record.work.epochs || epoch < self.record.view.epochs_done {
                    return Err(WireError::bad_request(format!("epoch {epoch} is out of range")));
                }
                self.accepted_by_run();
                self.move_to(fx, JobState::Running, None);
                self.record.view.epochs_done = epoch;
                self.record.view.last_loss = loss.is_finite().then_some(loss);
                fx.push(Effect::Publish(JobEventKind::Progress {
                    epoch,
                    epochs,
                    step: Some(step),
                    loss,
                    samples_per_sec,
                    val_loss,
                    val_accuracy,
                }));
            }
            RunEventKind::Checkpoint {
                step,
                epoch,
                checkpoint,
            } => {
                self.accept_checkpoint(fx, &award, step, epoch, &checkpoint)?;
                fx.push(Effect::Publish(JobEventKind::Checkpointed { step, epoch }));
            }
            RunEventKind::Completed { result } => {
                if !award.stored_result.as_ref().is_some_and(|s| same_bytes(s, &result)) {
                    return Err(WireError::new(
                        ErrorCode::DigestMismatch,
                        "completed without a verified result upload",
                    ));
                }
                let plausible = self.plausible_steps(&award) >= self.award_steps(&award);
                if !plausible {
                    // Faster than its own ask's pace allows: not believed. The result is not
                    // taken; the worker is paid its checkpoints and not invited again.
                    let why = format!(
                        "claimed to finish {} steps in {:.1} s, over {PLAUSIBLE_SPEEDUP} times the pace its ask advertises",
                        self.award_steps(&award),
                        self.elapsed_secs(&award),
                    );
                    self.worker_failed(fx, worker_id, why, now);
                    return Ok(());
                }
                self.accepted_by_run();
                self.record.view.epochs_done = self.record.work.epochs;
                self.record.view.result = Some(ArtifactInfo {
                    name: artifacts::RESULT.into(),
                    ..result
                });
                self.decide_settlement(fx, self.award_steps(&award), Track::Completed);
                self.move_to(fx, JobState::Completed, None);
                self.finish_if_done(fx);
            }
            RunEventKind::Failed {
                reason,
                worker_fault: false,
            } => {
                self.accepted_by_run();
                self.decide_settlement(fx, self.checkpointed_steps_of(&award), Track::Neutral);
                // A trainer stopped at its deadline (the worker's own backstop, when the broker
                // did not expire it first) ended because the deadline passed, not by failing.
                let deadline = self.record.requirements.deadline_ms;
                if deadline != 0 && now >= deadline {
                    let reason = Reason::DeadlinePassed {
                        waiting: None,
                        running: true,
                    };
                    self.move_to(fx, JobState::Expired, Some(reason));
                } else {
                    self.move_to(fx, JobState::Failed, Some(Reason::RunFailed { why: reason }));
                }
                self.finish_if_done(fx);
            }
            RunEventKind::Failed {
                reason,
                worker_fault: true,
            } => self.worker_failed(fx, worker_id, reason, now),
            // The worker stopped without being asked to: preemption.
            RunEventKind::Cancelled => self.worker_lost(fx, worker_id, now),
        }
        Ok(())
    }

    /// A run event shows the worker took the award even if its answer has not arrived (it
    /// then will be ignored).
    fn accepted_by_run(&mut self) {
        if self.state() == JobState::Auctioning {
            self.record.accepted_awards += 1;
            self.record.view.state = JobState::Assigned;
        }
    }

    /// Not invited again by this job: a worker that cannot do its part would win (and fail)
    /// every auction it is cheapest in.
    fn worker_failed(&mut self, fx: &mut Vec<Effect>, worker_id: &str, why: String, now: u64) {
        if !self.record.excluded_workers.iter().any(|w| w == worker_id) {
            self.record.excluded_workers.push(worker_id.to_string());
        }
        let reason = Reason::WorkerFailed {
            worker: worker_id.to_string(),
            why,
            resume_epoch: self.record.checkpoint.as_ref().map_or(0, |c| c.epoch),
        };
        self.requeue(fx, worker_id, reason, now);
    }

    /// A checkpoint counts (for payment and resume) only if this award's worker uploaded it,
    /// the broker verified its bytes on commit, and it moves the job forward consistently: a
    /// later step than the last checkpoint, within the job, with the epoch that step implies,
    /// and no further than plausible since the award. The checkpoint it supersedes is deleted.
    fn accept_checkpoint(
        &mut self,
        fx: &mut Vec<Effect>,
        award: &AwardRecord,
        step: u64,
        epoch: u32,
        artifact: &ArtifactInfo,
    ) -> Result<(), WireError> {
        let name = format!("{}{step}", artifacts::CHECKPOINTS);
        let verified = award
            .stored_checkpoints
            .iter()
            .find(|stored| stored.name == name && same_bytes(stored, artifact))
            .cloned()
            .ok_or_else(|| WireError::new(ErrorCode::DigestMismatch, format!("{name} was not uploaded and verified")))?;
        let last = self.record.checkpoint.as_ref().map_or(award.start_step, |c| c.step);
        // The last step has no checkpoint: the result stands for it.
        if step <= last || step >= self.total_steps() {
            return Err(WireError::bad_request(format!(
                "checkpoint at step {step} does not follow step {last} before the job's last step {}",
                self.total_steps()
            )));
        }
        let per_epoch = self.record.training.steps_per_epoch(self.record.work.samples);
        if per_epoch == 0 || u64::from(epoch) != step / per_epoch {
            return Err(WireError::bad_request(format!(
                "a checkpoint at step {step} is after {} complete epochs, not {epoch}",
                step / per_epoch.max(1)
            )));
        }
        let plausible = award.start_step.saturating_add(self.plausible_steps(award));
        if step > plausible {
            return Err(WireError::bad_request(format!(
                "a checkpoint at step {step} is ahead of what this award can have trained by now (step {plausible})"
            )));
        }
        let job_id = self.job_id().to_string();
        if let Some(old) = self.record.checkpoint.replace(CheckpointRecord {
            epoch,
            step,
            artifact: verified,
        }) {
            fx.push(Effect::Delete {
                key: keys::checkpoint(&job_id, old.step),
            });
        }
        if let Some(a) = self.record.award.as_mut() {
            // Uploads at or before this step can never count now: their objects go too.
            for stale in a.stored_checkpoints.iter().filter(|s| s.name != name && checkpoint_step(&s.name) <= Some(step)) {
                if let Some(s) = checkpoint_step(&stale.name) {
                    fx.push(Effect::Delete {
                        key: keys::checkpoint(&job_id, s),
                    });
                }
            }
            a.stored_checkpoints.retain(|s| checkpoint_step(&s.name) > Some(step));
        }
        Ok(())
    }

    /// Records a verified upload of the awarded worker, so that its run event can count it.
    /// Refused (and the caller deletes the object) when the award is over.
    pub(super) fn stored(
        &mut self,
        fx: &mut Vec<Effect>,
        worker_id: &str,
        name: &str,
        info: ArtifactInfo,
    ) -> Result<(), WireError> {
        let job_id = self.job_id().to_string();
        let terminal = self.state().is_terminal();
        let Some(a) = self
            .record
            .award
            .as_mut()
            .filter(|a| a.worker_id == worker_id && a.held && a.settle_steps.is_none() && !terminal)
        else {
            return Err(WireError::new(
                ErrorCode::Unauthorized,
                format!("job {job_id} is not awarded to {worker_id}"),
            ));
        };
        if name == artifacts::RESULT {
            a.stored_result = Some(info);
        } else if checkpoint_step(name).is_some() {
            a.checkpoint_uploads = a.checkpoint_uploads.saturating_add(1);
            a.stored_checkpoints.retain(|s| s.name != name);
            a.stored_checkpoints.push(info);
            let excess = a.stored_checkpoints.len().saturating_sub(STORED_CHECKPOINTS);
            for dropped in a.stored_checkpoints.drain(..excess) {
                if let Some(s) = checkpoint_step(&dropped.name) {
                    fx.push(Effect::Delete {
                        key: keys::checkpoint(&job_id, s),
                    });
                }
            }
        } else {
            return Err(WireError::bad_request(format!("{name} is not an artifact a worker stores")));
        }
        Ok(())
    }
}
