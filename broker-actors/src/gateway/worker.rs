//! The worker gateway: `helium.v1.worker.<worker>.<verb>` requests (register, artifacts) as the
//! `helium-worker-gateway` micro service, heartbeats as plain messages, and run events from
//! the durable `HELIUM_RUNS` stream, acknowledged only after the job's supervisor handled them.

use std::time::Duration;

use async_nats::{
    jetstream::{self, consumer::pull, AckKind},
    service::Service,
};
use futures::StreamExt;
use helium_protocol::{
    artifacts::{
        self, ArtifactChunk, ArtifactInfo, BeginUpload, ChunkAck, CommitUpload, ReadArtifact, UploadChunk, UploadStarted,
    },
    auth::{self, Role},
    decode,
    subjects::{self, keys, streams, worker},
    worker::{Heartbeat, Register, Registered, RunEvent},
    ErrorCode, WireError,
};
use tokio::task::JoinHandle;

use super::{read_artifact, unavailable, upload_chunk, upload_commit, Endpoints, CALL_MS};
use crate::{
    artifacts::{
        state_check::{Expect, StateKind},
        ArtifactsMsg, Caller, Target,
    },
    jobs::ManagerMsg,
    registry::RegistryMsg,
    Ctx,
};

pub async fn start(ctx: Ctx) -> Result<(Service, Vec<JoinHandle<()>>), async_nats::Error> {
    let description = "Helium worker gateway: registration and artifacts for workers";
    let mut e = Endpoints::start(
        &ctx,
        subjects::WORKER_GATEWAY_SERVICE,
        description,
        subjects::worker_any,
    )
    .await?;
    e.add(worker::REGISTER, register).await?;
    e.add(worker::ARTIFACT_BEGIN, begin).await?;
    e.add(worker::ARTIFACT_CHUNK, chunk).await?;
    e.add(worker::ARTIFACT_COMMIT, commit).await?;
    e.add(worker::ARTIFACT_READ, read).await?;
    e.also(heartbeats(ctx.clone()).await?);
    e.also(run_events(ctx).await?);
    Ok(e.finish())
}

/// A worker's owner comes from its credential: the JWT must be signed by the grid's account,
/// not expired, name this worker (the subject's id, which nats-server let only this
/// credential publish under) and carry the worker role with its owner; and while the id is
/// live under one owner, another's registration is refused (the registry).
///
/// Revocation is not checked here: nats-server refuses a revoked credential at connect and
/// drops its connections, so the connection asking holds a live credential for this id. The
/// JWT it presents may be another (say, a revoked one of the same id): `helium creds issue`
/// never gives an id to two owners, so any JWT naming this id names its owner.
async fn register(c: Ctx, worker_id: String, mut register: Register) -> Result<Registered, WireError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let user = auth::jwt::verify_user(&register.credential, &c.account, now)
        .map_err(|e| WireError::new(ErrorCode::Unauthorized, format!("worker credential refused: {e}")))?;
    let owner = match user.role {
        Some(Role::Worker { owner }) if user.name == worker_id => owner,
        Some(Role::Worker { .. }) => {
            return Err(WireError::new(
                ErrorCode::Unauthorized,
                format!("the credential is worker {}'s, not {worker_id}'s", user.name),
            ))
        }
        _ => return Err(WireError::new(ErrorCode::Unauthorized, "the credential is not a worker's")),
    };
    // A claim no machine can meet (∞ throughput, u64::MAX memory) would rank first in every
    // auction; a huge name would make `worker.list` unanswerable for everyone.
    register
        .ask
        .validate()
        .map_err(|e| WireError::bad_request(format!("ask refused: {e}")))?;
    if !register.incarnation.is_empty() {
        helium_protocol::validate::id("incarnation", &register.incarnation)
            .map_err(|e| WireError::bad_request(format!("registration refused: {e}")))?;
    }
    if register.owner != owner {
        return Err(WireError::new(
            ErrorCode::Unauthorized,
            format!("this worker's credential pays {owner}, not {}", register.owner),
        ));
    }
    register.owner = owner;
    ractor::call_t!(
        c.deps.registry,
        |reply| RegistryMsg::Register {
            worker_id,
            register,
            reply
        },
        CALL_MS
    )
    .map_err(unavailable)?
    .map_err(|e| WireError::new(ErrorCode::Unauthorized, e.to_string()))
}

/// A worker uploads only `result` or `checkpoints/<step>` of a job awarded to it; the job's
/// supervisor decides, and names the object key. Either is stored only if it is a state file
/// matching the job's model (`artifacts::state_check`).
async fn begin(c: Ctx, worker_id: String, b: BeginUpload) -> Result<UploadStarted, WireError> {
    let job_id = b
        .job_id
        .ok_or_else(|| WireError::bad_request("a worker's upload names its job_id"))?;
    let kind = if b.name == artifacts::RESULT {
        StateKind::Result
    } else {
        StateKind::Checkpoint
    };
    let (w, name, job) = (worker_id.clone(), b.name, job_id.clone());
    let key = ractor::call_t!(
        c.manager,
        |reply| ManagerMsg::UploadTarget {
            worker_id: w,
            job_id,
            name,
            reply
        },
        CALL_MS
    )
    .map_err(unavailable)??;
    let manifest = ractor::call_t!(c.manager, |reply| ManagerMsg::StateOf { job_id: job, reply }, CALL_MS)
        .map_err(unavailable)??;
    let caller = Caller::Worker(worker_id);
    let (size, sha256) = (b.size, b.sha256);
    ractor::call_t!(
        c.deps.artifacts,
        |reply| ArtifactsMsg::Begin {
            caller,
            target: Target::State(key, Expect { kind, manifest }),
            size,
            sha256,
            reply
        },
        CALL_MS
    )
    .map_err(unavailable)?
}

async fn chunk(c: Ctx, worker_id: String, chunk: UploadChunk) -> Result<ChunkAck, WireError> {
    upload_chunk(&c, Caller::Worker(worker_id), chunk).await
}

/// Commits, then tells the job's supervisor what was stored, so that only verified uploads
/// count as checkpoints or results.
async fn commit(c: Ctx, worker_id: String, commit: CommitUpload) -> Result<ArtifactInfo, WireError> {
    // The award may have ended since `begin` (worker lost, job cancelled): a late upload must
    // not overwrite what the job's next worker stores under the same key.
    let caller = Caller::Worker(worker_id.clone());
    let upload_id = commit.upload_id.clone();
    let key = ractor::call_t!(
        c.deps.artifacts,
        |reply| ArtifactsMsg::KeyOf {
            caller,
            upload_id,
            reply
        },
        CALL_MS
    )
    .map_err(unavailable)??;
    if let Some((job_id, name)) = keys::parse_job_key(&key) {
        let w = worker_id.clone();
        let still = ractor::call_t!(
            c.manager,
            |reply| ManagerMsg::UploadTarget {
                worker_id: w,
                job_id,
                name,
                reply
            },
            CALL_MS
        )
        .map_err(unavailable)?;
        if let Err(e) = still {
            let upload_id = commit.upload_id.clone();
            let _ = c.deps.artifacts.send_message(ArtifactsMsg::Abort {
                caller: Caller::Worker(worker_id),
                upload_id,
            });
            return Err(e);
        }
    }
    let (key, info) = upload_commit(&c, Caller::Worker(worker_id.clone()), commit).await?;
    if let Some((job_id, name)) = keys::parse_job_key(&key) {
        let stored = ArtifactInfo {
            name: name.clone(),
            ..info.clone()
        };
        // Answered only once the job recorded it: a run event naming it can then count it,
        // even across a broker restart.
        let w = worker_id.clone();
        let recorded = ractor::call_t!(
            c.manager,
            |reply| ManagerMsg::Stored {
                worker_id: w,
                job_id,
                name: name.clone(),
                info: stored,
                reply
            },
            CALL_MS
        )
        .map_err(unavailable)?;
        if let Err(e) = recorded {
            if name.starts_with(helium_protocol::artifacts::CHECKPOINTS) {
                // It can never count: do not keep it (a result key may be the job's own).
                let _ = c.deps.store.delete(&key).await;
            }
            return Err(e);
        }
    }
    Ok(info)
}

async fn read(c: Ctx, worker_id: String, r: ReadArtifact) -> Result<ArtifactChunk, WireError> {
    read_artifact(&c, Caller::Worker(worker_id), r).await
}

async fn heartbeats(ctx: Ctx) -> Result<JoinHandle<()>, async_nats::Error> {
    let mut sub = ctx.deps.nats.subscribe(subjects::worker_any(worker::HEARTBEAT)).await?;
    Ok(tokio::spawn(async move {
        while let Some(message) = sub.next().await {
            let Some(worker_id) = subjects::identity_of(&message.subject) else {
                continue;
            };
            match decode::<Heartbeat>(&message.payload) {
                Ok(heartbeat) if heartbeat.validate().is_err() => {
                    tracing::info!(worker = %worker_id, "heartbeat naming no job id dropped");
                }
                Ok(heartbeat) => {
                    let _ = ctx.deps.registry.send_message(RegistryMsg::Heartbeat {
                        worker_id: worker_id.to_string(),
                        heartbeat,
                    });
                }
                Err(e) => tracing::info!(worker = %worker_id, error = %e, "malformed heartbeat dropped"),
            }
        }
    }))
}

/// How long one pull request for run events waits on the consumer's leader (then another is sent).
const RUN_PULL_EXPIRES: Duration = Duration::from_secs(5);
/// The idle heartbeat the leader sends while a pull request waits (at most half its expiry).
const RUN_PULL_HEARTBEAT: Duration = Duration::from_secs(2);

/// Consumes run events durably: a broker that restarts picks up where it left off, and an
/// event is acknowledged only once its supervisor has applied it (nak'd for redelivery if the
/// supervisor could not be reached). Malformed or unauthorised events are terminated, not retried.
async fn run_events(ctx: Ctx) -> Result<JoinHandle<()>, async_nats::Error> {
    let stream = ctx.deps.js.get_stream(streams::RUNS).await?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            streams::RUNS_CONSUMER,
            pull::Config {
                durable_name: Some(streams::RUNS_CONSUMER.to_string()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await?;
    // A pull request lives on the consumer's leader. When that leader moves (its node lost,
    // or a step-down) the request is gone and nothing says so: only the next pull, at the
    // request's expiry, or a missed heartbeat restarts delivery. async-nats' 30 s default
    // stalled run events that long; RUN_PULL_EXPIRES bounds it.
    let mut messages = consumer
        .stream()
        .expires(RUN_PULL_EXPIRES)
        .heartbeat(RUN_PULL_HEARTBEAT)
        .messages()
        .await?;
    Ok(tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "run event stream error");
                    continue;
                }
            };
            let ack = match (
                subjects::identity_of(&message.subject),
                decode::<RunEvent>(&message.payload),
            ) {
                (Some(worker_id), Ok(mut event)) => {
                    let worker_id = worker_id.to_string();
                    // A huge reason still settles the run, truncated: it must fit the job's
                    // record and events.
                    event.clamp();
                    let (job, kind) = (event.job_id.clone(), format!("{:?}", event.kind));
                    match ractor::call_t!(
                        ctx.manager,
                        |reply| ManagerMsg::Run {
                            worker_id: worker_id.clone(),
                            event,
                            reply
                        },
                        CALL_MS
                    ) {
                        Ok(Ok(())) => AckKind::Ack,
                        // Not (yet) known here: another broker's, or one being respawned. Left
                        // in the stream for later rather than lost.
                        Ok(Err(e)) if e.code == ErrorCode::NotFound => {
                            tracing::warn!(worker = %worker_id, job = %job, error = %e, "run event for an unknown job; redelivered later");
                            AckKind::Nak(Some(Duration::from_secs(5)))
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(worker = %worker_id, job = %job, event = %kind, error = %e, "run event refused");
                            AckKind::Term
                        }
                        Err(e) => {
                            tracing::warn!(worker = %worker_id, job = %job, error = %e, "run event not handled; will be redelivered");
                            AckKind::Nak(Some(Duration::from_secs(1)))
                        }
                    }
                }
                (_, Err(e)) => {
                    tracing::warn!(subject = %message.subject, error = %e, "malformed run event dropped");
                    AckKind::Term
                }
                (None, _) => AckKind::Term,
            };
            if let Err(e) = message.ack_with(ack).await {
                tracing::warn!(error = %e, "could not ack run event");
            }
        }
    }))
}
