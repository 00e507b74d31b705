//! The simulated workers: honest ones train at the pace their ask advertises, checkpoint every
//! five steps and upload their result; liars do what [`Lie`] says. What they upload is reported
//! to the job as the gateway would (`Input::Stored`, answered), what they report goes through
//! the durable run-event queue.

use helium_protocol::{
    artifacts::{self, ArtifactInfo},
    worker::{AwardAck, RunEvent, RunEventKind},
    PROTOCOL_VERSION,
};

use super::world::{Msg, World, AWARD_ANSWER_MS};
use crate::jobs::core::{Answer, Input};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lie {
    Honest,
    /// Completes at once with a result it uploaded.
    EarlyComplete,
    /// Claims a checkpoint at the job's last step, far beyond what it trained, then goes silent.
    CheckpointAhead,
    /// Says it completed without uploading a result.
    NoResult,
    /// Bids an ETA of (almost) nothing.
    EtaZero,
}

#[derive(Debug, Clone)]
pub(super) struct Run {
    pub(super) job: usize,
    pub(super) award_id: String,
    pub(super) start: u64,
    /// Steps truly trained (fractional: time moves in milliseconds).
    pub(super) step: f64,
    pub(super) total: u64,
    pub(super) per_epoch: u64,
    pub(super) last_checkpoint: u64,
    pub(super) steps_per_ms: f64,
}

#[derive(Debug, Clone)]
pub(super) struct Worker {
    pub(super) id: String,
    pub(super) owner: String,
    pub(super) price_per_hour: u64,
    pub(super) throughput: f64,
    pub(super) lie: Lie,
    pub(super) alive: bool,
    pub(super) paused_until: Option<u64>,
    /// The registry's view: reserved for this job.
    pub(super) reserved: Option<usize>,
    pub(super) run: Option<Run>,
}

impl World {
    pub(super) fn award(&mut self, j: usize, worker_id: &str, award: helium_protocol::worker::Award) {
        let Some(w) = self.workers.iter().position(|w| w.id == worker_id) else { return };
        let lost = self.faulty && self.rng.chance(self.opts.faults.loss);
        let worker = &self.workers[w];
        let free = worker.alive && worker.paused_until.is_none() && worker.run.is_none();
        if lost {
            let award_id = award.award_id.clone();
            self.send(AWARD_ANSWER_MS, Msg::ToJob(j, Input::AwardAnswered { award_id, answer: Err("no answer".into()) }));
            return;
        }
        if !free {
            let answer = Ok(AwardAck { accepted: false, reason: Some("busy".into()) });
            let d = self.delay();
            self.send(d, Msg::ToJob(j, Input::AwardAnswered { award_id: award.award_id, answer }));
            return;
        }
        let record = &self.jobs[j].job.record;
        let per_epoch = record.training.steps_per_epoch(record.work.samples).max(1);
        let total = record.training.total_steps(record.work.samples);
        let start = award.resume.as_ref().and_then(|r| r.name.strip_prefix(artifacts::CHECKPOINTS)?.parse().ok()).unwrap_or(0);
        let per_step_ms = record.work.parameters as f64 * f64::from(record.training.batch_size) / self.workers[w].throughput * 1000.0;
        let parameters = record.work.parameters;
        self.workers[w].run = Some(Run {
            job: j,
            award_id: award.award_id.clone(),
            start,
            step: start as f64,
            total,
            per_epoch,
            last_checkpoint: start,
            steps_per_ms: 1.0 / per_step_ms.max(1e-6),
        });
        let d = self.delay();
        let answer = Ok(AwardAck { accepted: true, reason: None });
        self.send(d, Msg::ToJob(j, Input::AwardAnswered { award_id: award.award_id.clone(), answer }));
        let started = RunEventKind::Started { device: "cpu".into(), parameters: Some(parameters) };
        self.run_event(w, started);
        if self.workers[w].lie == Lie::CheckpointAhead {
            self.train(w, 0); // claims the end before it trained anything
        }
    }

    fn run_event(&mut self, w: usize, kind: RunEventKind) {
        let Some(run) = self.workers[w].run.as_ref() else { return };
        let event = RunEvent {
            v: PROTOCOL_VERSION,
            job_id: self.jobs[run.job].job.job_id().to_string(),
            award_id: run.award_id.clone(),
            kind,
        };
        let (j, id) = (run.job, self.workers[w].id.clone());
        let d = self.delay();
        self.send(d, Msg::RunEvent(j, id, event));
    }

    /// A verified upload, as the gateway reports it to the job; false if refused or lost.
    fn upload(&mut self, w: usize, name: String) -> bool {
        let Some(run) = self.workers[w].run.clone() else { return false };
        if self.faulty && self.rng.chance(self.opts.faults.loss) {
            return false;
        }
        let info = ArtifactInfo { size: 64, sha256: format!("{:064x}", self.rng.next_u64()), name: name.clone() };
        let worker_id = self.workers[w].id.clone();
        let answer = self.feed(run.job, Input::Stored { worker_id, name: name.clone(), info: info.clone() });
        let ok = matches!(answer, Some(Answer::Ack(Ok(()))));
        if ok {
            if let Some(n) = run.award_id.rsplit('-').next().and_then(|n| n.parse::<u32>().ok()) {
                let truth = self.awards.entry((run.job, n)).or_default();
                match name.strip_prefix(artifacts::CHECKPOINTS).and_then(|s| s.parse().ok()) {
                    Some(step) => drop(truth.stored.insert(step)),
                    None => truth.result_stored = true,
                }
            }
        } else if matches!(answer, Some(Answer::Ack(Err(_)))) {
            // Refused: the award is over (a stale run); the worker stops it.
            self.workers[w].run = None;
        }
        ok
    }

    /// Worker `w` trains for `ms`; it checkpoints every 5 steps and finishes at the end.
    pub(super) fn train(&mut self, w: usize, ms: u64) {
        let worker = &self.workers[w];
        if !worker.alive || worker.paused_until.is_some() {
            return;
        }
        let lie = worker.lie;
        let Some(mut run) = worker.run.clone() else { return };
        run.step = (run.step + run.steps_per_ms * ms as f64).min(run.total as f64);
        self.workers[w].run = Some(run.clone());
        let j = run.job;
        if self.broken[j] && run.step >= 1.0 {
            let reason = "RuntimeError: shapes cannot be multiplied".to_string();
            self.run_event(w, RunEventKind::Failed { reason, worker_fault: false });
            self.workers[w].run = None;
            return;
        }
        if let Some(n) = run.award_id.rsplit('-').next().and_then(|n| n.parse::<u32>().ok()) {
            let truth = self.awards.entry((j, n)).or_default();
            truth.trained = truth.trained.max((run.step as u64).saturating_sub(run.start));
        }
        let every = 5;
        let claimed = |truth: u64| if lie == Lie::CheckpointAhead { run.total.saturating_sub(1) } else { truth };
        // The liar claims the end at its first chance, before it has trained a checkpoint's worth.
        let due = |r: &Run| if lie == Lie::CheckpointAhead { r.last_checkpoint == r.start } else { r.last_checkpoint + every <= r.step as u64 };
        while due(&run) && run.last_checkpoint + every < run.total && lie != Lie::EarlyComplete {
            run.last_checkpoint += every;
            let step = claimed(run.last_checkpoint);
            if let Some(r) = self.workers[w].run.as_mut() {
                r.last_checkpoint = run.last_checkpoint;
            }
            let name = format!("{}{step}", artifacts::CHECKPOINTS);
            if self.upload(w, name.clone()) {
                if let Some(checkpoint) = self.stored_info(j, &name) {
                    let epoch = (step / run.per_epoch) as u32;
                    self.run_event(w, RunEventKind::Checkpoint { step, epoch, checkpoint });
                }
                if lie == Lie::CheckpointAhead {
                    // Claimed the job's end; now it goes silent, hoping to be paid for it.
                    self.workers[w].run = None;
                    self.workers[w].alive = false;
                    self.lose(w);
                    self.send(10_000, Msg::Return(w));
                    return;
                }
            }
            if self.workers[w].run.is_none() {
                return;
            }
        }
        let finished = run.step as u64 >= run.total || lie == Lie::EarlyComplete;
        if finished {
            let result = if lie == Lie::NoResult {
                Some(ArtifactInfo { name: artifacts::RESULT.into(), size: 1, sha256: "0".repeat(64) })
            } else if self.upload(w, artifacts::RESULT.into()) {
                self.stored_info(j, artifacts::RESULT)
            } else {
                None
            };
            if let Some(result) = result {
                self.run_event(w, RunEventKind::Completed { result });
            }
            self.workers[w].run = None;
        }
    }

    /// What the job recorded for an upload of its award in force.
    fn stored_info(&self, j: usize, name: &str) -> Option<ArtifactInfo> {
        let award = self.jobs[j].job.record.award.as_ref()?;
        if name == artifacts::RESULT {
            return award.stored_result.clone();
        }
        award.stored_checkpoints.iter().find(|s| s.name == name).cloned()
    }
}
