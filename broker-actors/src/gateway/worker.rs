//! The worker gateway: `helium.v1.worker.<worker>.<verb>` requests (register, artifacts) as the
//! `helium-worker-gateway` micro service, heartbeats as plain messages, and run events from
//! the durable `HELIUM_RUNS` stream, acknowledged only after the job's supervisor handled them.

use std::time::Duration;

use async_nats::{
    jetstream::{self, consumer::pull, AckKind},
    service::{Service, ServiceExt},
};
use futures::StreamExt;
use helium_protocol::{
    artifacts::{BeginUpload, CommitUpload, ReadArtifact, UploadChunk},
    decode,
    subjects::{self, keys, streams, worker},
    worker::{Heartbeat, Register, RunEvent},
    WireError,
};
use tokio::task::JoinHandle;

use super::{read_artifact, serve, unavailable};
use crate::{
    artifacts::{ArtifactsMsg, Caller, Target},
    jobs::ManagerMsg,
    registry::RegistryMsg,
    Ctx,
};

const CALL_MS: u64 = 30_000;

pub async fn start(ctx: Ctx) -> Result<(Service, Vec<JoinHandle<()>>), async_nats::Error> {
    let service = ctx
        .deps
        .nats
        .service_builder()
        .description("Helium worker gateway: registration and artifacts for workers")
        .queue_group(subjects::BROKER_QUEUE)
        .start(subjects::WORKER_GATEWAY_SERVICE, env!("CARGO_PKG_VERSION"))
        .await?;
    let endpoint = |verb: &'static str| {
        let service = &service;
        async move {
            service
                .endpoint_builder()
                .name(verb.replace('.', "-"))
                .add(subjects::worker_any(verb))
                .await
        }
    };
    let mut tasks = Vec::new();

    let c = ctx.clone();
    tasks.push(serve(
        endpoint(worker::REGISTER).await?,
        move |worker_id, register: Register| {
            let c = c.clone();
            async move {
                if !subjects::valid_id(&register.owner) {
                    return Err(WireError::bad_request("owner must be 1-64 of [A-Za-z0-9_-]"));
                }
                ractor::call_t!(
                    c.deps.registry,
                    |reply| RegistryMsg::Register {
                        worker_id,
                        register,
                        reply
                    },
                    CALL_MS
                )
                .map_err(unavailable)
            }
        },
    ));
    let c = ctx.clone();
    tasks.push(serve(
        endpoint(worker::ARTIFACT_BEGIN).await?,
        move |worker_id, b: BeginUpload| {
            let c = c.clone();
            async move {
                let job_id = b
                    .job_id
                    .ok_or_else(|| WireError::bad_request("a worker's upload names its job_id"))?;
                let (w, name) = (worker_id.clone(), b.name);
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
                let caller = Caller::Worker(worker_id);
                ractor::call_t!(
                    c.deps.artifacts,
                    |reply| ArtifactsMsg::Begin {
                        caller,
                        target: Target::Key(key),
                        size: b.size,
                        sha256: b.sha256,
                        reply
                    },
                    CALL_MS
                )
                .map_err(unavailable)?
            }
        },
    ));
    let c = ctx.clone();
    tasks.push(serve(
        endpoint(worker::ARTIFACT_CHUNK).await?,
        move |worker_id, chunk: UploadChunk| {
            let c = c.clone();
            async move {
                let caller = Caller::Worker(worker_id);
                ractor::call_t!(
                    c.deps.artifacts,
                    |reply| ArtifactsMsg::Chunk { caller, chunk, reply },
                    CALL_MS
                )
                .map_err(unavailable)?
            }
        },
    ));
    let c = ctx.clone();
    tasks.push(serve(
        endpoint(worker::ARTIFACT_COMMIT).await?,
        move |worker_id, commit: CommitUpload| {
            let c = c.clone();
            async move {
                let caller = Caller::Worker(worker_id.clone());
                let (key, info) = ractor::call_t!(
                    c.deps.artifacts,
                    |reply| ArtifactsMsg::Commit {
                        caller,
                        upload_id: commit.upload_id,
                        reply
                    },
                    CALL_MS
                )
                .map_err(unavailable)??;
                if let Some((job_id, name)) = keys::parse_job_key(&key) {
                    let info = helium_protocol::artifacts::ArtifactInfo {
                        name: name.clone(),
                        ..info.clone()
                    };
                    let _ = c.manager.send_message(ManagerMsg::Stored {
                        worker_id,
                        job_id,
                        name,
                        info,
                    });
                }
                Ok(info)
            }
        },
    ));
    let c = ctx.clone();
    tasks.push(serve(
        endpoint(worker::ARTIFACT_READ).await?,
        move |worker_id, r: ReadArtifact| {
            let c = c.clone();
            async move { read_artifact(&c, Caller::Worker(worker_id), r).await }
        },
    ));

    tasks.push(heartbeats(ctx.clone()).await?);
    tasks.push(run_events(ctx).await?);
    Ok((service, tasks))
}

async fn heartbeats(ctx: Ctx) -> Result<JoinHandle<()>, async_nats::Error> {
    let mut sub = ctx.deps.nats.subscribe(subjects::worker_any(worker::HEARTBEAT)).await?;
    Ok(tokio::spawn(async move {
        while let Some(message) = sub.next().await {
            let Some(worker_id) = subjects::identity_of(&message.subject) else {
                continue;
            };
            match decode::<Heartbeat>(&message.payload) {
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
    let mut messages = consumer.messages().await?;
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
                (Some(worker_id), Ok(event)) => {
                    let worker_id = worker_id.to_string();
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
