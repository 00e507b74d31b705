//! Jobs: the JobManager actor accepts submissions, owns the map of live JobSupervisors (one per
//! job) and routes each request or run event to the right one; supervisors own everything else.

pub mod quota;
pub mod record;
pub mod supervisor;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use helium_protocol::{
    api::{JobList, JobView, SubmitJob},
    artifacts::ArtifactInfo,
    encode,
    job::JobState,
    ledger::user,
    limits::MICRO_PER_CREDIT,
    state::TensorSpec,
    subjects::keys,
    worker::RunEvent,
    ErrorCode, WireError,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::{
    artifacts::{ArtifactsMsg, Caller},
    ledger::LedgerMsg,
    registry::RegistryEvent,
    Deps,
};
pub use record::JobRecord;
pub use supervisor::{JobSupervisor, SupervisorArgs, SupervisorMsg};

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
    Stored {
        worker_id: String,
        job_id: String,
        name: String,
        info: ArtifactInfo,
    },
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
                Ok(record) => state.spawn(&me, record, entry.revision).await?,
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
                let result = state.submit(&me, principal, request).await;
                let _ = reply.send(result);
            }
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
            } => {
                if let Some(s) = state.jobs.get(&job_id) {
                    let _ = s.send_message(SupervisorMsg::Stored { worker_id, name, info });
                }
            }
            ManagerMsg::StateOf { job_id, reply } => {
                let manifest = state.manifests.get(&job_id).cloned().ok_or_else(|| no_job(&job_id));
                let _ = reply.send(manifest);
            }
            ManagerMsg::Registry(RegistryEvent::CapacityAvailable) => {
                for s in state.jobs.values() {
                    let _ = s.send_message(SupervisorMsg::Auction);
                }
            }
            ManagerMsg::Registry(RegistryEvent::WorkerLost { worker_id, job }) => {
                if let Some(s) = job.as_ref().and_then(|j| state.jobs.get(j)) {
                    let _ = s.send_message(SupervisorMsg::WorkerLost { worker_id });
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
        };
        let (actor, _) = ractor::Actor::spawn_linked(None, JobSupervisor, args, me.get_cell()).await?;
        self.jobs.insert(job_id, actor);
        Ok(())
    }

    async fn submit(
        &mut self,
        me: &ActorRef<ManagerMsg>,
        principal: String,
        request: SubmitJob,
    ) -> Result<JobView, WireError> {
        let now = crate::now_ms();
        record::validate(&request, now)?;
        let open = self.open.count(&principal, &self.owners, &self.jobs).await;
        quota::over(&principal, open, self.deps.quotas.max_open_jobs)?;
        // Fail fast: a budget the account cannot cover would only fail later, at the award.
        let balance = ractor::call_t!(self.deps.ledger, LedgerMsg::Balance, 10_000, user(&principal))
            .map_err(|e| WireError::new(ErrorCode::Unavailable, format!("ledger: {e}")))?;
        if balance < i128::from(request.requirements.budget) {
            let credits = |micro: i128| micro as f64 / MICRO_PER_CREDIT as f64;
            return Err(WireError::new(
                ErrorCode::InsufficientFunds,
                format!(
                    "{principal} holds {} credits, less than the budget of {} credits",
                    credits(balance),
                    credits(i128::from(request.requirements.budget))
                ),
            ));
        }
        let job_id = uuid::Uuid::now_v7().simple().to_string();
        let claim = |upload_id: String, dest_key: String| {
            let principal = principal.clone();
            move |reply| ArtifactsMsg::Claim {
                principal,
                upload_id,
                dest_key,
                reply,
            }
        };
        let artifacts = &self.deps.artifacts;
        let model = ractor::call_t!(
            artifacts,
            claim(request.model_upload.clone(), keys::model(&job_id)),
            30_000
        )
        .map_err(|e| WireError::new(ErrorCode::Unavailable, e.to_string()))??;
        let data = ractor::call_t!(
            artifacts,
            claim(request.data_upload.clone(), keys::data(&job_id)),
            30_000
        )
        .map_err(|e| WireError::new(ErrorCode::Unavailable, e.to_string()))
        .and_then(|claimed| claimed);
        let data = match data {
            Ok(data) => data,
            Err(e) => {
                let _ = self.deps.store.delete(&keys::model(&job_id)).await; // no job will own it
                return Err(e);
            }
        };
        let store = &self.deps.store;
        let unavailable = |e: crate::artifacts::StoreError| WireError::new(ErrorCode::Unavailable, e.to_string());
        let checked = async {
            store
                .inspect_model(&keys::model(&job_id))
                .await
                .map_err(unavailable)?
                .map_err(|m| WireError::new(ErrorCode::InvalidModel, m))?;
            store
                .inspect_data(&keys::data(&job_id))
                .await
                .map_err(unavailable)?
                .map_err(|m| WireError::new(ErrorCode::InvalidData, m))
        }
        .await;
        let summary = match checked {
            Ok(summary) => summary,
            Err(e) => {
                let _ = store.delete(&keys::model(&job_id)).await;
                let _ = store.delete(&keys::data(&job_id)).await;
                return Err(e);
            }
        };
        let model = ArtifactInfo {
            name: helium_protocol::artifacts::MODEL.into(),
            ..model
        };
        let data = ArtifactInfo {
            name: helium_protocol::artifacts::DATA.into(),
            ..data
        };
        let mut work = request.work;
        work.samples = summary.rows; // the data, not the declaration, says how many samples
        let view = JobView {
            job_id: job_id.clone(),
            principal: principal.clone(),
            name: request.name.clone(),
            state: JobState::Queued,
            reason: None,
            worker: None,
            price: None,
            paid: 0,
            epochs: request.training.epochs,
            epochs_done: 0,
            last_loss: None,
            result: None,
            created_ms: now,
            updated_ms: now,
        };
        let record = JobRecord {
            view: view.clone(),
            training: request.training,
            requirements: request.requirements,
            work,
            model,
            data,
            awards: 0,
            accepted_awards: 0,
            award: None,
            checkpoint: None,
            excluded_workers: Vec::new(),
            state: request.state,
        };
        let revision = self
            .deps
            .jobs
            .create(&job_id, encode(&record).into())
            .await
            .map_err(|e| WireError::new(ErrorCode::Unavailable, format!("job store: {e}")))?;
        crate::events::publish_job_event(
            &self.deps.js,
            &principal,
            &job_id,
            helium_protocol::api::JobEventKind::State {
                state: JobState::Queued,
                reason: None,
            },
        )
        .await;
        tracing::info!(job = %job_id, principal = %principal, "job submitted");
        self.spawn(me, record, revision)
            .await
            .map_err(|e| WireError::internal(e.to_string()))?;
        Ok(view)
    }
}
