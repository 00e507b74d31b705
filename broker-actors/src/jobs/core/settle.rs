//! Ending an award: how much of its hold the owner earned, and how the job goes on (DESIGN §5,
//! §6). The decision is made once and recorded; the transfers that carry it out are made (and
//! made again after a restart) under ids derived from the award, so each applies once.

use helium_protocol::{
    job::JobState,
    ledger::{escrow, user, Transfer},
    worker::{CancelRun, Settled},
    PROTOCOL_VERSION,
};

use super::{Effect, Job, Reason, Track, TransferOutcome};
use crate::jobs::record::{settlement, AwardRecord};

impl Job {
    /// Steps `award` was sold: from where it resumed to the end.
    pub(super) fn award_steps(&self, award: &AwardRecord) -> u64 {
        self.total_steps().saturating_sub(award.start_step)
    }

    /// Steps of `award` covered by the last verified checkpoint: what it is paid for if it
    /// does not finish.
    pub(super) fn checkpointed_steps_of(&self, award: &AwardRecord) -> u64 {
        self.record
            .checkpoint
            .as_ref()
            .map_or(0, |c| c.step.saturating_sub(award.start_step))
    }

    /// Stops the award in force, if any: tells the worker to stop, and settles its
    /// checkpointed work (once its hold is known to be in escrow).
    /// `track` is how the award ends for its worker's reputation: [`Track::Neutral`] unless
    /// the worker is to blame (it refused the award it won).
    pub(super) fn abandon(&mut self, fx: &mut Vec<Effect>, track: Track) {
        let Some(a) = self.record.award.clone().filter(|a| !a.settled) else {
            return;
        };
        if !a.held {
            // Never sent to the worker; what is left is to return the hold if it landed.
            self.mem.abandon_when_held = true;
            self.ask_hold(fx);
            return;
        }
        if a.settle_steps.is_none() {
            fx.push(Effect::SendCancel {
                worker_id: a.worker_id.clone(),
                cancel: CancelRun {
                    v: PROTOCOL_VERSION,
                    job_id: self.job_id().to_string(),
                    award_id: a.award_id.clone(),
                },
            });
        }
        let steps = self.checkpointed_steps_of(&a);
        self.decide_settlement(fx, steps, track);
    }

    /// Decides (once: the first decision stands) that the award in force is paid for
    /// `paid_steps` of its steps, frees its worker (telling the registry how the award ended
    /// for it: `track`), and makes the transfers.
    pub(super) fn decide_settlement(&mut self, fx: &mut Vec<Effect>, paid_steps: u64, track: Track) {
        let Some(a) = self.record.award.clone().filter(|a| a.held && !a.settled) else {
            return;
        };
        if a.settle_steps.is_none() {
            let (pay, _) = settlement(a.price, self.award_steps(&a), paid_steps);
            self.record.view.paid = self.record.view.paid.saturating_add(pay);
            self.record.view.price = Some(self.record.view.paid);
            if let Some(award) = self.record.award.as_mut() {
                award.settle_steps = Some(paid_steps);
            }
            fx.push(Effect::Release {
                worker_id: a.worker_id.clone(),
                track,
            });
        }
        self.make_settle_transfers(fx);
    }

    /// The transfers of a decided settlement, unless they are in flight.
    pub(super) fn make_settle_transfers(&mut self, fx: &mut Vec<Effect>) {
        let Some(a) = self.record.award.clone().filter(|a| a.held && !a.settled) else {
            return;
        };
        let Some(paid_steps) = a.settle_steps else { return };
        if self.mem.settling {
            return;
        }
        self.mem.settling = true;
        let job_id = self.job_id().to_string();
        let (pay, refund) = settlement(a.price, self.award_steps(&a), paid_steps);
        let transfer = |kind: &str, credit: String, amount: u64, memo: &str| Transfer {
            v: PROTOCOL_VERSION,
            id: format!("{kind}.{job_id}.{}", a.n),
            debit: escrow(&job_id),
            credit,
            amount,
            memo: memo.into(),
        };
        let transfers = [
            transfer("pay", user(&a.owner), pay, "pay for checkpointed work"),
            transfer("refund", user(&self.record.view.principal), refund, "return the rest"),
        ]
        .into_iter()
        .filter(|t| t.amount > 0)
        .collect();
        fx.push(Effect::Settle { n: a.n, transfers });
    }

    pub(super) fn settle_done(&mut self, fx: &mut Vec<Effect>, n: u32, outcome: TransferOutcome, now: u64) {
        self.mem.settling = false;
        let Some(a) = self.record.award.clone().filter(|a| a.n == n && a.held && !a.settled) else {
            return;
        };
        let Some(paid_steps) = a.settle_steps else { return };
        if outcome != TransferOutcome::Applied {
            return; // made again at the next tick
        }
        if let Some(award) = self.record.award.as_mut() {
            award.settled = true;
        }
        let (paid, refunded) = settlement(a.price, self.award_steps(&a), paid_steps);
        fx.push(Effect::NotifySettled {
            worker_id: a.worker_id.clone(),
            notice: Settled {
                v: PROTOCOL_VERSION,
                job_id: self.job_id().to_string(),
                award_id: a.award_id.clone(),
                paid,
                refunded,
                paid_steps,
                steps: self.award_steps(&a),
            },
        });
        self.start_auction(fx, now);
        self.finish_if_done(fx);
    }

    pub(super) fn worker_lost(&mut self, fx: &mut Vec<Effect>, worker_id: &str, now: u64) {
        let resume_epoch = self.record.checkpoint.as_ref().map_or(0, |c| c.epoch);
        let reason = Reason::WorkerLost {
            worker: worker_id.to_string(),
            resume_epoch,
        };
        self.requeue(fx, worker_id, reason, now);
    }

    /// The award's worker cannot finish: pay its checkpointed steps, and sell the rest again,
    /// resuming from the last checkpoint.
    pub(super) fn requeue(&mut self, fx: &mut Vec<Effect>, worker_id: &str, reason: Reason, now: u64) {
        let ours = self
            .record
            .award
            .as_ref()
            .is_some_and(|a| a.worker_id == worker_id && a.held && a.settle_steps.is_none());
        if !ours || self.state().is_terminal() {
            return;
        }
        if let Some(a) = self.record.award.clone() {
            // Lost, restarted, preempted or failed by its own fault: it abandoned the job.
            let steps = self.checkpointed_steps_of(&a);
            self.decide_settlement(fx, steps, Track::Failed);
        }
        self.record.view.epochs_done = self.record.checkpoint.as_ref().map_or(0, |c| c.epoch);
        self.move_to(fx, JobState::Queued, Some(reason));
        self.start_auction(fx, now);
    }
}
