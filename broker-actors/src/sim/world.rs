//! The simulated world: jobs (each the real pure core plus what its record last persisted),
//! the ledger's real book, workers (honest or lying), a registry model, and a queue of
//! messages in flight with their delivery times. Only the seed's random numbers decide what
//! happens, so a run is a pure function of (seed, options).

use std::collections::{BTreeMap, BTreeSet};

use helium_protocol::{
    artifacts::{self, ArtifactInfo},
    job::JobState,
    ledger::{user, Transfer, MINT},
    subjects::keys,
    worker::{AwardAck, Bid, RunEvent, RunEventKind},
    PROTOCOL_VERSION,
};

use super::{check, fixture, Failure, Report, Rng};
use crate::auction::decide::{decide, Offer};
use crate::jobs::core::{Answer, Config, Effect, Input, Job, TransferOutcome};
use crate::jobs::record::JobRecord;
use crate::ledger::book::Book;

/// Probabilities of each fault, per opportunity.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// A transfer's outcome is not known to the broker (applied or not).
    pub unknown_transfer: f64,
    /// A request to a worker, or its answer, is lost.
    pub loss: f64,
    /// A durable run event is delivered twice.
    pub dup: f64,
    /// The broker crashes before one effect of a step.
    pub crash: f64,
    /// Per fault opportunity: a worker vanishes / pauses past its heartbeat timeout.
    pub vanish: f64,
    pub pause: f64,
    /// The broker's clock jumps (either way, up to a minute).
    pub clock_jump: f64,
    /// Fraction of workers that lie.
    pub liars: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            unknown_transfer: 0.05,
            loss: 0.05,
            dup: 0.05,
            crash: 0.01,
            vanish: 0.05,
            pause: 0.05,
            clock_jump: 0.02,
            liars: 0.3,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Steps of the faulty phase.
    pub steps: u64,
    pub jobs: usize,
    pub workers: usize,
    pub faults: Faults,
    /// Simulated time the calm phase (no faults, every worker back) may take to end every job.
    pub calm_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            steps: 3_000,
            jobs: 6,
            workers: 4,
            faults: Faults::default(),
            calm_ms: 4 * 3_600_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lie {
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
struct Run {
    job: usize,
    award_id: String,
    start: u64,
    /// Steps truly trained (fractional: time moves in milliseconds).
    step: f64,
    total: u64,
    per_epoch: u64,
    last_checkpoint: u64,
    steps_per_ms: f64,
}

#[derive(Debug, Clone)]
struct Worker {
    id: String,
    owner: String,
    price_per_hour: u64,
    throughput: f64,
    lie: Lie,
    alive: bool,
    paused_until: Option<u64>,
    /// The registry's view: reserved for this job.
    reserved: Option<usize>,
    run: Option<Run>,
}

#[derive(Debug, Clone)]
enum Msg {
    ToJob(usize, Input),
    /// A durable run event (the `helium_runs` stream): delivered at least once.
    RunEvent(usize, String, RunEvent),
    /// A paused worker wakes up.
    Wake(usize),
    /// A vanished worker registers again.
    Return(usize),
}

#[derive(Debug, Clone)]
pub(super) struct SimJob {
    pub job: Job,
    pub persisted: JobRecord,
    pub terminal: Option<JobState>,
}

/// What the simulator knows to be true about an award (the core knows only what it was told).
#[derive(Debug, Clone, Default)]
pub(super) struct AwardTruth {
    pub owner: String,
    pub price: u64,
    pub start_step: u64,
    pub award_steps: u64,
    /// Checkpoint steps this award's worker uploaded and the broker recorded.
    pub stored: BTreeSet<u64>,
    pub result_stored: bool,
    /// Steps the worker truly trained in this award.
    pub trained: u64,
    /// True time the hold was asked for, the winner's ETA, and when the pay was applied.
    pub held_at: u64,
    /// Steps per second at the winner's advertised throughput.
    pub pace: f64,
    pub paid_at: Option<u64>,
}

pub struct World {
    seed: u64,
    rng: Rng,
    opts: Options,
    faulty: bool,
    now: u64,
    skew: i64,
    seq: u64,
    queue: Vec<(u64, u64, Msg)>,
    workers: Vec<Worker>,
    pub(super) jobs: Vec<SimJob>,
    pub(super) book: Book,
    pub(super) journal: Vec<Transfer>,
    pub(super) awards: BTreeMap<(usize, u32), AwardTruth>,
    pub(super) budgets: Vec<u64>,
    /// Jobs whose model fails training (honest workers report it, not their fault).
    broken: Vec<bool>,
    /// What an effect showed to be wrong, reported by the next check.
    pub(super) violations: Vec<String>,
    crashes: u64,
    restarting: bool,
    crash_again: bool,
    steps: u64,
}

const CONFIG: Config = Config {
    max_checkpoints_per_award: 1_000,
};
const HEARTBEAT_TIMEOUT_MS: u64 = 5_000;
const AWARD_ANSWER_MS: u64 = 10_000;

impl World {
    pub fn new(seed: u64, opts: Options) -> Self {
        let mut rng = Rng::new(seed);
        let mut book = Book::default();
        let mut journal = Vec::new();
        let workers = (0..opts.workers.max(1))
            .map(|i| {
                let lie = if i == 0 || !rng.chance(opts.faults.liars) {
                    Lie::Honest
                } else {
                    *rng.pick(&[Lie::EarlyComplete, Lie::CheckpointAhead, Lie::NoResult, Lie::EtaZero]).unwrap_or(&Lie::Honest)
                };
                Worker {
                    id: format!("w{i}"),
                    // Two workers share each owner: same-owner bids happen.
                    owner: format!("owner{}", i / 2),
                    // Worker 0 is honest, never vanishes and is cheap enough for every job's
                    // budget: once faults stop, every job can end.
                    price_per_hour: if i == 0 { 100_000 } else { 50_000 + rng.below(5_000_000) },
                    throughput: 2_000.0 + rng.below(20_000) as f64,
                    lie,
                    alive: true,
                    paused_until: None,
                    reserved: None,
                    run: None,
                }
            })
            .collect();
        let mut jobs = Vec::new();
        let mut budgets = Vec::new();
        let mut broken = Vec::new();
        for j in 0..opts.jobs {
            broken.push(rng.chance(0.1));
            let principal = format!("researcher{}", j % 3);
            let budget = 50_000 + rng.below(2_000_000);
            let deadline = if rng.chance(0.2) { 20_000 + rng.below(200_000) } else { 0 };
            let record = fixture::record(&format!("job{j}"), &principal, 1 + rng.below(4) as u32, 20 + rng.below(500), budget, deadline);
            let grant = Transfer {
                v: PROTOCOL_VERSION,
                id: format!("grant.job{j}"),
                debit: MINT.into(),
                credit: user(&principal),
                amount: budget,
                memo: "grant".into(),
            };
            if book.apply(grant.clone()).is_ok() {
                journal.push(grant);
            }
            budgets.push(budget);
            jobs.push(SimJob {
                persisted: record.clone(),
                job: Job::new(record, CONFIG),
                terminal: None,
            });
        }
        Self {
            seed,
            rng,
            opts,
            faulty: true,
            now: 0,
            skew: 0,
            seq: 0,
            queue: Vec::new(),
            workers,
            jobs,
            book,
            journal,
            awards: BTreeMap::new(),
            budgets,
            broken,
            violations: Vec::new(),
            crashes: 0,
            restarting: false,
            crash_again: false,
            steps: 0,
        }
    }

    fn fail(&self, what: String) -> Failure {
        Failure {
            seed: self.seed,
            step: self.steps,
            what,
        }
    }

    /// The broker's clock: the true time plus a skew that jumps.
    fn broker_now(&self) -> u64 {
        (self.now as i64 + self.skew).max(0) as u64
    }

    fn send(&mut self, delay: u64, msg: Msg) {
        self.seq += 1;
        self.queue.push((self.now + delay, self.seq, msg));
    }

    fn delay(&mut self) -> u64 {
        1 + self.rng.below(300)
    }

    pub fn run(mut self) -> Result<Report, Failure> {
        for i in 0..self.jobs.len() {
            self.feed(i, Input::Start { restarted: false });
        }
        while self.steps < self.opts.steps {
            self.step_once();
            self.steps += 1;
            check::after_step(&self).map_err(|w| self.fail(w))?;
        }
        // Calm: every fault stops, every worker comes back; every job must now end.
        self.faulty = false;
        for w in &mut self.workers {
            w.alive = true;
            w.paused_until = None;
        }
        let until = self.now + self.opts.calm_ms;
        while self.now < until && !check::all_done(&self) {
            self.step_once();
            self.steps += 1;
            check::after_step(&self).map_err(|w| self.fail(w))?;
        }
        check::at_end(&self).map_err(|w| self.fail(w))?;
        let count = |s: JobState| self.jobs.iter().filter(|j| j.job.state() == s).count();
        Ok(Report {
            seed: self.seed,
            steps: self.steps,
            jobs_completed: count(JobState::Completed),
            jobs_failed: count(JobState::Failed),
            jobs_cancelled: count(JobState::Cancelled),
            jobs_expired: count(JobState::Expired),
            crashes: self.crashes,
            transfers: self.journal.len(),
        })
    }

    fn step_once(&mut self) {
        match self.rng.below(100) {
            0..=54 => self.deliver(),
            55..=79 => {
                let ms = 1 + self.rng.below(2_000);
                self.advance(ms);
            }
            80..=83 => {
                let j = self.rng.below(self.jobs.len() as u64) as usize;
                self.feed(j, Input::Capacity);
            }
            84 if self.faulty => {
                let j = self.rng.below(self.jobs.len() as u64) as usize;
                let principal = self.jobs[j].job.record.view.principal.clone();
                self.feed(j, Input::Cancel { principal });
            }
            85..=99 if self.faulty => self.fault(),
            _ => self.deliver(),
        }
    }

    /// Delivers the earliest message in flight (advancing the clock to it); ties and near
    /// ties are reordered by their random delays.
    fn deliver(&mut self) {
        let Some(index) = (0..self.queue.len()).min_by_key(|&i| (self.queue[i].0, self.queue[i].1)) else {
            self.advance(1_000);
            return;
        };
        let (at, _, msg) = self.queue.swap_remove(index);
        self.now = self.now.max(at);
        match msg {
            Msg::ToJob(j, input) => {
                self.feed(j, input);
            }
            Msg::RunEvent(j, worker, event) => {
                if self.faulty && self.rng.chance(self.opts.faults.dup) {
                    let d = self.delay();
                    self.send(d, Msg::RunEvent(j, worker.clone(), event.clone()));
                }
                let answer = self.feed(j, Input::Run { worker_id: worker.clone(), event: event.clone() });
                if answer.is_none() {
                    // The broker crashed before acknowledging: the stream delivers it again.
                    self.send(1_000, Msg::RunEvent(j, worker, event));
                }
            }
            Msg::Wake(w) => self.workers[w].paused_until = None,
            Msg::Return(w) => {
                self.workers[w].alive = true;
                self.workers[w].run = None;
            }
        }
    }

    fn fault(&mut self) {
        let f = self.opts.faults.clone();
        let w = self.rng.below(self.workers.len() as u64) as usize;
        if self.rng.chance(f.crash * 10.0) {
            self.crash();
        } else if self.rng.chance(f.vanish) && self.workers[w].alive && w != 0 {
            self.workers[w].alive = false;
            self.workers[w].run = None;
            self.lose(w);
            let back = 10_000 + self.rng.below(60_000);
            self.send(back, Msg::Return(w));
        } else if self.rng.chance(f.pause) && self.workers[w].paused_until.is_none() {
            // SIGSTOP past the heartbeat timeout, SIGCONT later: its run goes on, stale.
            let wake = HEARTBEAT_TIMEOUT_MS + 1_000 + self.rng.below(20_000);
            self.workers[w].paused_until = Some(self.now + wake);
            self.lose(w);
            self.send(wake, Msg::Wake(w));
        } else if self.rng.chance(f.clock_jump * 10.0) {
            self.skew += self.rng.below(120_000) as i64 - 60_000;
        }
    }

    /// The registry declares worker `w` lost after its heartbeat timeout.
    fn lose(&mut self, w: usize) {
        if let Some(j) = self.workers[w].reserved.take() {
            let worker_id = self.workers[w].id.clone();
            self.send(HEARTBEAT_TIMEOUT_MS, Msg::ToJob(j, Input::WorkerLost { worker_id }));
        }
    }

    /// The broker dies and restarts: what was only in memory is gone (the jobs' memory, effects
    /// in flight back to it, the registry); durable run events stay; every job restarts from
    /// its last persisted record.
    fn crash(&mut self) {
        self.crashes += 1;
        self.queue.retain(|(_, _, m)| !matches!(m, Msg::ToJob(..)));
        for w in &mut self.workers {
            // Live workers rejoin; a running one's heartbeat names its job.
            w.reserved = w.run.as_ref().filter(|_| w.alive).map(|r| r.job);
        }
        for j in 0..self.jobs.len() {
            let sj = &mut self.jobs[j];
            sj.job = Job::new(sj.persisted.clone(), CONFIG);
        }
        self.restarting = true;
        for j in 0..self.jobs.len() {
            self.feed(j, Input::Start { restarted: true });
        }
        self.restarting = false;
        if std::mem::take(&mut self.crash_again) {
            self.crash();
        }
    }

    /// Time passes: workers train, and every job ticks.
    fn advance(&mut self, ms: u64) {
        self.now += ms;
        for w in 0..self.workers.len() {
            self.train(w, ms);
        }
        for j in 0..self.jobs.len() {
            self.feed(j, Input::Tick);
        }
    }

    /// One step of job `j`, carried out like the supervisor does: persist, then each effect,
    /// with a chance of crashing before any of them. `None` when the broker crashed.
    pub(super) fn feed(&mut self, j: usize, input: Input) -> Option<Answer> {
        let now = crate::jobs::core::Now {
            wall_ms: self.broker_now(),
            mono_ms: self.now,
        };
        let step = self.jobs[j].job.step(input, now);
        if step.persist {
            self.jobs[j].persisted = self.jobs[j].job.record.clone();
        }
        let state = self.jobs[j].job.state();
        if state.is_terminal() && self.jobs[j].terminal.is_none() {
            self.jobs[j].terminal = Some(state);
        }
        for effect in step.effects {
            if self.faulty && self.rng.chance(self.opts.faults.crash) {
                if self.restarting {
                    // Dies again while restarting: once this restart is through, restart again.
                    self.crash_again = true;
                } else {
                    self.crash();
                }
                return None;
            }
            self.perform(j, effect);
        }
        Some(step.answer)
    }

    fn transfer(&mut self, t: Transfer) -> TransferOutcome {
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

    fn perform(&mut self, j: usize, effect: Effect) {
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
            Effect::Release { worker_id } => {
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

    fn award(&mut self, j: usize, worker_id: &str, award: helium_protocol::worker::Award) {
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
    fn train(&mut self, w: usize, ms: u64) {
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
