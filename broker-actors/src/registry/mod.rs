//! The WorkerRegistry actor: every worker's standing ask and liveness. Workers register, then
//! heartbeat; one that misses [`MISSED_BEATS`] beats is considered lost. The registry tells
//! the job manager when capacity appears (a worker joins or frees up) or vanishes.
//!
//! It also chooses whom an auction invites: live, idle workers are kept in two sorted views
//! (by price per unit of throughput, and by price), updated when a worker registers, is
//! reserved, released, lost or revived, so that an auction reads a few entries of them
//! ([`decide::invitees_indexed`]) instead of copying and sorting the whole grid.
//!
//! It remembers each worker's past ([`record`]): how its awards ended (its reputation, which
//! ranks its invitations: a worker that abandons jobs is invited as if it were dearer) and the
//! last auction notes, which its owner reads with `worker.log`. Both live in memory: a
//! restarted broker starts every worker afresh at reputation 1.

pub mod record;

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use helium_protocol::{
    api::WorkerView,
    job::{DeclaredWork, DeviceKind, Requirements},
    worker::{Ask, AuctionNote, Heartbeat, Register, Registered},
};
use ractor::{Actor, ActorProcessingErr, ActorRef, OutputPort, RpcReplyPort};

use crate::auction::{decide, Candidate};
use record::{Track, WorkerRecord};

/// Heartbeats a worker may miss before it is considered lost.
pub const MISSED_BEATS: u32 = 5;

/// What the registry announces to whoever subscribed.
#[derive(Debug, Clone)]
pub enum RegistryEvent {
    /// A worker joined or became idle: queued jobs may now find a bidder.
    CapacityAvailable,
    /// A worker stopped heart-beating, or restarted, while it ran `job`.
    WorkerLost { worker_id: String, job: Option<String> },
}

/// Why the registry refused a registration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterRefused {
    /// The id is registered, and live, with another owner: two owners' workers under one id
    /// would be one worker to the auction, paid to whichever registered last.
    #[error("worker {worker_id} is registered to {owner} and live; a worker of {claimed} cannot take its id")]
    OwnedByAnother {
        worker_id: String,
        owner: String,
        claimed: String,
    },
}

pub enum RegistryMsg {
    /// A worker's registration: the owner is the one its verified credential names. Refused
    /// while the id is live under another owner (once it is lost, another owner may take it).
    Register {
        worker_id: String,
        register: Register,
        reply: RpcReplyPort<Result<Registered, RegisterRefused>>,
    },
    Heartbeat {
        worker_id: String,
        heartbeat: Heartbeat,
    },
    /// The live, idle workers an auction invites: up to `k` eligible ones, cheapest expected
    /// cost first ([`decide::invitees`]), none of `exclude`; or why there are none.
    Invitees {
        requirements: Requirements,
        work: DeclaredWork,
        exclude: Vec<String>,
        k: usize,
        reply: RpcReplyPort<Result<Vec<Candidate>, String>>,
    },
    /// An auction round chose this worker for `job`: it is not invited again until the job
    /// reserves it (`Reserve`), releases it, or [`PROMISE_TTL`] passes (the award fell through).
    Promise {
        worker_id: String,
        job: String,
    },
    /// [`RegistryMsg::Invitees`] for each job of an auction round, in order, with the
    /// invitations spread over the idle workers.
    RoundInvitees {
        lots: Vec<(Requirements, DeclaredWork, Vec<String>)>,
        k: usize,
        reply: RpcReplyPort<Vec<Result<Vec<Candidate>, String>>>,
    },
    /// Marks a worker busy with a job (at award).
    Reserve {
        worker_id: String,
        job: String,
    },
    /// Frees a worker reserved for `job` (a no-op if it has moved on to another job
    /// meanwhile), and files how its award of `job` ended in its track record.
    Release {
        worker_id: String,
        job: String,
        track: Track,
    },
    /// How each invitation of an auction round ended, per invited worker.
    Notes(Vec<(String, AuctionNote)>),
    /// A worker's owner and its last `limit` auction notes, oldest first (`None`: unknown id).
    Log {
        worker_id: String,
        limit: usize,
        reply: RpcReplyPort<Option<(String, Vec<AuctionNote>)>>,
    },
    /// Whether the worker is registered and heart-beating.
    Alive {
        worker_id: String,
        reply: RpcReplyPort<bool>,
    },
    /// Every worker, with its whole record: the gateway hides the auction record from all but
    /// each worker's owner (`WorkerView::for_caller`).
    List(RpcReplyPort<Vec<WorkerView>>),
    Sweep,
}

struct Entry {
    /// Id, owner, ask and reputation, shared with the idle views.
    candidate: Arc<Candidate>,
    last_seen: Instant,
    busy_with: Option<String>,
    /// `busy_with` was learned from the worker's heartbeat, not set by an award.
    busy_from_heartbeat: bool,
    alive: bool,
    /// An auction round chose it for this job, until then ([`RegistryMsg::Promise`]).
    promised: Option<(String, Instant)>,
    /// The worker process's [`Register::incarnation`].
    incarnation: String,
    /// The keys this worker is filed under in [`IdleIndex`], if it is (alive and idle).
    indexed: Option<IdleKey>,
    /// Why it takes no jobs now, by its owner's terms (its last heartbeat's `paused`).
    paused: Option<String>,
}

/// Where a worker sits in the idle views: its device (which set of views), its
/// [`decide::rate_key`] and its price.
#[derive(Debug, Clone, Copy, PartialEq)]
struct IdleKey {
    device: DeviceKind,
    rate: Rate,
    price: u64,
}

impl IdleKey {
    fn of(ask: &Ask) -> IdleKey {
        IdleKey {
            device: ask.device,
            rate: Rate(decide::rate_key(ask)),
            price: ask.price_per_hour,
        }
    }
}

/// An f64 ordered by `total_cmp` ([`decide::rate_key`] is never NaN: unusable throughputs
/// map to infinity).
#[derive(Debug, Clone, Copy)]
struct Rate(f64);

impl PartialEq for Rate {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl Eq for Rate {}
impl PartialOrd for Rate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Rate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A worker filed under `key` in a sorted view; ties go by worker id. It carries the
/// candidate itself, so reading a view needs no lookup.
struct Filed<K>(K, Arc<Candidate>);

impl<K: Ord> Filed<K> {
    fn order(&self) -> (&K, &str) {
        (&self.0, &self.1.worker_id)
    }
}
impl<K: Ord> PartialEq for Filed<K> {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}
impl<K: Ord> Eq for Filed<K> {}
impl<K: Ord> PartialOrd for Filed<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord> Ord for Filed<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

/// The live, idle workers of one device kind, sorted two ways.
#[derive(Default)]
struct Views {
    by_rate: BTreeSet<Filed<Rate>>,
    by_price: BTreeSet<Filed<u64>>,
}

/// The live, idle workers, one [`Views`] per device kind (a job that wants CUDA never reads
/// the CPU workers, which are the cheapest and would head its price view).
#[derive(Default)]
struct IdleIndex {
    any: Views,
    cpu: Views,
    cuda: Views,
}

impl IdleIndex {
    fn views_mut(&mut self, device: DeviceKind) -> &mut Views {
        match device {
            DeviceKind::Any => &mut self.any,
            DeviceKind::Cpu => &mut self.cpu,
            DeviceKind::Cuda => &mut self.cuda,
        }
    }

    /// The views holding the workers whose device satisfies `wanted`.
    fn serving(&self, wanted: DeviceKind) -> impl Iterator<Item = &Views> {
        [
            (DeviceKind::Any, &self.any),
            (DeviceKind::Cpu, &self.cpu),
            (DeviceKind::Cuda, &self.cuda),
        ]
        .into_iter()
        .filter(move |(device, views)| device.satisfies(wanted) && !views.by_price.is_empty())
        .map(|(_, views)| views)
    }

    fn len(&self) -> usize {
        self.any.by_price.len() + self.cpu.by_price.len() + self.cuda.by_price.len()
    }

    /// Up to `k` idle workers to invite for `work` under `requirements`, none that `skip`s
    /// (cheapest expected cost first), or why there are none.
    fn invitees(
        &self,
        requirements: &Requirements,
        work: &DeclaredWork,
        k: usize,
        skip: impl Fn(&Candidate) -> bool,
    ) -> Result<Vec<Candidate>, String> {
        // Each device kind's views answer on their own; the K best of their answers are the
        // K best of all.
        let mut touched = 0;
        let mut invited = Vec::new();
        for views in self.serving(requirements.device) {
            let search = decide::invitees_indexed(
                views.by_rate.iter().map(|f| (f.0 .0, &*f.1)),
                views.by_price.iter().map(|f| &*f.1),
                requirements,
                work,
                k,
                &skip,
            );
            touched += search.touched;
            invited.extend(search.invited);
        }
        tracing::trace!(touched, idle = self.len(), "invitees");
        if invited.is_empty() {
            // Nobody eligible: say why, from every idle worker (this reads them all).
            let idle: Vec<&Candidate> = [&self.any, &self.cpu, &self.cuda]
                .into_iter()
                .flat_map(|views| views.by_price.iter().map(|f| &*f.1))
                .filter(|c| !skip(c))
                .collect();
            decide::invitees(idle.iter().copied(), requirements, work, k)
        } else {
            Ok(decide::merge_ranked(invited, work, k))
        }
    }

    /// Files or unfiles `entry` so that it is in the views exactly when it is alive and idle,
    /// under its current ask. Called after every change to an entry.
    fn sync(&mut self, entry: &mut Entry) {
        let wanted = entry.idle().then(|| IdleKey::of(&entry.candidate.ask));
        if entry.indexed != wanted {
            self.refile(entry, wanted);
        }
    }

    /// Like [`IdleIndex::sync`], and replaces the filed candidate even when its keys did not
    /// change (a re-registration may change the owner).
    fn sync_new(&mut self, entry: &mut Entry) {
        let wanted = entry.idle().then(|| IdleKey::of(&entry.candidate.ask));
        self.refile(entry, wanted);
    }

    fn refile(&mut self, entry: &mut Entry, wanted: Option<IdleKey>) {
        if let Some(old) = entry.indexed.take() {
            let views = self.views_mut(old.device);
            views.by_rate.remove(&Filed(old.rate, entry.candidate.clone()));
            views.by_price.remove(&Filed(old.price, entry.candidate.clone()));
        }
        if let Some(new) = wanted {
            let views = self.views_mut(new.device);
            views.by_rate.insert(Filed(new.rate, entry.candidate.clone()));
            views.by_price.insert(Filed(new.price, entry.candidate.clone()));
        }
        entry.indexed = wanted;
    }
}

impl Entry {
    /// Alive, not busy, not paused by its owner, and not promised to a job by an auction round.
    fn idle(&self) -> bool {
        self.alive && self.busy_with.is_none() && self.promised.is_none() && self.paused.is_none()
    }
}

/// How long a worker an auction round chose stays out of later rounds if its job neither
/// reserves nor releases it (the award's hold normally takes milliseconds).
pub const PROMISE_TTL: Duration = Duration::from_secs(5);

pub struct WorkerRegistry;

pub struct RegistryArgs {
    pub heartbeat: Duration,
    pub events: Arc<OutputPort<RegistryEvent>>,
}

pub struct RegistryState {
    heartbeat: Duration,
    events: Arc<OutputPort<RegistryEvent>>,
    workers: HashMap<Arc<str>, Entry>,
    idle: IdleIndex,
    /// Every worker id's past, kept across its registrations and losses.
    records: HashMap<Arc<str>, WorkerRecord>,
}

impl Actor for WorkerRegistry {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = RegistryArgs;

    async fn pre_start(
        &self,
        me: ActorRef<RegistryMsg>,
        args: RegistryArgs,
    ) -> Result<RegistryState, ActorProcessingErr> {
        me.send_interval(args.heartbeat, || RegistryMsg::Sweep);
        Ok(RegistryState {
            heartbeat: args.heartbeat,
            events: args.events,
            workers: HashMap::new(),
            idle: IdleIndex::default(),
            records: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        _me: ActorRef<RegistryMsg>,
        msg: RegistryMsg,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RegistryMsg::Register {
                worker_id,
                register,
                reply,
            } => {
                tracing::debug!(worker = %worker_id, owner = %register.owner, price = register.ask.price_per_hour,
                    device = ?register.ask.device, throughput = register.ask.throughput, "worker registered");
                let known = state.workers.get(worker_id.as_str());
                if let Some(live) = known.filter(|e| e.alive && e.candidate.owner != register.owner) {
                    tracing::warn!(worker = %worker_id, owner = %live.candidate.owner, claimed = %register.owner,
                        "registration refused: the id is live under another owner");
                    let _ = reply.send(Err(RegisterRefused::OwnedByAnother {
                        owner: live.candidate.owner.clone(),
                        claimed: register.owner,
                        worker_id,
                    }));
                    return Ok(());
                }
                // An id taken over by another owner (once its worker was lost) starts afresh:
                // the new owner reads nothing of the old one's bids, nor inherits its record.
                if known.is_some_and(|e| e.candidate.owner != register.owner) {
                    state.records.remove(worker_id.as_str());
                }
                let mut busy_with = known.and_then(|e| e.busy_with.clone());
                let mut busy_from_heartbeat = known.is_some_and(|e| e.busy_from_heartbeat);
                // Restarted (a new process) before a heartbeat was missed: what the old one
                // ran is gone, and its job must hear so now rather than wait forever.
                let restarted = known.is_some_and(|e| e.incarnation != register.incarnation);
                if restarted && busy_with.is_some() {
                    let job = busy_with.take();
                    busy_from_heartbeat = false;
                    tracing::warn!(worker = %worker_id, job = ?job, "worker lost: it restarted");
                    state.events.send(RegistryEvent::WorkerLost {
                        worker_id: worker_id.clone(),
                        job,
                    });
                }
                let indexed = known.and_then(|e| e.indexed);
                // Workers re-register periodically (so a restarted broker learns of them); only
                // a new, revived or changed ask is new capacity worth re-auctioning for.
                let news = restarted || known.is_none_or(|e| !e.alive || e.candidate.ask != register.ask);
                let id: Arc<str> = worker_id.as_str().into();
                let mut entry = Entry {
                    candidate: Arc::new(Candidate {
                        worker_id,
                        owner: register.owner,
                        ask: register.ask,
                        reputation: state.records.get(id.as_ref()).map_or(1.0, WorkerRecord::reputation),
                    }),
                    last_seen: Instant::now(),
                    busy_with,
                    busy_from_heartbeat,
                    alive: true,
                    promised: known.and_then(|e| e.promised.clone()),
                    incarnation: register.incarnation,
                    indexed,
                    paused: known.and_then(|e| e.paused.clone()),
                };
                state.idle.sync_new(&mut entry);
                state.workers.insert(id, entry);
                let _ = reply.send(Ok(Registered {
                    heartbeat_ms: state.heartbeat.as_millis() as u64,
                }));
                if news {
                    state.events.send(RegistryEvent::CapacityAvailable);
                }
            }
            RegistryMsg::Heartbeat { worker_id, heartbeat } => {
                if let Some(entry) = state.workers.get_mut(worker_id.as_str()) {
                    entry.last_seen = Instant::now();
                    let revived = !entry.alive;
                    entry.alive = true;
                    // Only the broker frees a worker (at settlement); a heartbeat saying
                    // `running: None` may race an award, so it is logged, not trusted. A worker's
                    // word that it is busy is trusted: after a broker restart it is how the
                    // registry learns which worker runs which job (and whom to report lost).
                    // What a heartbeat taught, a heartbeat may untell.
                    match (&entry.busy_with, heartbeat.running) {
                        (Some(_), None) if entry.busy_from_heartbeat => {
                            entry.busy_with = None;
                            entry.busy_from_heartbeat = false;
                            state.events.send(RegistryEvent::CapacityAvailable);
                        }
                        (Some(job), None) => {
                            tracing::debug!(worker = %worker_id, job = %job, "heartbeat reports idle while busy")
                        }
                        (None, Some(job)) => {
                            entry.busy_with = Some(job);
                            entry.busy_from_heartbeat = true;
                        }
                        _ => {}
                    }
                    // A pause is the worker's word too: it takes no jobs until it says otherwise.
                    let paused = heartbeat.paused.as_deref().map(helium_protocol::validate::note);
                    let resumed = entry.paused.is_some() && paused.is_none();
                    entry.paused = paused;
                    state.idle.sync(entry);
                    if revived || (resumed && entry.idle()) {
                        state.events.send(RegistryEvent::CapacityAvailable);
                    }
                }
            }
            RegistryMsg::Invitees {
                requirements,
                work,
                exclude,
                k,
                reply,
            } => {
                let answer = state
                    .idle
                    .invitees(&requirements, &work, k, |c| exclude.contains(&c.worker_id));
                let _ = reply.send(answer);
            }
            RegistryMsg::RoundInvitees { lots, k, reply } => {
                // A round's invitations are spread: each idle worker is invited by at most
                // ceil(jobs × K / idle workers) of its jobs, older jobs choosing first, so a
                // burst of jobs meets as many distinct workers as there are.
                let per_worker = (lots.len() * k.max(1)).div_ceil(state.idle.len().max(1)).max(1);
                let mut invited: HashMap<String, usize> = HashMap::new();
                let answers = lots
                    .iter()
                    .map(|(requirements, work, exclude)| {
                        let full = |c: &Candidate| {
                            exclude.contains(&c.worker_id)
                                || invited.get(&c.worker_id).is_some_and(|n| *n >= per_worker)
                        };
                        let answer = state.idle.invitees(requirements, work, k, full);
                        if let Ok(chosen) = &answer {
                            for c in chosen {
                                *invited.entry(c.worker_id.clone()).or_default() += 1;
                            }
                        }
                        answer
                    })
                    .collect();
                let _ = reply.send(answers);
            }
            RegistryMsg::Promise { worker_id, job } => {
                if let Some(entry) = state.workers.get_mut(worker_id.as_str()) {
                    entry.promised = Some((job, Instant::now() + PROMISE_TTL));
                    state.idle.sync(entry);
                }
            }
            RegistryMsg::Reserve { worker_id, job } => {
                if let Some(entry) = state.workers.get_mut(worker_id.as_str()) {
                    entry.busy_with = Some(job);
                    entry.busy_from_heartbeat = false;
                    entry.promised = None;
                    state.idle.sync(entry);
                }
            }
            RegistryMsg::Release { worker_id, job, track } => {
                if track != Track::Neutral {
                    let record = state.records.entry(worker_id.as_str().into()).or_default();
                    record.track(track);
                    if let Some(entry) = state.workers.get_mut(worker_id.as_str()) {
                        let candidate = Candidate {
                            reputation: record.reputation(),
                            ..(*entry.candidate).clone()
                        };
                        entry.candidate = Arc::new(candidate);
                        state.idle.sync_new(entry);
                    }
                }
                if let Some(entry) = state.workers.get_mut(worker_id.as_str()) {
                    if entry.promised.as_ref().is_some_and(|(j, _)| *j == job) {
                        entry.promised = None;
                        state.idle.sync(entry);
                    }
                    if entry.busy_with.as_deref() == Some(job.as_str()) {
                        entry.busy_with = None;
                        entry.busy_from_heartbeat = false;
                        state.idle.sync(entry);
                        if entry.alive {
                            state.events.send(RegistryEvent::CapacityAvailable);
                        }
                    }
                }
            }
            RegistryMsg::Notes(notes) => {
                for (worker_id, note) in notes {
                    if let Some(record) = state.records.get_mut(worker_id.as_str()) {
                        record.note(note);
                    } else if let Some((id, _)) = state.workers.get_key_value(worker_id.as_str()) {
                        state.records.entry(id.clone()).or_default().note(note);
                    }
                }
            }
            RegistryMsg::Log {
                worker_id,
                limit,
                reply,
            } => {
                let answer = state.workers.get(worker_id.as_str()).map(|e| {
                    let notes = state
                        .records
                        .get(worker_id.as_str())
                        .map_or_else(Vec::new, |r| r.notes(limit));
                    (e.candidate.owner.clone(), notes)
                });
                let _ = reply.send(answer);
            }
            RegistryMsg::Alive { worker_id, reply } => {
                let _ = reply.send(state.workers.get(worker_id.as_str()).is_some_and(|e| e.alive));
            }
            RegistryMsg::List(reply) => {
                let mut views: Vec<WorkerView> = state
                    .workers
                    .values()
                    .map(|e| (e, state.records.get(e.candidate.worker_id.as_str())))
                    .map(|(e, record)| WorkerView {
                        worker_id: e.candidate.worker_id.clone(),
                        owner: e.candidate.owner.clone(),
                        device: e.candidate.ask.device,
                        device_name: e.candidate.ask.device_name.clone(),
                        memory_bytes: e.candidate.ask.memory_bytes,
                        price_per_hour: e.candidate.ask.price_per_hour,
                        throughput: e.candidate.ask.throughput,
                        busy_with: e.busy_with.clone(),
                        alive: e.alive,
                        sandbox: e.candidate.ask.sandbox.clone(),
                        reputation: record.map_or(1.0, WorkerRecord::reputation),
                        completed: record.map_or(0, |r| r.completed),
                        failed: record.map_or(0, |r| r.failed),
                        won: Some(record.map_or(0, |r| r.tally[0])),
                        lost: Some(record.map_or(0, |r| r.tally[1])),
                        declined: Some(record.map_or(0, |r| r.tally[2])),
                        last_auction: record.and_then(WorkerRecord::last_note),
                        paused: e.paused.clone(),
                    })
                    .collect();
                views.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
                let _ = reply.send(views);
            }
            RegistryMsg::Sweep => {
                let limit = state.heartbeat * MISSED_BEATS;
                let now = Instant::now();
                for entry in state.workers.values_mut() {
                    if entry.promised.as_ref().is_some_and(|(_, until)| *until <= now) {
                        entry.promised = None;
                        state.idle.sync(entry);
                        if entry.idle() {
                            state.events.send(RegistryEvent::CapacityAvailable);
                        }
                    }
                    if entry.alive && entry.last_seen.elapsed() > limit {
                        entry.alive = false;
                        let job = entry.busy_with.take();
                        state.idle.sync(entry);
                        tracing::warn!(worker = %entry.candidate.worker_id, job = ?job, "worker lost: no heartbeat");
                        state.events.send(RegistryEvent::WorkerLost {
                            worker_id: entry.candidate.worker_id.clone(),
                            job,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helium_protocol::PROTOCOL_VERSION;

    fn register(owner: &str, price: u64, device: DeviceKind) -> Register {
        Register {
            v: PROTOCOL_VERSION,
            owner: owner.into(),
            credential: String::new(),
            incarnation: "1".into(),
            ask: Ask {
                price_per_hour: price * 1_000_000,
                device,
                device_name: String::new(),
                memory_bytes: 8 << 30,
                throughput: 1e9,
                sandbox: Vec::new(),
            },
        }
    }

    async fn invitees(
        registry: &ActorRef<RegistryMsg>,
        device: DeviceKind,
        k: usize,
    ) -> Result<Vec<(String, String)>, String> {
        let requirements = Requirements {
            device,
            min_memory_bytes: 0,
            max_price_per_hour: 1_000 * 1_000_000,
            budget: u64::MAX,
            deadline_ms: 0,
        };
        let work = DeclaredWork {
            parameters: 1_000,
            samples: 1_000,
            epochs: 1,
        };
        let answer = ractor::call_t!(
            registry,
            |reply| RegistryMsg::Invitees {
                requirements,
                work,
                exclude: vec!["excluded".into()],
                k,
                reply,
            },
            1_000
        )
        .unwrap();
        answer.map(|v| v.into_iter().map(|c| (c.worker_id, c.owner)).collect())
    }

    /// The idle views follow every change of an entry: reservation, release, a re-registration
    /// with another owner or another ask.
    #[tokio::test]
    async fn invitations_follow_reservations_and_re_registrations() {
        let (registry, _) = Actor::spawn(
            None,
            WorkerRegistry,
            RegistryArgs {
                heartbeat: Duration::from_secs(3600),
                events: Arc::new(OutputPort::default()),
            },
        )
        .await
        .unwrap();
        let put = |id: &str, register: Register| {
            let id = id.to_string();
            let registry = registry.clone();
            async move {
                ractor::call_t!(
                    registry,
                    |reply| RegistryMsg::Register {
                        worker_id: id,
                        register,
                        reply
                    },
                    1_000
                )
                .unwrap()
                .unwrap();
            }
        };
        put("a", register("oa", 300, DeviceKind::Cuda)).await;
        put("b", register("ob", 100, DeviceKind::Cuda)).await;
        put("c", register("oc", 200, DeviceKind::Cpu)).await;
        put("excluded", register("ox", 1, DeviceKind::Cuda)).await;
        let pair = |id: &str, owner: &str| (id.to_string(), owner.to_string());
        assert_eq!(
            invitees(&registry, DeviceKind::Any, 8).await.unwrap(),
            vec![pair("b", "ob"), pair("c", "oc"), pair("a", "oa")]
        );
        assert_eq!(
            invitees(&registry, DeviceKind::Cuda, 1).await.unwrap(),
            vec![pair("b", "ob")]
        );
        registry
            .send_message(RegistryMsg::Reserve {
                worker_id: "b".into(),
                job: "j".into(),
            })
            .unwrap();
        assert_eq!(
            invitees(&registry, DeviceKind::Cuda, 8).await.unwrap(),
            vec![pair("a", "oa")]
        );
        // A release for another job does not free it; one for its job does.
        registry
            .send_message(RegistryMsg::Release {
                worker_id: "b".into(),
                job: "other".into(),
                track: Track::Neutral,
            })
            .unwrap();
        assert_eq!(
            invitees(&registry, DeviceKind::Cuda, 8).await.unwrap(),
            vec![pair("a", "oa")]
        );
        registry
            .send_message(RegistryMsg::Release {
                worker_id: "b".into(),
                job: "j".into(),
                track: Track::Neutral,
            })
            .unwrap();
        assert_eq!(
            invitees(&registry, DeviceKind::Cuda, 1).await.unwrap(),
            vec![pair("b", "ob")]
        );
        // A dearer ask moves it back; a device change moves it to the other views.
        put("b", register("ob", 400, DeviceKind::Cuda)).await;
        assert_eq!(
            invitees(&registry, DeviceKind::Cuda, 8).await.unwrap(),
            vec![pair("a", "oa"), pair("b", "ob")]
        );
        put("a", register("oa", 300, DeviceKind::Cpu)).await;
        assert_eq!(
            invitees(&registry, DeviceKind::Cuda, 8).await.unwrap(),
            vec![pair("b", "ob")]
        );
        assert_eq!(
            invitees(&registry, DeviceKind::Cpu, 8).await.unwrap(),
            vec![pair("c", "oc"), pair("a", "oa")]
        );
        // Nobody eligible: the full scan says why.
        registry
            .send_message(RegistryMsg::Reserve {
                worker_id: "b".into(),
                job: "j2".into(),
            })
            .unwrap();
        let reason = invitees(&registry, DeviceKind::Cuda, 8).await.unwrap_err();
        assert!(reason.starts_with("no idle worker with device"), "{reason}");
        let list = ractor::call_t!(registry, RegistryMsg::List, 1_000).unwrap();
        let ids: Vec<_> = list.iter().map(|w| w.worker_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "excluded"]);
    }

    /// A worker an auction round promised to a job is not invited again until that job
    /// reserves or releases it, or the promise lapses.
    #[tokio::test]
    async fn a_promised_worker_is_not_invited_until_its_job_takes_or_drops_it() {
        let heartbeat = Duration::from_secs(60);
        let (registry, _) = Actor::spawn(
            None,
            WorkerRegistry,
            RegistryArgs {
                heartbeat,
                events: Arc::new(OutputPort::default()),
            },
        )
        .await
        .unwrap();
        for (id, price) in [("a", 1), ("b", 2)] {
            let register = register(&format!("o{id}"), price, DeviceKind::Cpu);
            ractor::call_t!(
                registry,
                |reply| RegistryMsg::Register {
                    worker_id: id.into(),
                    register,
                    reply
                },
                1_000
            )
            .unwrap()
            .unwrap();
        }
        let ids = |r: Result<Vec<(String, String)>, String>| r.unwrap().into_iter().map(|p| p.0).collect::<Vec<_>>();
        registry
            .send_message(RegistryMsg::Promise {
                worker_id: "a".into(),
                job: "j1".into(),
            })
            .unwrap();
        assert_eq!(ids(invitees(&registry, DeviceKind::Cpu, 8).await), ["b"]);
        // Another job's release does not free it; its own does.
        registry
            .send_message(RegistryMsg::Release {
                worker_id: "a".into(),
                job: "j2".into(),
                track: Track::Neutral,
            })
            .unwrap();
        assert_eq!(ids(invitees(&registry, DeviceKind::Cpu, 8).await), ["b"]);
        registry
            .send_message(RegistryMsg::Release {
                worker_id: "a".into(),
                job: "j1".into(),
                track: Track::Neutral,
            })
            .unwrap();
        assert_eq!(ids(invitees(&registry, DeviceKind::Cpu, 8).await), ["a", "b"]);
        // A reserve replaces the promise (busy until released).
        registry
            .send_message(RegistryMsg::Promise {
                worker_id: "a".into(),
                job: "j3".into(),
            })
            .unwrap();
        registry
            .send_message(RegistryMsg::Reserve {
                worker_id: "a".into(),
                job: "j3".into(),
            })
            .unwrap();
        registry
            .send_message(RegistryMsg::Release {
                worker_id: "a".into(),
                job: "j3".into(),
                track: Track::Neutral,
            })
            .unwrap();
        assert_eq!(ids(invitees(&registry, DeviceKind::Cpu, 8).await), ["a", "b"]);
    }

    /// A worker that abandons a job is invited after an equally fast one that asks up to
    /// twice its price (reputation 1/2), and climbs back as it completes jobs; a neutral end
    /// (cancelled) changes nothing. Its counts, and its notes, survive a re-registration; the
    /// log answers its owner's id.
    #[tokio::test]
    async fn abandoned_jobs_lower_a_workers_invitation_rank_until_it_completes_again() {
        let (registry, _) = Actor::spawn(
            None,
            WorkerRegistry,
            RegistryArgs {
                heartbeat: Duration::from_secs(3600),
                events: Arc::new(OutputPort::default()),
            },
        )
        .await
        .unwrap();
        let put = |id: &'static str, register: Register| {
            let registry = registry.clone();
            async move {
                ractor::call_t!(
                    registry,
                    |reply| RegistryMsg::Register {
                        worker_id: id.into(),
                        register,
                        reply
                    },
                    1_000
                )
                .unwrap()
                .unwrap();
            }
        };
        put("a", register("oa", 100, DeviceKind::Cpu)).await;
        put("b", register("ob", 150, DeviceKind::Cpu)).await;
        let ids = |r: Result<Vec<(String, String)>, String>| r.unwrap().into_iter().map(|p| p.0).collect::<Vec<_>>();
        let run = |track: Track| {
            registry
                .send_message(RegistryMsg::Reserve {
                    worker_id: "a".into(),
                    job: "j".into(),
                })
                .unwrap();
            registry
                .send_message(RegistryMsg::Release {
                    worker_id: "a".into(),
                    job: "j".into(),
                    track,
                })
                .unwrap();
        };
        assert_eq!(ids(invitees(&registry, DeviceKind::Cpu, 8).await), ["a", "b"]);
        run(Track::Neutral);
        assert_eq!(ids(invitees(&registry, DeviceKind::Cpu, 8).await), ["a", "b"]);
        run(Track::Failed);
        assert_eq!(ids(invitees(&registry, DeviceKind::Cpu, 8).await), ["b", "a"]);
        put("a", register("oa", 100, DeviceKind::Cpu)).await;
        assert_eq!(
            ids(invitees(&registry, DeviceKind::Cpu, 8).await),
            ["b", "a"],
            "kept across registrations"
        );
        run(Track::Completed);
        run(Track::Completed);
        // 3/4: 100 / 0.75 = 133 < 150.
        assert_eq!(ids(invitees(&registry, DeviceKind::Cpu, 8).await), ["a", "b"]);
        let note = helium_protocol::worker::AuctionNote {
            v: PROTOCOL_VERSION,
            job_id: "j9".into(),
            at_ms: 1,
            verdict: helium_protocol::worker::Verdict::Lost,
            reason: "outbid".into(),
            price_per_hour: None,
            cost: None,
            winning_price_per_hour: None,
            winning_cost: None,
        };
        registry
            .send_message(RegistryMsg::Notes(vec![
                ("a".into(), note.clone()),
                ("nobody".into(), note.clone()),
            ]))
            .unwrap();
        let views = ractor::call_t!(registry, RegistryMsg::List, 1_000).unwrap();
        let a = views.iter().find(|v| v.worker_id == "a").unwrap();
        assert_eq!((a.completed, a.failed, a.lost, a.won), (2, 1, Some(1), Some(0)));
        let seen = a.clone().for_caller("someone-else");
        assert_eq!((seen.won, seen.lost, seen.declined, seen.last_auction.as_deref()), (None, None, None, None));
        assert_eq!(seen.reputation, 0.75, "reputation is public");
        assert_eq!(a.clone().for_caller("oa"), *a, "its owner sees all");
        assert_eq!(a.reputation, 0.75);
        assert_eq!(a.last_auction.as_deref(), Some("lost job j9: outbid"));
        let log = |id: &'static str| {
            let registry = registry.clone();
            async move {
                ractor::call_t!(
                    registry,
                    |reply| RegistryMsg::Log {
                        worker_id: id.into(),
                        limit: 10,
                        reply
                    },
                    1_000
                )
                .unwrap()
            }
        };
        assert_eq!(log("a").await, Some(("oa".to_string(), vec![note])));
        assert_eq!(log("nobody").await, None);
    }

    /// A worker whose heartbeat says its owner paused it is not invited, shows why (its words,
    /// cleaned and cut short), and is announced as capacity again once a heartbeat says nothing.
    #[tokio::test]
    async fn a_paused_worker_is_not_invited_until_its_heartbeat_says_it_is_available() {
        let events: Arc<OutputPort<RegistryEvent>> = Arc::new(OutputPort::default());
        let (tx, mut announced) = tokio::sync::mpsc::unbounded_channel();
        let (sink, _) = Actor::spawn(None, EventSink, tx).await.unwrap();
        events.subscribe(sink, |e| matches!(e, RegistryEvent::CapacityAvailable).then_some(e));
        let (registry, _) = Actor::spawn(
            None,
            WorkerRegistry,
            RegistryArgs {
                heartbeat: Duration::from_secs(3600),
                events,
            },
        )
        .await
        .unwrap();
        for (id, price) in [("a", 1), ("b", 2)] {
            let register = register(&format!("o{id}"), price, DeviceKind::Cpu);
            ractor::call_t!(registry, |reply| RegistryMsg::Register { worker_id: id.into(), register, reply }, 1_000)
                .unwrap()
                .unwrap();
        }
        let ids = |r: Result<Vec<(String, String)>, String>| r.unwrap().into_iter().map(|p| p.0).collect::<Vec<_>>();
        let beat = |paused: Option<String>| RegistryMsg::Heartbeat {
            worker_id: "a".into(),
            heartbeat: Heartbeat {
                v: PROTOCOL_VERSION,
                running: None,
                paused,
            },
        };
        registry.send_message(beat(Some(format!("outside the owner's hours\u{1b}[2J{}", "x".repeat(1_000))))).unwrap();
        assert_eq!(ids(invitees(&registry, DeviceKind::Cpu, 8).await), ["b"]);
        let views = ractor::call_t!(registry, RegistryMsg::List, 1_000).unwrap();
        let paused = views.iter().find(|v| v.worker_id == "a").unwrap().paused.clone().unwrap();
        assert!(paused.starts_with("outside the owner's hours [2J"), "{paused}");
        assert!(paused.len() <= helium_protocol::limits::MAX_NOTE_BYTES);
        while announced.try_recv().is_ok() {}
        registry.send_message(beat(None)).unwrap();
        assert_eq!(ids(invitees(&registry, DeviceKind::Cpu, 8).await), ["a", "b"]);
        assert!(announced.recv().await.is_some(), "capacity is announced when the pause ends");
        assert_eq!(ractor::call_t!(registry, RegistryMsg::List, 1_000).unwrap()[0].paused, None);
    }

    /// A worker that restarts before a heartbeat is missed (a new incarnation registers) has
    /// lost the run it was awarded: the registry says so at once, and frees it. Its periodic
    /// re-registrations (the same incarnation) change nothing.
    #[tokio::test]
    async fn a_restarted_worker_loses_its_run_at_once() {
        let events: Arc<OutputPort<RegistryEvent>> = Arc::new(OutputPort::default());
        let (lost_tx, mut lost_rx) = tokio::sync::mpsc::unbounded_channel();
        let (sink, _) = Actor::spawn(None, EventSink, lost_tx).await.unwrap();
        events.subscribe(sink, |e| Some(e));
        let heartbeat = Duration::from_secs(60);
        let (registry, _) = Actor::spawn(None, WorkerRegistry, RegistryArgs { heartbeat, events })
            .await
            .unwrap();
        let put = |incarnation: &str| {
            let (registry, mut register) = (registry.clone(), register("alice", 100, DeviceKind::Cpu));
            register.incarnation = incarnation.into();
            async move {
                ractor::call_t!(
                    registry,
                    |reply| RegistryMsg::Register {
                        worker_id: "w1".into(),
                        register,
                        reply
                    },
                    1_000
                )
                .unwrap()
                .unwrap()
            }
        };
        put("first").await;
        registry
            .send_message(RegistryMsg::Reserve {
                worker_id: "w1".into(),
                job: "j1".into(),
            })
            .unwrap();
        put("first").await;
        put("second").await;
        let lost = loop {
            let event = tokio::time::timeout(Duration::from_secs(5), lost_rx.recv()).await;
            match event.expect("no WorkerLost for the restarted worker").unwrap() {
                RegistryEvent::WorkerLost { worker_id, job } => break (worker_id, job),
                _ => continue,
            }
        };
        assert_eq!(lost, ("w1".to_string(), Some("j1".to_string())));
        let list = ractor::call_t!(registry, RegistryMsg::List, 1_000).unwrap();
        assert_eq!(list[0].busy_with, None, "the restarted worker is free");
        // Only one loss: the same incarnation again, or a restart while idle, reports nothing.
        put("second").await;
        put("third").await;
        let _ = ractor::call_t!(registry, RegistryMsg::List, 1_000).unwrap();
        while let Ok(event) = lost_rx.try_recv() {
            assert!(!matches!(event, RegistryEvent::WorkerLost { .. }), "{event:?}");
        }
    }

    /// Forwards what the registry announces to a channel.
    struct EventSink;

    impl Actor for EventSink {
        type Msg = RegistryEvent;
        type State = tokio::sync::mpsc::UnboundedSender<RegistryEvent>;
        type Arguments = tokio::sync::mpsc::UnboundedSender<RegistryEvent>;

        async fn pre_start(
            &self,
            _me: ActorRef<RegistryEvent>,
            tx: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(tx)
        }

        async fn handle(
            &self,
            _me: ActorRef<RegistryEvent>,
            e: RegistryEvent,
            tx: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            let _ = tx.send(e);
            Ok(())
        }
    }

    /// A live worker id cannot be taken over by another owner's worker; once the worker is
    /// lost it can, and the invitation then names the new owner (who is paid).
    #[tokio::test]
    async fn a_live_worker_id_keeps_its_owner() {
        let heartbeat = Duration::from_millis(20);
        let (registry, _) = Actor::spawn(
            None,
            WorkerRegistry,
            RegistryArgs {
                heartbeat,
                events: Arc::new(OutputPort::default()),
            },
        )
        .await
        .unwrap();
        let put = |register: Register| {
            let registry = registry.clone();
            async move {
                ractor::call_t!(
                    registry,
                    |reply| RegistryMsg::Register {
                        worker_id: "w1".into(),
                        register,
                        reply
                    },
                    1_000
                )
                .unwrap()
            }
        };
        assert!(put(register("alice", 100, DeviceKind::Cuda)).await.is_ok());
        assert!(
            put(register("alice", 200, DeviceKind::Cuda)).await.is_ok(),
            "its own owner re-registers"
        );
        assert_eq!(
            put(register("bob", 50, DeviceKind::Cuda)).await,
            Err(RegisterRefused::OwnedByAnother {
                worker_id: "w1".into(),
                owner: "alice".into(),
                claimed: "bob".into()
            })
        );
        let pair = |id: &str, owner: &str| (id.to_string(), owner.to_string());
        assert_eq!(
            invitees(&registry, DeviceKind::Cuda, 8).await.unwrap(),
            vec![pair("w1", "alice")]
        );
        // No heartbeat: lost after MISSED_BEATS beats; then the id is free.
        tokio::time::sleep(heartbeat * (MISSED_BEATS + 3)).await;
        assert!(put(register("bob", 50, DeviceKind::Cuda)).await.is_ok());
        assert_eq!(
            invitees(&registry, DeviceKind::Cuda, 8).await.unwrap(),
            vec![pair("w1", "bob")]
        );
    }
}
