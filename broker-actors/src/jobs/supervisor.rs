//! The JobSupervisor actor: one per job, the thin executor of its pure core (`core/`). Each
//! message becomes one [`Input`]; the core's [`Step`] is carried out in order: the record is
//! persisted first (a revision-checked KV update, retried until it is written; a revision
//! conflict means another broker owns the job, and this supervisor stops), then the effects
//! (events published in order; transfers, auctions and worker messages in tasks whose outcomes
//! come back as inputs), and only then is the sender answered.

use std::time::Duration;

use async_nats::jetstream::kv;
use helium_protocol::{
    api::JobView,
    artifacts::ArtifactInfo,
    encode,
    ledger::{escrow, user, Transfer},
    subjects,
    worker::{AwardAck, RunEvent},
    ErrorCode, Reply, WireError, PROTOCOL_VERSION,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::core::{self, Answer, Effect, Input, Job, Step, TransferOutcome};
use super::record::JobRecord;
use crate::{artifacts::Caller, auction::{AuctioneerMsg, Outcome}, events::publish_job_event, ledger::LedgerMsg, now_ms, registry::RegistryMsg, Deps};

pub enum SupervisorMsg {
    /// An input without a sender waiting: capacity news, a lost worker, a tick, or the outcome
    /// of an effect.
    Input(Input),
    Run {
        worker_id: String,
        event: RunEvent,
        reply: RpcReplyPort<Result<(), WireError>>,
    },
    /// The worker's upload of `name` was committed and verified; answered once recorded.
    Stored {
        worker_id: String,
        name: String,
        info: ArtifactInfo,
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
}

pub struct JobSupervisor;

pub struct SupervisorArgs {
    pub deps: Deps,
    pub record: JobRecord,
    pub revision: u64,
    /// Respawned from the bucket by a broker that (re)started, not created by a submit.
    pub restarted: bool,
    /// Told once the job is terminal.
    pub manager: ActorRef<super::ManagerMsg>,
}

pub struct SupervisorState {
    deps: Deps,
    job: Job,
    revision: u64,
    /// The 1 s tick, stopped once the job is finished and settled.
    ticker: Option<tokio::task::JoinHandle<()>>,
    manager: Option<ActorRef<super::ManagerMsg>>,
}

/// How long a winner has to answer its award.
const AWARD_ANSWER: Duration = Duration::from_secs(10);
/// The longest wait between two attempts to write a record: a cluster that lost the node
/// leading the bucket elects another in seconds, and the job (its worker's uploads and events
/// wait on it) carries on within this of that.
const PERSIST_BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Actor for JobSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        me: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let config = core::Config {
            max_checkpoints_per_award: args.deps.quotas.max_checkpoints_per_award,
        };
        let ticker = Some(me.send_interval(Duration::from_secs(1), || SupervisorMsg::Input(Input::Tick)));
        me.send_message(SupervisorMsg::Input(Input::Start {
            restarted: args.restarted,
        }))?;
        Ok(SupervisorState {
            deps: args.deps,
            job: Job::new(args.record, config),
            revision: args.revision,
            ticker,
            manager: Some(args.manager),
        })
    }

    async fn handle(
        &self,
        me: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Input(input) => {
                state.apply(&me, input).await?;
            }
            SupervisorMsg::Run {
                worker_id,
                event,
                reply,
            } => {
                if let Answer::Ack(result) = state.apply(&me, Input::Run { worker_id, event }).await? {
                    let _ = reply.send(result);
                }
            }
            SupervisorMsg::Stored {
                worker_id,
                name,
                info,
                reply,
            } => {
                if let Answer::Ack(result) = state.apply(&me, Input::Stored { worker_id, name, info }).await? {
                    let _ = reply.send(result);
                }
            }
            SupervisorMsg::Cancel { principal, reply } => {
                if let Answer::View(result) = state.apply(&me, Input::Cancel { principal }).await? {
                    let _ = reply.send(result);
                }
            }
            SupervisorMsg::Status { principal, reply } => {
                let _ = reply.send(state.job.view_for(&principal));
            }
            SupervisorMsg::Access { caller, name, reply } => {
                let _ = reply.send(core::read_access(&state.job, &caller, &name));
            }
            SupervisorMsg::UploadTarget { worker_id, name, reply } => {
                let _ = reply.send(core::upload_target(&state.job, &worker_id, &name));
            }
        }
        Ok(())
    }
}

impl SupervisorState {
    fn job_id(&self) -> String {
        self.job.job_id().to_string()
    }

    /// One step of the core, carried out: persist, effects, then the answer.
    async fn apply(&mut self, me: &ActorRef<SupervisorMsg>, input: Input) -> Result<Answer, ActorProcessingErr> {
        let before = (self.job.state(), self.job.record.reason.clone());
        let Step {
            persist,
            effects,
            answer,
        } = self.job.step(
            input,
            core::Now {
                wall_ms: now_ms(),
                mono_ms: crate::mono_ms(),
            },
        );
        if persist {
            self.persist().await?;
        }
        if before != (self.job.state(), self.job.record.reason.clone()) {
            tracing::info!(job = %self.job_id(), state = ?self.job.state(), reason = ?self.job.record.view.reason, "job state");
        }
        for effect in effects {
            self.perform(me, effect).await;
        }
        if self.job.state().is_terminal() {
            if let Some(manager) = self.manager.take() {
                let _ = manager.send_message(super::ManagerMsg::Finished { job_id: self.job_id() });
            }
        }
        Ok(answer)
    }

    /// Writes the record with a revision check. Any other failure is retried (with backoff)
    /// before anything else happens: no effect of an unwritten decision is ever performed.
    async fn persist(&mut self) -> Result<(), ActorProcessingErr> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let value = encode(&self.job.record);
            match self.deps.jobs.update(self.job.job_id(), value.into(), self.revision).await {
                Ok(revision) => {
                    self.revision = revision;
                    return Ok(());
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    return Err(format!("job {} was changed by another broker; giving it up", self.job_id()).into());
                }
                Err(e) => {
                    tracing::error!(job = %self.job_id(), error = %e, retry_in = ?backoff, "could not persist job record; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(PERSIST_BACKOFF_MAX);
                }
            }
        }
    }

    async fn perform(&mut self, me: &ActorRef<SupervisorMsg>, effect: Effect) {
        let job_id = self.job_id();
        let back = |me: &ActorRef<SupervisorMsg>| {
            let me = me.clone();
            move |input: Input| drop(me.send_message(SupervisorMsg::Input(input)))
        };
        match effect {
            // In order: the researcher sees states and progress as they happened.
            Effect::Publish(kind) => {
                publish_job_event(&self.deps.js, &self.job.record.view.principal, &job_id, kind).await;
            }
            Effect::Auction {
                requirements,
                work,
                exclude,
            } => {
                let (auctioneer, send) = (self.deps.auctioneer.clone(), back(me));
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
                    send(Input::AuctionClosed(outcome));
                });
            }
            Effect::Hold { n, transfer } => {
                let (ledger, send) = (self.deps.ledger.clone(), back(me));
                tokio::spawn(async move {
                    let outcome = transfer_once(&ledger, transfer).await;
                    send(Input::HoldDone { n, outcome });
                });
            }
            Effect::Settle { n, transfers } => {
                let (ledger, send) = (self.deps.ledger.clone(), back(me));
                tokio::spawn(async move {
                    let mut outcome = TransferOutcome::Applied;
                    for t in transfers {
                        let id = t.id.clone();
                        match transfer_once(&ledger, t).await {
                            TransferOutcome::Applied => {}
                            other => {
                                tracing::error!(job = %job_id, transfer = %id, outcome = ?other, "settlement transfer not applied; retrying every second");
                                outcome = other;
                                break;
                            }
                        }
                    }
                    if outcome == TransferOutcome::Applied {
                        tracing::info!(job = %job_id, award = n, "award settled");
                    }
                    send(Input::SettleDone { n, outcome });
                });
            }
            Effect::Sweep => {
                let (ledger, send, principal) = (self.deps.ledger.clone(), back(me), self.job.record.view.principal.clone());
                tokio::spawn(async move {
                    let empty = sweep(&ledger, &job_id, &principal).await;
                    send(Input::Swept { empty });
                });
            }
            Effect::Reserve { worker_id } => {
                let _ = self.deps.registry.send_message(RegistryMsg::Reserve { worker_id, job: job_id });
            }
            Effect::Release { worker_id, track } => {
                let _ = self.deps.registry.send_message(RegistryMsg::Release {
                    worker_id,
                    job: job_id,
                    track,
                });
            }
            Effect::SendAward { worker_id, award } => {
                let (nats, send) = (self.deps.nats.clone(), back(me));
                tokio::spawn(async move {
                    let award_id = award.award_id.clone();
                    let subject = subjects::dispatch(&worker_id, subjects::dispatch::AWARD);
                    let answer = match tokio::time::timeout(AWARD_ANSWER, nats.request(subject, encode(&award).into())).await {
                        Ok(Ok(message)) => helium_protocol::decode::<Reply<AwardAck>>(&message.payload)
                            .and_then(Reply::into_result)
                            .map_err(|e| e.to_string()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no answer to the award in {} s", AWARD_ANSWER.as_secs())),
                    };
                    send(Input::AwardAnswered { award_id, answer });
                });
            }
            Effect::SendCancel { worker_id, cancel } => {
                let nats = self.deps.nats.clone();
                let subject = subjects::dispatch(&worker_id, subjects::dispatch::CANCEL);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), nats.request(subject, encode(&cancel).into())).await;
                });
            }
            Effect::NotifySettled { worker_id, notice } => {
                // At most once, for the worker's log; a lost notice loses nothing (the ledger has it).
                let subject = subjects::dispatch(&worker_id, subjects::dispatch::SETTLED);
                if let Err(e) = self.deps.nats.publish(subject, encode(&notice).into()).await {
                    tracing::debug!(job = %job_id, error = %e, "settlement notice not sent");
                }
            }
            Effect::CheckAlive { worker_id } => {
                let (registry, send) = (self.deps.registry.clone(), back(me));
                tokio::spawn(async move {
                    let w = worker_id.clone();
                    let alive = ractor::call_t!(registry, |reply| RegistryMsg::Alive { worker_id: w, reply }, 5_000);
                    // Unknown (the registry did not answer) counts as alive: asked again never,
                    // but heartbeats will tell.
                    let alive = alive.unwrap_or(true);
                    if !alive {
                        tracing::warn!(job = %job_id, worker = %worker_id, "worker did not rejoin after a restart: lost");
                    }
                    send(Input::WorkerAlive { worker_id, alive });
                });
            }
            Effect::Delete { key } => {
                let store = self.deps.store.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.delete(&key).await {
                        tracing::warn!(key = %key, error = %e, "could not delete a superseded artifact");
                    }
                });
            }
            Effect::Finished => {
                if let Some(ticker) = self.ticker.take() {
                    ticker.abort();
                }
            }
        }
    }
}

/// One transfer through the Ledger actor, its outcome typed: a refusal the ledger gave is
/// final; a timeout or an unavailable ledger is not known.
async fn transfer_once(ledger: &ActorRef<LedgerMsg>, t: Transfer) -> TransferOutcome {
    match ractor::call_t!(ledger, LedgerMsg::Transfer, 10_000, t) {
        Ok(Ok(_)) => TransferOutcome::Applied,
        Ok(Err(e)) => {
            let e: WireError = e.into();
            if e.code == ErrorCode::Unavailable {
                TransferOutcome::Unknown(e.message)
            } else {
                TransferOutcome::Refused(e)
            }
        }
        Err(e) => TransferOutcome::Unknown(format!("ledger: {e}")),
    }
}

/// Returns to the researcher whatever a finished job's escrow still holds (nothing, unless a
/// bug left it). True when the escrow is known to be empty.
async fn sweep(ledger: &ActorRef<LedgerMsg>, job_id: &str, principal: &str) -> bool {
    let Ok(left) = ractor::call_t!(ledger, LedgerMsg::Balance, 5_000, escrow(job_id)) else {
        return false;
    };
    let Ok(amount) = u64::try_from(left) else { return true };
    if amount == 0 {
        return true;
    }
    let t = Transfer {
        v: PROTOCOL_VERSION,
        id: format!("sweep.{job_id}"),
        debit: escrow(job_id),
        credit: user(principal),
        amount,
        memo: "return a stray hold".into(),
    };
    let swept = transfer_once(ledger, t).await == TransferOutcome::Applied;
    tracing::warn!(job = %job_id, amount, ok = swept, "swept a stray hold back to the researcher");
    swept
}
