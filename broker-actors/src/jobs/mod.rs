//! Jobs: the JobManager actor accepts submissions (each prepared in its own task), owns the
//! map of live JobSupervisors (one per job) and routes each request or run event to the right
//! one, never awaiting I/O in its handler; supervisors execute their job's pure core.

pub mod core;
pub mod quota;
pub mod record;
mod submit;
pub mod supervisor;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use helium_protocol::{
    api::{JobList, JobView, SubmitJob},
    artifacts::ArtifactInfo,
    state::TensorSpec,
    worker::RunEvent,
    ErrorCode, WireError,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::{
    artifacts::Caller,
    registry::RegistryEvent,
    Deps,
};
pub use record::JobRecord;
pub use supervisor::{JobSupervisor, SupervisorArgs, SupervisorMsg};
use self::core::Input;

pub enum ManagerMsg {
    /// The principal's jobs, oldest first.
    List {
        principal: String,
        reply: RpcReplyPort<JobList>,
    },
    Submit {
        principal: String,
        request: SubmitJob,
        reply: RpcReplyPort<Result<JobView, WireError>>,
    },
    Status {
        principal: String,
        job_id: String,
        reply: RpcReplyPort<Result<JobView, WireError>>,
    },
    Cancel {
        principal: String,
        job_id: String,
        reply: RpcReplyPort<Result<JobView, WireError>>,
    },
    Run {
        worker_id: String,
        event: RunEvent,
        reply: RpcReplyPort<Result<(), WireError>>,
    },
    Access {
        caller: Caller,
        job_id: String,
        name: String,
        reply: RpcReplyPort<Result<(String, ArtifactInfo), WireError>>,
    },
    UploadTarget {
        worker_id: String,
        job_id: String,
        name: String,
        reply: RpcReplyPort<Result<String, WireError>>,
    },
    /// A verified upload: answered once the job recorded it (or refused it).
    Stored {
        worker_id: String,
        job_id: String,
        name: String,
        info: ArtifactInfo,
        reply: RpcReplyPort<Result<(), WireError>>,
    },
    /// A submission's task finished preparing it.
    Prepared {
        principal: String,
        prepared: Result<(JobRecord, u64), WireError>,
        reply: RpcReplyPort<Result<JobView, WireError>>,
    },
    /// A supervisor's job reached a terminal state (for the open-jobs quota).
    Finished { job_id: String },
    /// The job's state manifest, which its results and checkpoints must match (answered by
    /// the manager itself: it never changes after submit).
    StateOf {
        job_id: String,
        reply: RpcReplyPort<Result<Arc<Vec<TensorSpec>>, WireError>>,
    },
    Registry(RegistryEvent),
}

pub struct JobManager;

pub struct ManagerState {
    deps: Deps,
    jobs: HashMap<String, ActorRef<SupervisorMsg>>,
    /// Job id → principal, to list a principal's jobs without asking every supervisor.
    owners: HashMap<String, String>,
    /// Job id → the model's state manifest from its record.
    manifests: HashMap<String, Arc<Vec<TensorSpec>>>,
    /// Which of the jobs are known to be finished, for the open-jobs quota.
    open: quota::OpenJobs,
    /// Submissions being prepared, per principal: they count against the quota too.
    preparing: HashMap<String, usize>,
}

fn no_job(job_id: &str) -> WireError {
    WireError::new(ErrorCode::NotFound, format!("no job {job_id}"))
}

impl Actor for JobManager {
    type Msg = ManagerMsg;
    type State = ManagerState;
    type Arguments = Deps;

    async fn pre_start(&self, me: ActorRef<ManagerMsg>, deps: Deps) -> Result<ManagerState, ActorProcessingErr> {
        let mut state = ManagerState {
            deps,
            jobs: HashMap::new(),
            owners: HashMap::new(),
            manifests: HashMap::new(),
            open: quota::OpenJobs::default(),
            preparing: HashMap::new(),
        };
        // Respawn a supervisor for every recorded job; finished ones only answer queries.
        let mut keys = state.deps.jobs.keys().await?;
        let mut ids = Vec::new();
        while let Some(key) = keys.next().await {
            ids.push(key?);
        }
        for job_id in ids {
            let Some(entry) = state.deps.jobs.entry(job_id.clone()).await? else {
                continue;
            };
            // Records are the broker's own storage, not wire messages: no version envelope.
            match rmp_serde::from_slice::<JobRecord>(&entry.value) {
                Ok(record) => state.spawn(&me, record, entry.revision, true).await?,
                Err(e) => tracing::error!(job = %job_id, error = %e, "unreadable job record left alone"),
            }
        }
        tracing::info!(jobs = state.jobs.len(), "job supervisors respawned");
        Ok(state)
    }

    async fn handle(
        &self,
        me: ActorRef<ManagerMsg>,
        msg: ManagerMsg,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ManagerMsg::Submit {
                principal,
                request,
                reply,
            } => {
                let preparing = state.preparing.get(&principal).copied().unwrap_or(0);
                let open = state.open.count(&principal, &state.owners) + preparing;
                if let Err(e) = quota::over(&principal, open, state.deps.quotas.max_open_jobs) {
                    let _ = reply.send(Err(e));
                    return Ok(());
                }
                *state.preparing.entry(principal.clone()).or_default() += 1;
                let (deps, me) = (state.deps.clone(), me.clone());
                tokio::spawn(async move {
                    let prepared = submit::prepare(deps, principal.clone(), request).await;
                    let _ = me.send_message(ManagerMsg::Prepared {
                        principal,
                        prepared,
                        reply,
                    });
                });
            }
            ManagerMsg::Prepared {
                principal,
                prepared,
                reply,
            } => {
                if let Some(n) = state.preparing.get_mut(&principal) {
                    *n = n.saturating_sub(1);
                }
                let answer = match prepared {
                    Ok((record, revision)) => {
                        let view = record.view.clone();
                        match state.spawn(&me, record, revision, false).await {
                            Ok(()) => Ok(view),
                            Err(e) => Err(WireError::internal(e.to_string())),
                        }
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(answer);
            }
            ManagerMsg::Finished { job_id } => state.open.finished(&job_id),
            ManagerMsg::List { principal, reply } => {
                let theirs: Vec<ActorRef<SupervisorMsg>> = state
                    .owners
                    .iter()
                    .filter(|(_, p)| **p == principal)
                    .filter_map(|(job, _)| state.jobs.get(job).cloned())
                    .collect();
                // Asked in a task: the manager keeps routing while the supervisors answer.
                tokio::spawn(async move {
                    let mut jobs = Vec::new();
                    for s in theirs {
                        let p = principal.clone();
                        if let Ok(Ok(view)) =
                            ractor::call_t!(s, |reply| SupervisorMsg::Status { principal: p, reply }, 5_000)
                        {
                            jobs.push(view);
                        }
                    }
                    jobs.sort_by_key(|v: &JobView| (v.created_ms, v.job_id.clone()));
                    let _ = reply.send(JobList { jobs });
                });
            }
            ManagerMsg::Status {
                principal,
                job_id,
                reply,
            } => match state.jobs.get(&job_id) {
                Some(s) => drop(s.send_message(SupervisorMsg::Status { principal, reply })),
                None => drop(reply.send(Err(no_job(&job_id)))),
            },
            ManagerMsg::Cancel {
                principal,
                job_id,
                reply,
            } => match state.jobs.get(&job_id) {
                Some(s) => drop(s.send_message(SupervisorMsg::Cancel { principal, reply })),
                None => drop(reply.send(Err(no_job(&job_id)))),
            },
            ManagerMsg::Run {
                worker_id,
                event,
                reply,
            } => match state.jobs.get(&event.job_id) {
                Some(s) => drop(s.send_message(SupervisorMsg::Run {
                    worker_id,
                    event,
                    reply,
                })),
                None => drop(reply.send(Err(no_job(&event.job_id)))),
            },
            ManagerMsg::Access {
                caller,
                job_id,
                name,
                reply,
            } => match state.jobs.get(&job_id) {
                Some(s) => drop(s.send_message(SupervisorMsg::Access { caller, name, reply })),
                None => drop(reply.send(Err(no_job(&job_id)))),
            },
            ManagerMsg::UploadTarget {
                worker_id,
                job_id,
                name,
                reply,
            } => match state.jobs.get(&job_id) {
                Some(s) => drop(s.send_message(SupervisorMsg::UploadTarget { worker_id, name, reply })),
                None => drop(reply.send(Err(no_job(&job_id)))),
            },
            ManagerMsg::Stored {
                worker_id,
                job_id,
                name,
                info,
                reply,
            } => match state.jobs.get(&job_id) {
                Some(s) => drop(s.send_message(SupervisorMsg::Stored {
                    worker_id,
                    name,
                    info,
                    reply,
                })),
                None => drop(reply.send(Err(no_job(&job_id)))),
            },
            ManagerMsg::StateOf { job_id, reply } => {
                let manifest = state.manifests.get(&job_id).cloned().ok_or_else(|| no_job(&job_id));
                let _ = reply.send(manifest);
            }
            ManagerMsg::Registry(RegistryEvent::CapacityAvailable) => {
                for s in state.jobs.values() {
                    let _ = s.send_message(SupervisorMsg::Input(Input::Capacity));
                }
            }
            ManagerMsg::Registry(RegistryEvent::WorkerLost { worker_id, job }) => {
                if let Some(s) = job.as_ref().and_then(|j| state.jobs.get(j)) {
                    let _ = s.send_message(SupervisorMsg::Input(Input::WorkerLost { worker_id }));
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _me: ActorRef<ManagerMsg>,
        evt: SupervisionEvent,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        // A supervisor that dies (e.g. its record was taken over) is dropped from the map; the
        // manager itself keeps serving the other jobs.
        let gone = match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                tracing::warn!(actor = ?cell.get_id(), reason = ?reason, "job supervisor stopped");
                Some(cell.get_id())
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::error!(actor = ?cell.get_id(), error = %error, "job supervisor failed");
                Some(cell.get_id())
            }
            _ => None,
        };
        if let Some(id) = gone {
            state.jobs.retain(|_, s| s.get_id() != id);
            state.owners.retain(|job, _| state.jobs.contains_key(job));
            state.manifests.retain(|job, _| state.jobs.contains_key(job));
            state.open.retain(|job| state.jobs.contains_key(job));
        }
        Ok(())
    }
}

impl ManagerState {
    async fn spawn(
        &mut self,
        me: &ActorRef<ManagerMsg>,
        record: JobRecord,
        revision: u64,
        restarted: bool,
    ) -> Result<(), ActorProcessingErr> {
        let job_id = record.view.job_id.clone();
        self.owners.insert(job_id.clone(), record.view.principal.clone());
        self.manifests.insert(job_id.clone(), Arc::new(record.state.clone()));
        if record.view.state.is_terminal() {
            self.open.finished(&job_id);
        }
        let args = SupervisorArgs {
            deps: self.deps.clone(),
            record,
            revision,
            restarted,
            manager: me.clone(),
        };
        let (actor, _) = ractor::Actor::spawn_linked(None, JobSupervisor, args, me.get_cell()).await?;
        self.jobs.insert(job_id, actor);
        Ok(())
    }
}
