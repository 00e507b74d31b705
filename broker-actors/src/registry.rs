//! The WorkerRegistry actor: every worker's standing ask and liveness. Workers register, then
//! heartbeat; one that misses [`MISSED_BEATS`] beats is considered lost. The registry tells
//! the job manager when capacity appears (a worker joins or frees up) or vanishes.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use helium_protocol::{
    api::WorkerView,
    worker::{Heartbeat, Register, Registered},
};
use ractor::{Actor, ActorProcessingErr, ActorRef, OutputPort, RpcReplyPort};

use crate::auction::Candidate;

/// Heartbeats a worker may miss before it is considered lost.
pub const MISSED_BEATS: u32 = 5;

/// What the registry announces to whoever subscribed.
#[derive(Debug, Clone)]
pub enum RegistryEvent {
    /// A worker joined or became idle: queued jobs may now find a bidder.
    CapacityAvailable,
    /// A worker stopped heart-beating while it ran `job`.
    WorkerLost { worker_id: String, job: Option<String> },
}

pub enum RegistryMsg {
    Register {
        worker_id: String,
        register: Register,
        reply: RpcReplyPort<Registered>,
    },
    Heartbeat {
        worker_id: String,
        heartbeat: Heartbeat,
    },
    /// Live, idle workers.
    Candidates(RpcReplyPort<Vec<Candidate>>),
    /// Marks a worker busy with a job (at award).
    Reserve {
        worker_id: String,
        job: String,
    },
    /// Frees a worker reserved for `job`; a no-op if it has moved on to another job meanwhile.
    Release {
        worker_id: String,
        job: String,
    },
    /// Whether the worker is registered and heart-beating.
    Alive {
        worker_id: String,
        reply: RpcReplyPort<bool>,
    },
    List(RpcReplyPort<Vec<WorkerView>>),
    Sweep,
}

struct Entry {
    owner: String,
    register: Register,
    last_seen: Instant,
    busy_with: Option<String>,
    /// `busy_with` was learned from the worker's heartbeat, not set by an award.
    busy_from_heartbeat: bool,
    alive: bool,
}

pub struct WorkerRegistry;

pub struct RegistryArgs {
    pub heartbeat: Duration,
    pub events: Arc<OutputPort<RegistryEvent>>,
}

pub struct RegistryState {
    heartbeat: Duration,
    events: Arc<OutputPort<RegistryEvent>>,
    workers: BTreeMap<String, Entry>,
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
            workers: BTreeMap::new(),
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
                let known = state.workers.get(&worker_id);
                let busy_with = known.and_then(|e| e.busy_with.clone());
                let busy_from_heartbeat = known.is_some_and(|e| e.busy_from_heartbeat);
                // Workers re-register periodically (so a restarted broker learns of them); only
                // a new, revived or changed ask is new capacity worth re-auctioning for.
                let news = known.is_none_or(|e| !e.alive || e.register.ask != register.ask);
                state.workers.insert(
                    worker_id,
                    Entry {
                        owner: register.owner.clone(),
                        register,
                        last_seen: Instant::now(),
                        busy_with,
                        busy_from_heartbeat,
                        alive: true,
                    },
                );
                let _ = reply.send(Registered {
                    heartbeat_ms: state.heartbeat.as_millis() as u64,
                });
                if news {
                    state.events.send(RegistryEvent::CapacityAvailable);
                }
            }
            RegistryMsg::Heartbeat { worker_id, heartbeat } => {
                if let Some(entry) = state.workers.get_mut(&worker_id) {
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
                    if revived {
                        state.events.send(RegistryEvent::CapacityAvailable);
                    }
                }
            }
            RegistryMsg::Candidates(reply) => {
                let candidates = state
                    .workers
                    .iter()
                    .filter(|(_, e)| e.alive && e.busy_with.is_none())
                    .map(|(id, e)| Candidate {
                        worker_id: id.clone(),
                        owner: e.owner.clone(),
                        ask: e.register.ask.clone(),
                        reputation: 1.0,
                    })
                    .collect();
                let _ = reply.send(candidates);
            }
            RegistryMsg::Reserve { worker_id, job } => {
                if let Some(entry) = state.workers.get_mut(&worker_id) {
                    entry.busy_with = Some(job);
                    entry.busy_from_heartbeat = false;
                }
            }
            RegistryMsg::Release { worker_id, job } => {
                if let Some(entry) = state.workers.get_mut(&worker_id) {
                    if entry.busy_with.as_deref() == Some(job.as_str()) {
                        entry.busy_with = None;
                        entry.busy_from_heartbeat = false;
                        if entry.alive {
                            state.events.send(RegistryEvent::CapacityAvailable);
                        }
                    }
                }
            }
            RegistryMsg::Alive { worker_id, reply } => {
                let _ = reply.send(state.workers.get(&worker_id).is_some_and(|e| e.alive));
            }
            RegistryMsg::List(reply) => {
                let views = state
                    .workers
                    .iter()
                    .map(|(id, e)| WorkerView {
                        worker_id: id.clone(),
                        owner: e.owner.clone(),
                        device: e.register.ask.device,
                        device_name: e.register.ask.device_name.clone(),
                        memory_bytes: e.register.ask.memory_bytes,
                        price_per_hour: e.register.ask.price_per_hour,
                        throughput: e.register.ask.throughput,
                        busy_with: e.busy_with.clone(),
                        alive: e.alive,
                    })
                    .collect();
                let _ = reply.send(views);
            }
            RegistryMsg::Sweep => {
                let limit = state.heartbeat * MISSED_BEATS;
                for (id, entry) in state.workers.iter_mut() {
                    if entry.alive && entry.last_seen.elapsed() > limit {
                        entry.alive = false;
                        tracing::warn!(worker = %id, job = ?entry.busy_with, "worker lost: no heartbeat");
                        state.events.send(RegistryEvent::WorkerLost {
                            worker_id: id.clone(),
                            job: entry.busy_with.take(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}
