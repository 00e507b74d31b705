//! Selling the job: auction, award, hold, and the winner's answer (DESIGN §4).

use helium_protocol::{
    api::JobEventKind,
    job::JobState,
    ledger::{escrow, user, Transfer},
    worker::{Award, AwardAck},
    ErrorCode, PROTOCOL_VERSION,
};

use super::{Effect, Job, Reason, Track, TransferOutcome, REAUCTION_EVERY_MS, REFUSAL_BACKOFF_MS};
use crate::auction::{Outcome, Winner};
use crate::jobs::record::{AwardRecord, MAX_AWARDS};

impl Job {
    pub(super) fn start_auction(&mut self, fx: &mut Vec<Effect>, now: u64) {
        if !matches!(self.state(), JobState::Queued | JobState::Auctioning) {
            return;
        }
        if self.mem.auction_in_flight {
            self.mem.poked = true;
            return;
        }
        if self.record.award.as_ref().is_some_and(|a| !a.settled) {
            // The last award's money is still moving: it ends in `settle_done`, which auctions.
            self.mem.retry_at = Some(now.saturating_add(REAUCTION_EVERY_MS));
            return;
        }
        self.mem.auction_in_flight = true;
        self.mem.poked = false;
        self.mem.retry_at = None;
        // A job that already waits with a reason is re-auctioned quietly: its researcher keeps
        // seeing why it waits, and a job waiting for days does not grow its event stream.
        let waiting = self.state() == JobState::Queued && self.record.reason.is_some();
        if !waiting {
            self.move_to(fx, JobState::Auctioning, None);
        }
        let mut requirements = self.record.requirements.clone();
        requirements.budget = requirements.budget.saturating_sub(self.record.view.paid);
        fx.push(Effect::Auction {
            requirements,
            work: self.remaining_work(),
            exclude: self.record.excluded_workers.clone(),
        });
    }

    pub(super) fn auction_closed(&mut self, fx: &mut Vec<Effect>, outcome: Outcome, now: u64) {
        self.mem.auction_in_flight = false;
        if !matches!(self.state(), JobState::Queued | JobState::Auctioning) {
            return; // cancelled or expired meanwhile
        }
        match outcome {
            Outcome::NoWinner { reason } => {
                self.move_to(fx, JobState::Queued, Some(Reason::NoWorker { why: reason }));
                if self.mem.poked {
                    self.start_auction(fx, now);
                } else {
                    // Capacity news can race a closing auction (a worker freed just after it
                    // declined); a slow periodic retry makes sure no job waits forever on it.
                    self.mem.retry_at = Some(now.saturating_add(REAUCTION_EVERY_MS));
                }
            }
            // An award whose money is still moving is never replaced (its hold would be
            // forgotten in escrow); this auction's winner was not reserved, so nothing is lost.
            Outcome::Won { .. } if self.record.award.as_ref().is_some_and(|a| !a.settled) => {
                self.mem.retry_at = Some(now.saturating_add(REAUCTION_EVERY_MS));
            }
            Outcome::Won { winner, bids } => {
                self.move_to(fx, JobState::Auctioning, None);
                self.award(fx, winner, bids);
            }
        }
    }

    /// Records the award (so a restart knows its number and asks for the same hold), then asks
    /// for the hold; the award goes to the worker only once the hold is in escrow.
    fn award(&mut self, fx: &mut Vec<Effect>, winner: Winner, bids: u32) {
        if self.record.accepted_awards >= MAX_AWARDS {
            let reason = Reason::TooManyAwards { awards: MAX_AWARDS };
            self.move_to(fx, JobState::Failed, Some(reason));
            self.finish_if_done(fx);
            return;
        }
        let n = self.record.awards + 1;
        self.record.awards = n;
        self.record.award = Some(AwardRecord {
            award_id: format!("{}-{n}", self.job_id()),
            n,
            worker_id: winner.worker_id,
            owner: winner.owner,
            price: winner.price,
            eta_secs: winner.eta_secs,
            throughput: winner.throughput,
            start_epoch: self.record.view.epochs_done,
            start_step: self.record.checkpoint.as_ref().map_or(0, |c| c.step),
            held: false,
            elapsed_ms: 0,
            settled: false,
            settle_steps: None,
            stored_result: None,
            stored_checkpoints: Vec::new(),
            checkpoint_uploads: 0,
        });
        self.mem.bids = bids;
        self.ask_hold(fx);
    }

    /// Asks for the hold of the recorded award, unless it is in escrow or being asked for.
    pub(super) fn ask_hold(&mut self, fx: &mut Vec<Effect>) {
        let Some(a) = self.record.award.as_ref().filter(|a| !a.held && !a.settled) else {
            return;
        };
        if self.mem.holding {
            return;
        }
        self.mem.holding = true;
        let job_id = self.job_id().to_string();
        fx.push(Effect::Hold {
            n: a.n,
            transfer: Transfer {
                v: PROTOCOL_VERSION,
                id: format!("hold.{job_id}.{}", a.n),
                debit: user(&self.record.view.principal),
                credit: escrow(&job_id),
                amount: a.price,
                memo: "hold on award".into(),
            },
        });
    }

    pub(super) fn hold_done(&mut self, fx: &mut Vec<Effect>, n: u32, outcome: TransferOutcome, now: u64) {
        self.mem.holding = false;
        let Some(a) = self.record.award.as_mut().filter(|a| a.n == n && !a.held && !a.settled) else {
            return;
        };
        match outcome {
            TransferOutcome::Applied => {
                a.held = true;
                a.elapsed_ms = 0;
                let a = a.clone();
                self.mem.award_clock = Some((self.mem.mono, 0));
                self.record.view.worker = Some(a.worker_id.clone());
                self.record.view.price = Some(self.record.view.paid.saturating_add(a.price));
                fx.push(Effect::Reserve {
                    worker_id: a.worker_id.clone(),
                });
                if self.mem.abandon_when_held || self.state() != JobState::Auctioning {
                    // Cancelled, expired or abandoned while the hold was unknown: return it.
                    self.mem.abandon_when_held = false;
                    self.abandon(fx, Track::Neutral);
                    self.finish_if_done(fx);
                    return;
                }
                fx.push(Effect::Publish(JobEventKind::Awarded {
                    worker: a.worker_id.clone(),
                    bids: self.mem.bids,
                    price: a.price,
                    eta_secs: a.eta_secs,
                }));
                let award = Award {
                    v: PROTOCOL_VERSION,
                    job_id: self.job_id().to_string(),
                    award_id: a.award_id.clone(),
                    training: self.record.training.clone(),
                    work: self.remaining_work(),
                    model: self.record.model.clone(),
                    data: self.record.data.clone(),
                    price: a.price,
                    deadline_ms: self.record.requirements.deadline_ms,
                    resume: self.record.checkpoint.as_ref().map(|c| c.artifact.clone()),
                };
                fx.push(Effect::SendAward {
                    worker_id: a.worker_id,
                    award,
                });
            }
            TransferOutcome::Refused(e) => {
                // Nothing moved: the award ends here, settled at nothing.
                a.settled = true;
                a.settle_steps = Some(0);
                self.mem.abandon_when_held = false;
                let why = e.message;
                if e.code == ErrorCode::InsufficientFunds {
                    self.move_to(fx, JobState::Failed, Some(Reason::InsufficientFunds { why }));
                } else {
                    self.move_to(fx, JobState::Queued, Some(Reason::HoldFailed { why }));
                    self.mem.retry_at = Some(now.saturating_add(REAUCTION_EVERY_MS));
                }
                self.finish_if_done(fx);
            }
            // Asked again at the next tick, under the same id.
            TransferOutcome::Unknown(_) => {}
        }
    }

    pub(super) fn award_answered(
        &mut self,
        fx: &mut Vec<Effect>,
        award_id: &str,
        answer: Result<AwardAck, String>,
        now: u64,
    ) {
        let Some(a) = self
            .record
            .award
            .clone()
            .filter(|a| a.award_id == award_id && a.held && a.settle_steps.is_none())
        else {
            return;
        };
        if self.state() != JobState::Auctioning {
            return;
        }
        match answer {
            Ok(AwardAck { accepted: true, .. }) => {
                self.record.accepted_awards += 1;
                self.move_to(fx, JobState::Assigned, None);
            }
            refused => {
                let why = match refused {
                    Ok(ack) => ack.reason.unwrap_or_else(|| "refused".into()),
                    Err(e) => e,
                };
                // A timed-out award may have been accepted after all: `abandon` stops the worker.
                // Refusing what it won counts against it (a worker that keeps winning and
                // refusing would stall the job).
                self.abandon(fx, Track::Failed);
                let reason = Reason::WinnerRefused {
                    worker: a.worker_id,
                    why,
                };
                self.move_to(fx, JobState::Queued, Some(reason));
                // Soon, not at once: a worker that bids and then refuses must not spin us.
                self.mem.retry_at = Some(now.saturating_add(REFUSAL_BACKOFF_MS));
            }
        }
    }
}
