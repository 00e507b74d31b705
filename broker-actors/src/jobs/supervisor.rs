//! The JobSupervisor actor: one per job, the only owner of its record. It drives the job
//! through `Queued → Auctioning → Assigned → Running → Completed | Failed | Cancelled | Expired`,
//! persists every change to the KV bucket with revision-checked updates, publishes the job's
//! events, and moves its money through the ledger (hold on award; pay and refund on settle).

use std::time::Duration;

use async_nats::jetstream::kv;
use helium_protocol::{
    api::{JobEventKind, JobView},
    artifacts::{self, ArtifactInfo},
    encode,
    job::{DeclaredWork, JobState},
    ledger::{escrow, user, Transfer},
    subjects,
    worker::{Award, AwardAck, CancelRun, RunEvent, RunEventKind, Settled},
    ErrorCode, Reply, WireError, PROTOCOL_VERSION,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

mod uploads;

use super::record::{can_move, settlement, AwardRecord, CheckpointRecord, JobRecord, MAX_AWARDS, STORED_CHECKPOINTS};
use crate::{
    artifacts::Caller,
    auction::{AuctioneerMsg, Outcome, Winner},
    events::publish_job_event,
    ledger::LedgerMsg,
    now_ms,
    registry::RegistryMsg,
    Deps,
};

pub enum SupervisorMsg {
    /// Capacity may have appeared: auction if the job is queued.
    Auction,
    /// Respawned while waiting: an award whose answer died with the previous broker is
    /// abandoned (worker told to stop, hold returned), then the job is auctioned again.
    Recover,
    AuctionClosed(Outcome),
    AwardAnswered {
        award_id: String,
        answer: Result<AwardAck, String>,
    },
    Run {
        worker_id: String,
        event: RunEvent,
        reply: RpcReplyPort<Result<(), WireError>>,
    },
    Status {
        principal: String,
        reply: RpcReplyPort<Result<JobView, WireError>>,
    },
    Cancel {
        principal: String,
        reply: RpcReplyPort<Result<JobView, WireError>>,
    },
    /// May `caller` read artifact `name`? Replies its key and digest.
    Access {
        caller: Caller,
        name: String,
        reply: RpcReplyPort<Result<(String, ArtifactInfo), WireError>>,
    },
    /// Where may worker `worker_id` upload artifact `name`?
    UploadTarget {
        worker_id: String,
        name: String,
        reply: RpcReplyPort<Result<String, WireError>>,
    },
    /// The worker's upload of `name` was committed and verified.
    Stored {
        worker_id: String,
        name: String,
        info: ArtifactInfo,
    },
    WorkerLost {
        worker_id: String,
    },
    Tick,
}

pub struct JobSupervisor;

pub struct SupervisorArgs {
    pub deps: Deps,
    pub record: JobRecord,
    pub revision: u64,
}

pub struct SupervisorState {
    deps: Deps,
    record: JobRecord,
    revision: u64,
    auction_in_flight: bool,
    /// Capacity appeared while an auction was running: run another when it closes empty.
    poked: bool,
    /// When a queued job next tries an auction even without news of capacity.
    retry_at: Option<tokio::time::Instant>,
    /// The 1 s tick, stopped once the job is finished and settled.
    ticker: Option<tokio::task::JoinHandle<()>>,
    /// When to check that the worker of a respawned running job is still there.
    liveness_check_at: Option<tokio::time::Instant>,
}

/// How often a queued job re-auctions on its own.
const REAUCTION_EVERY: Duration = Duration::from_secs(5);
/// Wait before re-auctioning after a winner refused the award.
const REFUSAL_BACKOFF: Duration = Duration::from_secs(1);
/// After a restart, how long a running job's worker has to show up again before it is lost.
const REJOIN_GRACE: Duration = Duration::from_secs(30);

impl Actor for JobSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        me: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let state = args.record.view.state;
        // Every job ticks at start, a finished one too: its first tick sweeps a stray hold that
        // a previous broker did not get to, then stops the ticker.
        let ticker = Some(me.send_interval(Duration::from_secs(1), || SupervisorMsg::Tick));
        if matches!(state, JobState::Queued | JobState::Auctioning) {
            me.send_message(SupervisorMsg::Recover)?;
        }
        Ok(SupervisorState {
            deps: args.deps,
            record: args.record,
            revision: args.revision,
            auction_in_flight: false,
            poked: false,
            retry_at: None,
            ticker,
            // A broker restarted under a running job: its registry is empty, so a worker that
            // died meanwhile would never be reported lost. Check once the worker had time to rejoin.
            liveness_check_at: matches!(state, JobState::Assigned | JobState::Running)
                .then(|| tokio::time::Instant::now() + REJOIN_GRACE),
        })
    }

    async fn handle(
        &self,
        me: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Auction => state.start_auction(&me).await?,
            SupervisorMsg::Recover => {
                if state.record.view.state == JobState::Auctioning {
                    state.abandon_award().await?;
                    state.persist().await?;
                }
                state.start_auction(&me).await?;
            }
            SupervisorMsg::AuctionClosed(outcome) => {
                state.auction_in_flight = false;
                state.auction_closed(&me, outcome).await?;
            }
            SupervisorMsg::AwardAnswered { award_id, answer } => state.award_answered(award_id, answer).await?,
            SupervisorMsg::Run {
                worker_id,
                event,
                reply,
            } => {
                let result = state.run_event(&me, &worker_id, event).await?;
                let _ = reply.send(result);
            }
            SupervisorMsg::Status { principal, reply } => {
                let _ = reply.send(state.owned(&principal).map(|r| r.view.clone()));
            }
            SupervisorMsg::Cancel { principal, reply } => {
                if let Err(e) = state.owned(&principal) {
                    let _ = reply.send(Err(e));
                } else if state.record.view.state.is_terminal() {
                    let e = WireError::new(
                        ErrorCode::Conflict,
                        format!("job is already {:?}", state.record.view.state),
                    );
                    let _ = reply.send(Err(e));
                } else {
                    state.cancel().await?;
                    let _ = reply.send(Ok(state.record.view.clone()));
                }
            }
            SupervisorMsg::Access { caller, name, reply } => {
                let _ = reply.send(state.access(&caller, &name));
            }
            SupervisorMsg::UploadTarget { worker_id, name, reply } => {
                let _ = reply.send(state.upload_target(&worker_id, &name));
            }
            SupervisorMsg::Stored { worker_id, name, info } => {
                if let Some(award) = state.record.award.as_mut().filter(|a| a.worker_id == worker_id) {
                    if name == artifacts::RESULT {
                        award.stored_result = Some(info);
                    } else if name.starts_with(artifacts::CHECKPOINTS) {
                        award.checkpoint_uploads = award.checkpoint_uploads.saturating_add(1);
                        award.stored_checkpoints.push(info);
                        let excess = award.stored_checkpoints.len().saturating_sub(STORED_CHECKPOINTS);
                        award.stored_checkpoints.drain(..excess);
                    }
                    state.persist().await?;
                }
            }
            SupervisorMsg::WorkerLost { worker_id } => state.worker_lost(&me, &worker_id).await?,
            SupervisorMsg::Tick => state.tick(&me).await?,
        }
        Ok(())
    }
}

impl SupervisorState {
    fn job_id(&self) -> &str {
        &self.record.view.job_id
    }

    fn owned(&self, principal: &str) -> Result<&JobRecord, WireError> {
        if self.record.view.principal == principal {
            Ok(&self.record)
        } else {
            Err(WireError::new(
                ErrorCode::NotFound,
                format!("no job {} of {principal}", self.job_id()),
            ))
        }
    }

    /// Writes the record with a revision check: a conflict means another broker owns the job,
    /// and this supervisor must stop rather than overwrite it.
    async fn persist(&mut self) -> Result<(), ActorProcessingErr> {
        self.record.view.updated_ms = now_ms();
        let value = encode(&self.record);
        match self.deps.jobs.update(self.job_id(), value.into(), self.revision).await {
            Ok(revision) => {
                self.revision = revision;
                Ok(())
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(format!("job {} was changed by another broker; giving it up", self.job_id()).into())
            }
            Err(e) => {
                tracing::error!(job = %self.job_id(), error = %e, "could not persist job record");
                Ok(())
            }
        }
    }

    async fn event(&self, kind: JobEventKind) {
        publish_job_event(&self.deps.js, &self.record.view.principal, self.job_id(), kind).await;
    }

    /// Moves to `next` (if allowed), persists, and publishes the state event.
    async fn move_to(&mut self, next: JobState, reason: Option<String>) -> Result<bool, ActorProcessingErr> {
        let current = self.record.view.state;
        if current == next && self.record.view.reason == reason {
            return Ok(true);
        }
        if current != next && !can_move(current, next) {
            tracing::warn!(job = %self.job_id(), from = ?current, to = ?next, "refused state change");
            return Ok(false);
        }
        self.record.view.state = next;
        self.record.view.reason = reason.clone();
        self.persist().await?;
        tracing::info!(job = %self.job_id(), state = ?next, reason = ?reason, "job state");
        self.event(JobEventKind::State { state: next, reason }).await;
        Ok(true)
    }

    async fn transfer(
        &self,
        id: String,
        debit: String,
        credit: String,
        amount: u64,
        memo: &str,
    ) -> Result<(), WireError> {
        if amount == 0 {
            return Ok(());
        }
        let t = Transfer {
            v: PROTOCOL_VERSION,
            id,
            debit,
            credit,
            amount,
            memo: memo.to_string(),
        };
        match ractor::call_t!(self.deps.ledger, LedgerMsg::Transfer, 10_000, t) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(WireError::new(ErrorCode::Unavailable, format!("ledger: {e}"))),
        }
    }

    /// Epochs not yet done, i.e. the work an auction sells now.
    fn remaining_work(&self) -> DeclaredWork {
        let done = self.record.view.epochs_done;
        DeclaredWork {
            epochs: self.record.work.epochs.saturating_sub(done).max(1),
            ..self.record.work
        }
    }

    async fn start_auction(&mut self, me: &ActorRef<SupervisorMsg>) -> Result<(), ActorProcessingErr> {
        if !matches!(self.record.view.state, JobState::Queued | JobState::Auctioning) {
            return Ok(());
        }
        if self.auction_in_flight {
            self.poked = true;
            return Ok(());
        }
        if self.record.award.as_ref().is_some_and(|a| !a.settled) {
            // An award is being answered, or its settlement is being retried: look again soon.
            self.retry_at = Some(tokio::time::Instant::now() + REAUCTION_EVERY);
            return Ok(());
        }
        self.auction_in_flight = true;
        self.poked = false;
        self.retry_at = None;
        // A job that already waits with a reason is re-auctioned quietly: its researcher keeps
        // seeing why it waits, and a job waiting for days does not grow its event stream.
        let waiting = self.record.view.state == JobState::Queued && self.record.view.reason.is_some();
        if !waiting {
            self.move_to(JobState::Auctioning, None).await?;
        }
        let mut requirements = self.record.requirements.clone();
        requirements.budget = requirements.budget.saturating_sub(self.record.view.paid);
        let (auctioneer, me, job_id, work, exclude) = (
            self.deps.auctioneer.clone(),
            me.clone(),
            self.job_id().to_string(),
            self.remaining_work(),
            self.record.excluded_workers.clone(),
        );
        let wait = self.deps.bid_window.as_millis() as u64 + 5_000;
        tokio::spawn(async move {
            let outcome = ractor::call_t!(
                auctioneer,
                |reply| AuctioneerMsg::Run {
                    job_id,
                    requirements,
                    work,
                    exclude,
                    reply
                },
                wait
            )
            .unwrap_or_else(|e| Outcome::NoWinner {
                reason: format!("auction failed: {e}"),
            });
            let _ = me.send_message(SupervisorMsg::AuctionClosed(outcome));
        });
        Ok(())
    }

    async fn auction_closed(
        &mut self,
        me: &ActorRef<SupervisorMsg>,
        outcome: Outcome,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(self.record.view.state, JobState::Queued | JobState::Auctioning) {
            return Ok(()); // cancelled or expired meanwhile
        }
        if matches!(outcome, Outcome::Won { .. }) {
            self.move_to(JobState::Auctioning, None).await?;
        }
        match outcome {
            Outcome::NoWinner { reason } => {
                self.move_to(JobState::Queued, Some(format!("waiting: {reason}")))
                    .await?;
                if self.poked {
                    me.send_message(SupervisorMsg::Auction)?;
                } else {
                    // Capacity news can race a closing auction (a worker freed just after it
                    // declined); a slow periodic retry makes sure no job waits forever on it.
                    self.retry_at = Some(tokio::time::Instant::now() + REAUCTION_EVERY);
                }
            }
            Outcome::Won { winner, bids } => self.award(me, winner, bids).await?,
        }
        Ok(())
    }

    async fn award(
        &mut self,
        me: &ActorRef<SupervisorMsg>,
        winner: Winner,
        bids: u32,
    ) -> Result<(), ActorProcessingErr> {
        if self.record.accepted_awards >= MAX_AWARDS {
            let reason = format!("gave up after {MAX_AWARDS} workers took the job and did not finish it");
            self.move_to(JobState::Failed, Some(reason)).await?;
            return Ok(());
        }
        let n = self.record.awards + 1;
        // The award number is spent before the hold: if the hold's outcome is unknown (a
        // timeout), the next award uses a fresh transfer id, and whatever landed in escrow
        // goes back by the sweep when the job ends.
        self.record.awards = n;
        self.persist().await?;
        let job_id = self.job_id().to_string();
        let principal = self.record.view.principal.clone();
        if let Err(e) = self
            .transfer(
                format!("hold.{job_id}.{n}"),
                user(&principal),
                escrow(&job_id),
                winner.price,
                "hold on award",
            )
            .await
        {
            let reason = format!("could not hold {} micro-credits: {}", winner.price, e.message);
            let next = if e.code == ErrorCode::InsufficientFunds {
                JobState::Failed
            } else {
                JobState::Queued
            };
            self.move_to(next, Some(reason)).await?;
            self.retry_at = Some(tokio::time::Instant::now() + REAUCTION_EVERY);
            return Ok(());
        }
        let award_id = format!("{job_id}-{n}");
        self.record.award = Some(AwardRecord {
            award_id: award_id.clone(),
            n,
            worker_id: winner.worker_id.clone(),
            owner: winner.owner.clone(),
            price: winner.price,
            eta_secs: winner.eta_secs,
            start_epoch: self.record.view.epochs_done,
            start_step: self.record.checkpoint.as_ref().map_or(0, |c| c.step),
            settled: false,
            settle_steps: None,
            stored_result: None,
            stored_checkpoints: Vec::new(),
            checkpoint_uploads: 0,
        });
        self.record.view.worker = Some(winner.worker_id.clone());
        self.record.view.price = Some(self.record.view.paid + winner.price);
        self.persist().await?;
        let _ = self.deps.registry.send_message(RegistryMsg::Reserve {
            worker_id: winner.worker_id.clone(),
            job: job_id.clone(),
        });
        self.event(JobEventKind::Awarded {
            worker: winner.worker_id.clone(),
            bids,
            price: winner.price,
            eta_secs: winner.eta_secs,
        })
        .await;

        let award = Award {
            v: PROTOCOL_VERSION,
            job_id: job_id.clone(),
            award_id: award_id.clone(),
            training: self.record.training.clone(),
            work: self.remaining_work(),
            model: self.record.model.clone(),
            data: self.record.data.clone(),
            price: winner.price,
            deadline_ms: self.record.requirements.deadline_ms,
            resume: self.record.checkpoint.as_ref().map(|c| c.artifact.clone()),
        };
        let (nats, me) = (self.deps.nats.clone(), me.clone());
        tokio::spawn(async move {
            let subject = subjects::dispatch(&winner.worker_id, subjects::dispatch::AWARD);
            let answer =
                match tokio::time::timeout(Duration::from_secs(10), nats.request(subject, encode(&award).into())).await
                {
                    Ok(Ok(message)) => helium_protocol::decode::<Reply<AwardAck>>(&message.payload)
                        .and_then(Reply::into_result)
                        .map_err(|e| e.to_string()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer to the award in 10 s".into()),
                };
            let _ = me.send_message(SupervisorMsg::AwardAnswered { award_id, answer });
        });
        Ok(())
    }

    async fn award_answered(
        &mut self,
        award_id: String,
        answer: Result<AwardAck, String>,
    ) -> Result<(), ActorProcessingErr> {
        let current = self
            .record
            .award
            .as_ref()
            .is_some_and(|a| a.award_id == award_id && !a.settled);
        if !current || self.record.view.state != JobState::Auctioning {
            return Ok(());
        }
        match answer {
            Ok(AwardAck { accepted: true, .. }) => {
                self.record.accepted_awards += 1;
                self.move_to(JobState::Assigned, None).await?;
            }
            refused => {
                let why = match refused {
                    Ok(ack) => ack.reason.unwrap_or_else(|| "refused".into()),
                    Err(e) => e,
                };
                tracing::warn!(job = %self.job_id(), award = %award_id, why = %why, "award not accepted; auctioning again");
                // A timed-out award may have been accepted after all: tell the worker to stop.
                self.abandon_award().await?;
                self.move_to(
                    JobState::Queued,
                    Some(format!("waiting: the winner did not take the job ({why})")),
                )
                .await?;
                // Soon, not at once: a worker that bids and then refuses must not spin us.
                self.retry_at = Some(tokio::time::Instant::now() + REFUSAL_BACKOFF);
            }
        }
        Ok(())
    }

    /// Pays the current award's owner for `paid_steps` (of the award's own steps), refunds the
    /// rest, frees the worker. Transfer ids derive from the award, so a retry is a no-op.
    async fn settle(&mut self, paid_steps: u64) -> Result<(), ActorProcessingErr> {
        let Some(mut award) = self.record.award.clone().filter(|a| !a.settled) else {
            return Ok(());
        };
        // The first decision stands: a retry pays what was decided, not what a later event says.
        let paid_steps = *award.settle_steps.get_or_insert(paid_steps);
        self.record.award = Some(award.clone());
        let job_id = self.job_id().to_string();
        let (pay, refund) = settlement(award.price, self.award_steps(&award), paid_steps);
        let principal = self.record.view.principal.clone();
        let n = award.n;
        let paid = self
            .transfer(
                format!("pay.{job_id}.{n}"),
                escrow(&job_id),
                user(&award.owner),
                pay,
                "pay for checkpointed work",
            )
            .await;
        let refunded = self
            .transfer(
                format!("refund.{job_id}.{n}"),
                escrow(&job_id),
                user(&principal),
                refund,
                "return the rest",
            )
            .await;
        if let Err(e) = paid.and(refunded) {
            // The hold stays in escrow; the ids make the next attempt safe.
            tracing::error!(job = %job_id, error = %e, "settlement failed; retrying every second");
            self.persist().await?;
            return Ok(());
        }
        self.record.view.paid += pay;
        self.record.view.price = Some(self.record.view.paid);
        if let Some(a) = self.record.award.as_mut() {
            a.settled = true;
        }
        // Not persisted here: the caller's state change writes the settlement and the new state
        // in one update, so no restart can see one without the other. The transfer ids make a
        // replay of this settlement (after a crash before that write) a no-op.
        tracing::info!(job = %job_id, worker = %award.worker_id, owner = %award.owner, paid_micro = pay, refunded_micro = refund, paid_steps, "award settled");
        let notice = Settled {
            v: PROTOCOL_VERSION,
            job_id: job_id.clone(),
            award_id: award.award_id.clone(),
            paid: pay,
            refunded: refund,
            paid_steps,
            steps: self.award_steps(&award),
        };
        let subject = subjects::dispatch(&award.worker_id, subjects::dispatch::SETTLED);
        // At most once, for the worker's log; a lost notice loses nothing (the ledger has it).
        if let Err(e) = self.deps.nats.publish(subject, encode(&notice).into()).await {
            tracing::debug!(job = %job_id, error = %e, "settlement notice not sent");
        }
        let _ = self.deps.registry.send_message(RegistryMsg::Release {
            worker_id: award.worker_id,
            job: job_id,
        });
        Ok(())
    }

    async fn run_event(
        &mut self,
        me: &ActorRef<SupervisorMsg>,
        worker_id: &str,
        event: RunEvent,
    ) -> Result<Result<(), WireError>, ActorProcessingErr> {
        let Some(award) = self.record.award.clone() else {
            return Ok(Err(WireError::new(ErrorCode::Unauthorized, "job has no award")));
        };
        if award.worker_id != worker_id {
            return Ok(Err(WireError::new(
                ErrorCode::Unauthorized,
                format!("job {} is not awarded to {worker_id}", self.job_id()),
            )));
        }
        if award.award_id != event.award_id || award.settled || self.record.view.state.is_terminal() {
            return Ok(Ok(())); // a stale run's late event: acknowledged and ignored
        }
        match event.kind {
            RunEventKind::Started { device, parameters } => {
                tracing::info!(job = %self.job_id(), worker = %worker_id, device = %device, "run started");
                let declared = self.record.work.parameters;
                if let Some(actual) = parameters.filter(|&p| p > declared.saturating_add(declared / 100)) {
                    // The price was computed for the declared work; a bigger model would be
                    // trained below cost. The worker is stopped and paid nothing; no credits move.
                    self.abandon_award().await?;
                    let reason = format!(
                        "the model has {actual} parameters but the job declared {declared}; the auction priced the declared work"
                    );
                    self.move_to(JobState::Failed, Some(reason)).await?;
                    return Ok(Ok(()));
                }
                if self.record.view.state == JobState::Auctioning {
                    // The run started before its award's ack arrived (which will now be ignored).
                    self.record.accepted_awards += 1;
                    self.move_to(JobState::Assigned, None).await?;
                }
                self.move_to(JobState::Running, None).await?;
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
                    return Ok(Err(WireError::bad_request(format!("epoch {epoch} is out of range"))));
                }
                if self.record.view.state == JobState::Assigned {
                    self.move_to(JobState::Running, None).await?;
                }
                self.record.view.epochs_done = epoch;
                self.record.view.last_loss = loss.is_finite().then_some(loss);
                self.persist().await?;
                self.event(JobEventKind::Progress {
                    epoch,
                    epochs,
                    step: Some(step),
                    loss,
                    samples_per_sec,
                    val_loss,
                    val_accuracy,
                })
                .await;
            }
            RunEventKind::Checkpoint {
                step,
                epoch,
                checkpoint,
            } => {
                if let Err(e) = self.accept_checkpoint(&award, step, epoch, &checkpoint) {
                    tracing::warn!(job = %self.job_id(), worker = %worker_id, step, error = %e.message, "checkpoint refused");
                    return Ok(Err(e));
                }
                self.persist().await?;
                self.event(JobEventKind::Checkpointed { step, epoch }).await;
            }
            RunEventKind::Completed { result } => {
                // Only a result that this worker uploaded and the broker verified counts.
                if !award
                    .stored_result
                    .as_ref()
                    .is_some_and(|stored| same_bytes(stored, &result))
                {
                    return Ok(Err(WireError::new(
                        ErrorCode::DigestMismatch,
                        "completed without a verified result upload",
                    )));
                }
                self.record.view.epochs_done = self.record.work.epochs;
                self.record.view.result = Some(ArtifactInfo {
                    name: artifacts::RESULT.into(),
                    ..result
                });
                self.settle(self.award_steps(&award)).await?;
                self.move_to(JobState::Completed, None).await?;
            }
            RunEventKind::Failed {
                reason,
                worker_fault: false,
            } => {
                self.settle(self.checkpointed_steps_of(&award)).await?;
                self.move_to(JobState::Failed, Some(reason)).await?;
            }
            RunEventKind::Failed {
                reason,
                worker_fault: true,
            } => {
                // Not invited again by this job: a worker that cannot do its part would win
                // (and fail) every auction it is cheapest in.
                self.record.excluded_workers.push(worker_id.to_string());
                self.requeue(me, worker_id, &format!("failed ({reason})")).await?;
            }
            RunEventKind::Cancelled => {
                // The worker stopped without being asked to: treat it as preemption.
                self.worker_lost(me, worker_id).await?;
            }
        }
        Ok(Ok(()))
    }
}

/// The step of a `checkpoints/<step>` artifact name.
fn checkpoint_step(name: &str) -> Option<u64> {
    name.strip_prefix(artifacts::CHECKPOINTS)?.parse().ok()
}

/// Same size and digest: names differ between what a worker echoes and what the broker stored.
fn same_bytes(a: &ArtifactInfo, b: &ArtifactInfo) -> bool {
    a.size == b.size && a.sha256 == b.sha256
}

impl SupervisorState {
    /// Optimizer steps of the whole job.
    fn total_steps(&self) -> u64 {
        self.record.training.total_steps(self.record.work.samples)
    }

    /// Steps `award` was sold: from where it resumed to the end.
    fn award_steps(&self, award: &AwardRecord) -> u64 {
        self.total_steps().saturating_sub(award.start_step)
    }

    /// Steps of `award` covered by the last verified checkpoint: what it is paid for if it
    /// does not finish.
    fn checkpointed_steps_of(&self, award: &AwardRecord) -> u64 {
        self.record
            .checkpoint
            .as_ref()
            .map_or(0, |c| c.step.saturating_sub(award.start_step))
    }

    /// A checkpoint counts (for payment and resume) only if this award's worker uploaded it, the
    /// broker verified its bytes on commit, and it moves the job forward consistently: a later
    /// step than the last checkpoint, within the job, with the epoch that step implies.
    fn accept_checkpoint(
        &mut self,
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
            .ok_or_else(|| {
                WireError::new(
                    ErrorCode::DigestMismatch,
                    format!("{name} was not uploaded and verified"),
                )
            })?;
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
        self.record.checkpoint = Some(CheckpointRecord {
            epoch,
            step,
            artifact: verified,
        });
        if let Some(a) = self.record.award.as_mut() {
            a.stored_checkpoints
                .retain(|stored| stored.name != name && checkpoint_step(&stored.name) > Some(step));
        }
        Ok(())
    }

    async fn cancel(&mut self) -> Result<(), ActorProcessingErr> {
        if self.record.view.state.is_terminal() {
            return Ok(());
        }
        self.abandon_award().await?;
        self.move_to(JobState::Cancelled, Some("cancelled by the researcher".into()))
            .await?;
        Ok(())
    }

    /// Stops the award in force, if any: tells the worker to stop, pays its checkpointed work
    /// and returns the rest of the hold.
    async fn abandon_award(&mut self) -> Result<(), ActorProcessingErr> {
        let Some(award) = self.record.award.clone().filter(|a| !a.settled) else {
            return Ok(());
        };
        let cancel = CancelRun {
            v: PROTOCOL_VERSION,
            job_id: self.job_id().to_string(),
            award_id: award.award_id.clone(),
        };
        let subject = subjects::dispatch(&award.worker_id, subjects::dispatch::CANCEL);
        let nats = self.deps.nats.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), nats.request(subject, encode(&cancel).into())).await;
        });
        self.settle(self.checkpointed_steps_of(&award)).await
    }

    async fn worker_lost(&mut self, me: &ActorRef<SupervisorMsg>, worker_id: &str) -> Result<(), ActorProcessingErr> {
        self.requeue(me, worker_id, "was lost").await
    }

    /// The award's worker cannot finish (`what` happened to it): pay its checkpointed epochs,
    /// and sell the rest again, resuming from the last checkpoint.
    async fn requeue(
        &mut self,
        me: &ActorRef<SupervisorMsg>,
        worker_id: &str,
        what: &str,
    ) -> Result<(), ActorProcessingErr> {
        let Some(award) = self
            .record
            .award
            .clone()
            .filter(|a| a.worker_id == worker_id && !a.settled)
        else {
            return Ok(());
        };
        if self.record.view.state.is_terminal() {
            return Ok(());
        }
        self.settle(self.checkpointed_steps_of(&award)).await?;
        // Resume from the last checkpoint: the next award sells only the remaining epochs.
        self.record.view.epochs_done = self.record.checkpoint.as_ref().map(|c| c.epoch).unwrap_or(0);
        let reason = format!(
            "waiting: worker {worker_id} {what}; resuming from epoch {}",
            self.record.view.epochs_done
        );
        self.move_to(JobState::Queued, Some(reason)).await?;
        me.send_message(SupervisorMsg::Auction)?;
        Ok(())
    }

    async fn tick(&mut self, me: &ActorRef<SupervisorMsg>) -> Result<(), ActorProcessingErr> {
        let unsettled = self.record.award.as_ref().is_some_and(|a| !a.settled);
        if self.record.view.state.is_terminal() && !unsettled {
            if self.sweep_escrow().await {
                if let Some(ticker) = self.ticker.take() {
                    ticker.abort();
                }
            }
            return Ok(());
        }
        if self.retry_at.is_some_and(|at| tokio::time::Instant::now() >= at) {
            self.retry_at = None;
            me.send_message(SupervisorMsg::Auction)?;
        }
        if self
            .record
            .award
            .as_ref()
            .is_some_and(|a| !a.settled && a.settle_steps.is_some())
        {
            self.settle(0).await?; // the decided steps were kept in the record
            self.persist().await?;
        }
        if self
            .liveness_check_at
            .is_some_and(|at| tokio::time::Instant::now() >= at)
        {
            self.liveness_check_at = None;
            self.check_worker_alive(me).await?;
        }
        let deadline = self.record.requirements.deadline_ms;
        let waiting = matches!(self.record.view.state, JobState::Queued | JobState::Auctioning);
        if deadline != 0 && waiting && now_ms() > deadline {
            let reason = match &self.record.view.reason {
                Some(waiting) => format!("deadline passed while {waiting}"),
                None => "deadline passed before a worker took the job".to_string(),
            };
            self.abandon_award().await?;
            self.move_to(JobState::Expired, Some(reason)).await?;
        }
        Ok(())
    }

    async fn check_worker_alive(&mut self, me: &ActorRef<SupervisorMsg>) -> Result<(), ActorProcessingErr> {
        let Some(award) = self.record.award.clone().filter(|a| !a.settled) else {
            return Ok(());
        };
        let worker_id = award.worker_id.clone();
        let alive = ractor::call_t!(
            self.deps.registry,
            |reply| RegistryMsg::Alive { worker_id, reply },
            5_000
        );
        if matches!(alive, Ok(false)) {
            tracing::warn!(job = %self.job_id(), worker = %award.worker_id, "worker did not rejoin after a restart: lost");
            self.worker_lost(me, &award.worker_id).await?;
        }
        Ok(())
    }

    /// Returns to the researcher whatever a finished job's escrow still holds (a hold whose
    /// outcome was unknown when it was made). True when the escrow is known to be empty.
    async fn sweep_escrow(&mut self) -> bool {
        let job_id = self.job_id().to_string();
        let left = match ractor::call_t!(self.deps.ledger, LedgerMsg::Balance, 5_000, escrow(&job_id)) {
            Ok(left) => left,
            Err(_) => return false,
        };
        let Ok(amount) = u64::try_from(left) else { return true };
        if amount == 0 {
            return true;
        }
        let principal = self.record.view.principal.clone();
        let swept = self
            .transfer(
                format!("sweep.{job_id}"),
                escrow(&job_id),
                user(&principal),
                amount,
                "return a stray hold",
            )
            .await;
        tracing::warn!(job = %job_id, amount, ok = swept.is_ok(), "swept a stray hold back to the researcher");
        swept.is_ok()
    }
}
