//! How the simulated broker performs a job's effects: transfers against the real ledger book
//! (an outcome may be lost either side of applying), auctions with the real `decide`, the
//! registry model, messages to workers; outcomes come back as inputs after a random delay.

use helium_protocol::{ledger::Transfer, subjects::keys, worker::Bid};

use super::world::{AwardTruth, Msg, World};
use super::workers::Lie;
use crate::auction::decide::{decide, Offer};
use crate::jobs::core::{Effect, Input, TransferOutcome};

impl World {
    pub(super) fn transfer(&mut self, t: Transfer) -> TransferOutcome {
        let lost_before = self.faulty && self.rng.chance(self.opts.faults.unknown_transfer);
        if lost_before {
            return TransferOutcome::Unknown("request lost".into());
        }
        let outcome = match self.book.apply(t.clone()) {
            Ok(crate::ledger::book::Applied::New) => {
                if let Some(key) = t.id.strip_prefix("pay.job").and_then(|r| {
                    let (j, n) = r.split_once('.')?;
                    Some((j.parse::<usize>().ok()?, n.parse::<u32>().ok()?))
                }) {
                    self.awards.entry(key).or_default().paid_at = Some(self.now);
                }
                self.journal.push(t);
                TransferOutcome::Applied
            }
            Ok(crate::ledger::book::Applied::Duplicate) => TransferOutcome::Applied,
            Err(e) => TransferOutcome::Refused(helium_protocol::WireError::new(
                match e {
                    crate::ledger::book::BookError::InsufficientFunds { .. } => helium_protocol::ErrorCode::InsufficientFunds,
                    _ => helium_protocol::ErrorCode::Conflict,
                },
                e.to_string(),
            )),
        };
        if self.faulty && self.rng.chance(self.opts.faults.unknown_transfer) {
            return TransferOutcome::Unknown("answer lost".into());
        }
        outcome
    }

    pub(super) fn perform(&mut self, j: usize, effect: Effect) {
        match effect {
            Effect::Publish(_) | Effect::NotifySettled { .. } | Effect::Finished => {}
            Effect::Auction { requirements, work, exclude } => {
                let now = self.broker_now();
                let offers: Vec<Offer> = self
                    .workers
                    .iter()
                    .filter(|w| w.alive && w.paused_until.is_none() && w.reserved.is_none() && w.run.is_none())
                    .filter(|w| !exclude.contains(&w.id))
                    .map(|w| Offer {
                        worker_id: w.id.clone(),
                        owner: w.owner.clone(),
                        reputation: 0.0,
                        throughput: w.throughput,
                        bid: Bid {
                            price_per_hour: w.price_per_hour,
                            eta_secs: if w.lie == Lie::EtaZero { 0.0 } else { work.eta_secs(w.throughput) },
                        },
                    })
                    .collect();
                let outcome = decide(&offers, &requirements, &work, now);
                self.send(1_000, Msg::ToJob(j, Input::AuctionClosed(outcome)));
            }
            Effect::Hold { n, transfer } => {
                if let Some(a) = self.jobs[j].job.record.award.as_ref().filter(|a| a.n == n) {
                    let truth = AwardTruth {
                        owner: a.owner.clone(),
                        price: a.price,
                        start_step: a.start_step,
                        held_at: self.now,
                        pace: a.throughput / (self.jobs[j].job.record.work.parameters as f64 * f64::from(self.jobs[j].job.record.training.batch_size)),
                        award_steps: self.jobs[j].job.record.training.total_steps(self.jobs[j].job.record.work.samples).saturating_sub(a.start_step),
                        ..Default::default()
                    };
                    self.awards.entry((j, n)).or_insert(truth);
                }
                let outcome = self.transfer(transfer);
                let d = self.delay();
                self.send(d, Msg::ToJob(j, Input::HoldDone { n, outcome }));
            }
            Effect::Settle { n, transfers } => {
                let mut outcome = TransferOutcome::Applied;
                for t in transfers {
                    match self.transfer(t) {
                        TransferOutcome::Applied => {}
                        other => {
                            outcome = other;
                            break;
                        }
                    }
                }
                let d = self.delay();
                self.send(d, Msg::ToJob(j, Input::SettleDone { n, outcome }));
            }
            Effect::Sweep => {
                let job_id = self.jobs[j].job.job_id().to_string();
                let escrow = helium_protocol::ledger::escrow(&job_id);
                let left = self.book.balance(&escrow);
                let empty = left == 0;
                let d = self.delay();
                self.send(d, Msg::ToJob(j, Input::Swept { empty }));
            }
            Effect::Reserve { worker_id } => {
                if let Some(w) = self.workers.iter_mut().find(|w| w.id == worker_id && w.alive) {
                    w.reserved = Some(j);
                }
            }
            Effect::Release { worker_id, .. } => {
                if let Some(w) = self.workers.iter_mut().find(|w| w.id == worker_id && w.reserved == Some(j)) {
                    w.reserved = None;
                }
            }
            Effect::SendAward { worker_id, award } => self.award(j, &worker_id, award),
            Effect::SendCancel { worker_id, cancel } => {
                if let Some(w) = self.workers.iter_mut().find(|w| w.id == worker_id) {
                    if w.run.as_ref().is_some_and(|r| r.award_id == cancel.award_id) {
                        w.run = None;
                    }
                }
            }
            Effect::CheckAlive { worker_id } => {
                let alive = self.workers.iter().any(|w| w.id == worker_id && w.alive && w.reserved == Some(j));
                let d = self.delay();
                self.send(d, Msg::ToJob(j, Input::WorkerAlive { worker_id, alive }));
            }
            Effect::Delete { key } => {
                let record = &self.jobs[j].job.record;
                if let Some(c) = record.checkpoint.as_ref() {
                    if key == keys::checkpoint(&record.view.job_id, c.step) {
                        self.violations.push(format!("job {j} deleted the checkpoint in force: {key}"));
                    }
                }
            }
        }
    }
}
