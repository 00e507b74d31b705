//! The simulated world: jobs (each the real pure core plus what its record last persisted),
//! the ledger's real book, workers (honest or lying), a registry model, and a queue of
//! messages in flight with their delivery times. Only the seed's random numbers decide what
//! happens, so a run is a pure function of (seed, options).

use std::collections::{BTreeMap, BTreeSet};

use helium_protocol::{
    job::JobState,
    ledger::{user, Transfer, MINT},
    worker::RunEvent,
    PROTOCOL_VERSION,
};

use super::workers::{Lie, Worker};
use super::{check, fixture, Failure, Report, Rng};
use crate::jobs::core::{Answer, Config, Input, Job};
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

#[derive(Debug, Clone)]
pub(super) enum Msg {
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
    pub(super) seed: u64,
    pub(super) rng: Rng,
    pub(super) opts: Options,
    pub(super) faulty: bool,
    pub(super) now: u64,
    pub(super) skew: i64,
    pub(super) seq: u64,
    pub(super) queue: Vec<(u64, u64, Msg)>,
    pub(super) workers: Vec<Worker>,
    pub(super) jobs: Vec<SimJob>,
    pub(super) book: Book,
    pub(super) journal: Vec<Transfer>,
    pub(super) awards: BTreeMap<(usize, u32), AwardTruth>,
    pub(super) budgets: Vec<u64>,
    /// Jobs whose model fails training (honest workers report it, not their fault).
    pub(super) broken: Vec<bool>,
    /// What an effect showed to be wrong, reported by the next check.
    pub(super) violations: Vec<String>,
    pub(super) crashes: u64,
    pub(super) restarting: bool,
    pub(super) crash_again: bool,
    pub(super) steps: u64,
}

const CONFIG: Config = Config {
    max_checkpoints_per_award: 1_000,
};
pub(super) const HEARTBEAT_TIMEOUT_MS: u64 = 5_000;
pub(super) const AWARD_ANSWER_MS: u64 = 10_000;

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
    pub(super) fn broker_now(&self) -> u64 {
        (self.now as i64 + self.skew).max(0) as u64
    }

    pub(super) fn send(&mut self, delay: u64, msg: Msg) {
        self.seq += 1;
        self.queue.push((self.now + delay, self.seq, msg));
    }

    pub(super) fn delay(&mut self) -> u64 {
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
    pub(super) fn lose(&mut self, w: usize) {
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
}
