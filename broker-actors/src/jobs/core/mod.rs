//! The pure core of a job's life: [`Job::step`] takes the job (its durable record and what
//! it keeps in memory), one [`Input`] and the time, changes the job and returns a [`Step`]:
//! whether the record must be persisted, the [`Effect`]s to perform, and the answer to the
//! input's sender. It performs no I/O, reads no clock and spawns nothing, so the same function
//! runs inside the broker's JobSupervisor (`supervisor.rs`, which performs the effects) and
//! inside the deterministic simulator (`sim/`), which drives it through faults.
//!
//! Guarantees, which the executor keeps by performing a step in order — persist first (retried
//! until it succeeds, or the job is given up on a revision conflict), then the effects:
//! - **A decision is durable before anything it implies happens.** An award is recorded before
//!   its hold is asked for; a settlement's steps and the state they end in are recorded, in one
//!   write, before the pay and refund transfers are made. A restart ([`Input::Start`]) makes
//!   the same transfers again under the same ids (`hold|pay|refund.<job>.<n>`), which the
//!   ledger applies once.
//! - **An answer means persisted**: a worker's upload or run event is acknowledged only after
//!   what it changed is in the record.
//! - **A terminal job never moves** ([`can_move`]); its record changes only to confirm money
//!   already decided.
//! - **Pay follows verified work only**: checkpoints and results the broker verified on commit,
//!   no further than the time since the award makes plausible (`run.rs`).

mod access;
mod award;
mod reason;
mod run;
mod settle;

use helium_protocol::{
    api::{JobEventKind, JobView},
    artifacts::ArtifactInfo,
    job::{DeclaredWork, JobState, Requirements},
    ledger::Transfer,
    worker::{Award, AwardAck, CancelRun, RunEvent, Settled},
    ErrorCode, WireError,
};

pub use access::{read_access, upload_target};
pub use reason::Reason;

use super::record::JobRecord;
use crate::auction::Outcome;
pub use crate::registry::record::Track;

/// How often a waiting job re-auctions on its own.
pub const REAUCTION_EVERY_MS: u64 = 5_000;
/// Wait before re-auctioning after a winner refused the award.
pub const REFUSAL_BACKOFF_MS: u64 = 1_000;
/// After a restart, how long a running job's worker has to show up again before it is lost.
pub const REJOIN_GRACE_MS: u64 = 30_000;
/// How much faster than the throughput its own ask advertises a worker may plausibly train;
/// checkpoints and results claiming more are not believed. Generous: a start-up benchmark on a
/// small model underrates large matrix products by tens of times (a wide MLP trained 53× the
/// pace a test worker's ask claimed). It stops the incoherent lie (an ask that prices the work
/// as hours, then a claim of the end at once), not a worker that lies consistently.
pub const PLAUSIBLE_SPEEDUP: f64 = 100.0;

/// What the grid's configuration says about every job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub max_checkpoints_per_award: u32,
}

/// The time of a step: the wall clock (deadlines, event times) and a monotonic clock
/// (durations: a wall clock that jumps must not make a worker's claims plausible).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub wall_ms: u64,
    pub mono_ms: u64,
}

impl Now {
    /// Both clocks at `ms` (tests).
    pub fn at(ms: u64) -> Self {
        Self { wall_ms: ms, mono_ms: ms }
    }
}

/// What a job keeps only in memory: lost with the broker, rebuilt by [`Input::Start`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mem {
    /// The monotonic clock at this step.
    mono: u64,
    /// (monotonic time, award's elapsed ms then) for the award in force.
    award_clock: Option<(u64, u64)>,
    auction_in_flight: bool,
    /// Capacity appeared while an auction was running: run another when it closes empty.
    poked: bool,
    /// When the job next tries an auction (or asks for its hold again) by itself.
    retry_at: Option<u64>,
    /// When to check that the worker of a restarted running job is still there.
    liveness_at: Option<u64>,
    holding: bool,
    settling: bool,
    sweeping: bool,
    /// Bids of the auction whose award is being held, for the `awarded` event.
    bids: u32,
    /// The award was abandoned before its hold was known: settle it as soon as it is.
    abandon_when_held: bool,
    finished: bool,
}

/// A job: its durable record, what it keeps in memory, and the grid's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub record: JobRecord,
    pub mem: Mem,
    pub config: Config,
}

/// How a transfer the executor made turned out.
#[derive(Debug, Clone, PartialEq)]
pub enum TransferOutcome {
    /// Applied, now or before (the ledger applies an id once).
    Applied,
    /// Refused for good (e.g. insufficient funds): nothing moved.
    Refused(WireError),
    /// Not known (a timeout, the ledger unavailable): asked again under the same id.
    Unknown(String),
}

/// Everything that can happen to a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The job's supervisor started: at submit (`restarted: false`) or respawned from its
    /// record by a broker that started (`restarted: true`).
    Start { restarted: bool },
    /// A worker became idle somewhere: auction if waiting.
    Capacity,
    AuctionClosed(Outcome),
    HoldDone { n: u32, outcome: TransferOutcome },
    AwardAnswered { award_id: String, answer: Result<AwardAck, String> },
    Run { worker_id: String, event: RunEvent },
    /// A worker's upload of `name` was committed and verified (answered: may it count?).
    Stored { worker_id: String, name: String, info: ArtifactInfo },
    Cancel { principal: String },
    WorkerLost { worker_id: String },
    WorkerAlive { worker_id: String, alive: bool },
    /// Both settlement transfers of award `n`.
    SettleDone { n: u32, outcome: TransferOutcome },
    /// Whether the finished job's escrow is empty now.
    Swept { empty: bool },
    Tick,
}

/// What the executor does after persisting the record (when [`Step::persist`] says so), in
/// order. Effects with an outcome come back as an [`Input`].
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Publish a job event to the researcher.
    Publish(JobEventKind),
    /// Run an auction → [`Input::AuctionClosed`].
    Auction {
        requirements: Requirements,
        work: DeclaredWork,
        exclude: Vec<String>,
    },
    /// The hold of award `n` → [`Input::HoldDone`].
    Hold { n: u32, transfer: Transfer },
    /// Pay and refund of award `n`, each idempotent by id → [`Input::SettleDone`].
    Settle { n: u32, transfers: Vec<Transfer> },
    /// Return whatever the finished job's escrow still holds → [`Input::Swept`].
    Sweep,
    Reserve { worker_id: String },
    /// Free the worker; `track` is how its award ended, for its reputation.
    Release { worker_id: String, track: Track },
    /// Send the award to its worker → [`Input::AwardAnswered`].
    SendAward { worker_id: String, award: Award },
    SendCancel { worker_id: String, cancel: CancelRun },
    /// At most once, for the worker's log.
    NotifySettled { worker_id: String, notice: Settled },
    /// Ask the registry → [`Input::WorkerAlive`].
    CheckAlive { worker_id: String },
    /// Delete an object the job no longer needs (a superseded checkpoint).
    Delete { key: String },
    /// The job is finished and its money settled: nothing more will happen without an input.
    Finished,
}

/// The answer to the input's sender, sent once the step is persisted.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    None,
    /// Run events and stored uploads: accepted, or why not.
    Ack(Result<(), WireError>),
    /// A cancel: the job as it is now.
    View(Result<JobView, WireError>),
}

/// What one input did.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The record changed: write it before performing any effect or answering.
    pub persist: bool,
    pub effects: Vec<Effect>,
    pub answer: Answer,
}

/// Whether a job in `state` may move to `next`. A terminal job never moves.
pub fn can_move(state: JobState, next: JobState) -> bool {
    use JobState::*;
    matches!(
        (state, next),
        (Queued, Auctioning | Cancelled | Expired)
            | (Auctioning, Queued | Assigned | Failed | Cancelled | Expired)
            | (Assigned, Running | Queued | Completed | Failed | Cancelled | Expired)
            | (Running, Queued | Completed | Failed | Cancelled | Expired)
    )
}

impl Job {
    pub fn new(record: JobRecord, config: Config) -> Self {
        Self {
            record,
            mem: Mem::default(),
            config,
        }
    }

    pub fn job_id(&self) -> &str {
        &self.record.view.job_id
    }

    pub fn state(&self) -> JobState {
        self.record.view.state
    }

    /// The single transition function: every rule of a job's life is reached from here.
    pub fn step(&mut self, input: Input, at: Now) -> Step {
        let before = self.record.clone();
        self.mem.mono = at.mono_ms;
        let now = at.wall_ms;
        let mut fx = Vec::new();
        let answer = match input {
            Input::Start { restarted } => {
                self.start(&mut fx, restarted, now);
                Answer::None
            }
            Input::Capacity => {
                self.start_auction(&mut fx, now);
                Answer::None
            }
            Input::AuctionClosed(outcome) => {
                self.auction_closed(&mut fx, outcome, now);
                Answer::None
            }
            Input::HoldDone { n, outcome } => {
                self.hold_done(&mut fx, n, outcome, now);
                Answer::None
            }
            Input::AwardAnswered { award_id, answer } => {
                self.award_answered(&mut fx, &award_id, answer, now);
                Answer::None
            }
            Input::Run { worker_id, event } => Answer::Ack(self.run_event(&mut fx, &worker_id, event, now)),
            Input::Stored { worker_id, name, info } => Answer::Ack(self.stored(&mut fx, &worker_id, &name, info)),
            Input::Cancel { principal } => Answer::View(self.cancel(&mut fx, &principal, now)),
            Input::WorkerLost { worker_id } => {
                self.worker_lost(&mut fx, &worker_id, now);
                Answer::None
            }
            Input::WorkerAlive { worker_id, alive } => {
                if !alive {
                    self.worker_lost(&mut fx, &worker_id, now);
                }
                Answer::None
            }
            Input::SettleDone { n, outcome } => {
                self.settle_done(&mut fx, n, outcome, now);
                Answer::None
            }
            Input::Swept { empty } => {
                self.mem.sweeping = false;
                self.record.swept |= empty;
                self.finish_if_done(&mut fx);
                Answer::None
            }
            Input::Tick => {
                self.tick(&mut fx, now);
                Answer::None
            }
        };
        let persist = self.record != before;
        // The researcher's view changes time only when it changes (confirming money already
        // decided, or the sweep, is bookkeeping).
        if self.record.view != before.view {
            self.record.view.updated_ms = now;
        }
        Step {
            persist,
            effects: fx,
            answer,
        }
    }

    /// The job as its researcher sees it, or `not_found` for anyone else.
    pub fn view_for(&self, principal: &str) -> Result<JobView, WireError> {
        if self.record.view.principal == principal {
            Ok(self.record.view.clone())
        } else {
            Err(WireError::new(
                ErrorCode::NotFound,
                format!("no job {} of {principal}", self.job_id()),
            ))
        }
    }

    fn start(&mut self, fx: &mut Vec<Effect>, restarted: bool, now: u64) {
        self.mem = Mem {
            mono: self.mem.mono,
            ..Mem::default()
        };
        let state = self.state();
        if let Some(a) = self.record.award.clone().filter(|a| !a.settled) {
            if a.held {
                self.mem.award_clock = Some((self.mem.mono, a.elapsed_ms));
            }
            if !a.held {
                // Recorded, hold unknown: ask again under the same id, then go on as if
                // nothing happened (the award was never sent).
                self.ask_hold(fx);
            } else if a.settle_steps.is_some() {
                self.make_settle_transfers(fx);
            } else if restarted && state == JobState::Auctioning {
                // Its answer died with the previous broker: stop the worker if it took it.
                self.abandon(fx, Track::Neutral);
            } else if restarted && matches!(state, JobState::Assigned | JobState::Running) {
                // The registry starts empty: a worker that died meanwhile would never be
                // reported lost. Check once it had time to rejoin.
                self.mem.liveness_at = Some(now.saturating_add(REJOIN_GRACE_MS));
            }
        }
        if matches!(state, JobState::Queued | JobState::Auctioning) {
            self.start_auction(fx, now);
        }
        self.finish_if_done(fx);
    }

    /// Moves to `next` with `reason` if the rules allow it, and tells the researcher. False
    /// (and nothing changes) when they do not.
    fn move_to(&mut self, fx: &mut Vec<Effect>, next: JobState, reason: Option<Reason>) -> bool {
        let current = self.state();
        if current == next && self.record.reason == reason {
            return true;
        }
        if current != next && !can_move(current, next) {
            return false;
        }
        let text = reason.as_ref().map(Reason::text);
        self.record.view.state = next;
        self.record.view.reason = text.clone();
        self.record.view.reason_code = reason.as_ref().map(|r| r.code().to_string());
        self.record.reason = reason;
        fx.push(Effect::Publish(JobEventKind::State { state: next, reason: text }));
        true
    }

    fn tick(&mut self, fx: &mut Vec<Effect>, now: u64) {
        if let Some(a) = self.record.award.clone().filter(|a| !a.settled) {
            if !a.held {
                self.ask_hold(fx);
            } else if a.settle_steps.is_some() {
                self.make_settle_transfers(fx);
            }
        }
        if self.state().is_terminal() {
            self.finish_if_done(fx);
            return;
        }
        if self.mem.retry_at.is_some_and(|at| now >= at) {
            self.mem.retry_at = None;
            self.start_auction(fx, now);
        }
        if self.mem.liveness_at.is_some_and(|at| now >= at) {
            self.mem.liveness_at = None;
            if let Some(a) = self.record.award.as_ref().filter(|a| !a.settled && a.held) {
                fx.push(Effect::CheckAlive {
                    worker_id: a.worker_id.clone(),
                });
            }
        }
        let deadline = self.record.requirements.deadline_ms;
        if deadline != 0 && now > deadline {
            let state = self.state();
            let waiting = matches!(state, JobState::Queued | JobState::Auctioning);
            let reason = Reason::DeadlinePassed {
                waiting: waiting.then(|| self.record.reason.as_ref().map(Reason::text)).flatten(),
                running: !waiting,
            };
            self.abandon(fx, Track::Neutral);
            self.move_to(fx, JobState::Expired, Some(reason));
        }
    }

    /// A finished job whose money is settled sweeps its escrow once, then stops ticking.
    fn finish_if_done(&mut self, fx: &mut Vec<Effect>) {
        if !self.state().is_terminal() || self.record.award.as_ref().is_some_and(|a| !a.settled) {
            return;
        }
        if !self.record.swept {
            if !self.mem.sweeping {
                self.mem.sweeping = true;
                fx.push(Effect::Sweep);
            }
        } else if !self.mem.finished {
            self.mem.finished = true;
            fx.push(Effect::Finished);
        }
    }

    fn cancel(&mut self, fx: &mut Vec<Effect>, principal: &str, now: u64) -> Result<JobView, WireError> {
        self.view_for(principal)?;
        if self.state().is_terminal() {
            return Err(WireError::new(
                ErrorCode::Conflict,
                format!("job is already {:?}", self.state()),
            ));
        }
        let _ = now;
        self.abandon(fx, Track::Neutral);
        self.move_to(fx, JobState::Cancelled, Some(Reason::Cancelled));
        self.finish_if_done(fx);
        Ok(self.record.view.clone())
    }

    /// Optimizer steps of the whole job.
    fn total_steps(&self) -> u64 {
        self.record.training.total_steps(self.record.work.samples)
    }

    /// Epochs not yet done, i.e. the work an auction sells now.
    fn remaining_work(&self) -> DeclaredWork {
        let done = self.record.view.epochs_done;
        DeclaredWork {
            epochs: self.record.work.epochs.saturating_sub(done).max(1),
            ..self.record.work
        }
    }
}

#[cfg(test)]
mod tests;
