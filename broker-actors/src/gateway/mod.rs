//! NATS ingress: micro-service endpoints that decode requests into actor messages and encode
//! the actors' answers into the one reply envelope. Identity always comes from the subject.

pub mod api;
pub mod worker;

use std::future::Future;

use async_nats::service::{Service, ServiceExt};
use futures::StreamExt;
use helium_protocol::{
    artifacts::{ArtifactChunk, ArtifactInfo, ChunkAck, CommitUpload, ReadArtifact, UploadChunk},
    decode, encode,
    limits::chunk_for_payload,
    subjects, ErrorCode, Reply, WireError,
};
use serde::{de::DeserializeOwned, Serialize};

use tokio::task::JoinHandle;

use crate::{
    artifacts::{ArtifactsMsg, Caller},
    jobs::ManagerMsg,
    Ctx,
};

/// One micro service being assembled: each verb becomes an endpoint on the wildcard subject
/// `wildcard(verb)`, served by a handler that gets the context, the caller's id (from the
/// subject) and the decoded request. Every request is handled in its own task and always gets
/// a reply in the envelope.
pub(crate) struct Endpoints {
    service: Service,
    ctx: Ctx,
    wildcard: fn(&str) -> String,
    tasks: Vec<JoinHandle<()>>,
}

impl Endpoints {
    pub(crate) async fn start(
        ctx: &Ctx,
        name: &str,
        description: &str,
        wildcard: fn(&str) -> String,
    ) -> Result<Self, async_nats::Error> {
        let service = ctx
            .deps
            .nats
            .service_builder()
            .description(description)
            .queue_group(subjects::BROKER_QUEUE)
            .start(name, env!("CARGO_PKG_VERSION"))
            .await?;
        Ok(Self {
            service,
            ctx: ctx.clone(),
            wildcard,
            tasks: Vec::new(),
        })
    }

    pub(crate) async fn add<Req, Resp, F, Fut>(&mut self, verb: &str, handler: F) -> Result<(), async_nats::Error>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(Ctx, String, Req) -> Fut + Copy + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, WireError>> + Send + 'static,
    {
        let mut endpoint = self
            .service
            .endpoint_builder()
            .name(verb.replace('.', "-"))
            .add((self.wildcard)(verb))
            .await?;
        let ctx = self.ctx.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Some(request) = endpoint.next().await {
                // Answer only into the caller's own inbox (auth::reply_allowed); anything else
                // is dropped unhandled, before any effect.
                let reply_to = request.message.reply.as_deref().unwrap_or_default();
                if !helium_protocol::auth::reply_allowed(&request.message.subject, reply_to) {
                    tracing::warn!(subject = %request.message.subject, reply = %reply_to, "request dropped: its reply subject is not the caller's inbox");
                    continue;
                }
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let subject = request.message.subject.to_string();
                    let result = match subjects::identity_of(&subject) {
                        None => Err(WireError::new(
                            ErrorCode::Unauthorized,
                            format!("subject {subject} carries no valid identity"),
                        )),
                        Some(id) => match decode::<Req>(&request.message.payload) {
                            Ok(body) => handler(ctx, id.to_string(), body).await,
                            Err(e) => Err(e),
                        },
                    };
                    if let Err(e) = &result {
                        tracing::info!(subject = %subject, code = ?e.code, error = %e.message, "request refused");
                    }
                    let reply = encode(&Reply::from_result(result));
                    if let Err(e) = request.respond(Ok(reply.into())).await {
                        tracing::warn!(subject = %subject, error = %e, "could not send reply");
                    }
                });
            }
        }));
        Ok(())
    }

    /// A task that belongs with the service (a subscription, a consumer).
    pub(crate) fn also(&mut self, task: JoinHandle<()>) {
        self.tasks.push(task);
    }

    pub(crate) fn finish(self) -> (Service, Vec<JoinHandle<()>>) {
        (self.service, self.tasks)
    }
}

/// How long the gateways wait for an actor's answer.
pub(crate) const CALL_MS: u64 = 30_000;

/// `artifact.chunk` for researchers and workers alike.
pub(crate) async fn upload_chunk(ctx: &Ctx, caller: Caller, chunk: UploadChunk) -> Result<ChunkAck, WireError> {
    ractor::call_t!(
        ctx.deps.artifacts,
        |reply| ArtifactsMsg::Chunk { caller, chunk, reply },
        CALL_MS
    )
    .map_err(unavailable)?
}

/// `artifact.commit` for researchers and workers alike: the stored object's key and digest.
pub(crate) async fn upload_commit(
    ctx: &Ctx,
    caller: Caller,
    commit: CommitUpload,
) -> Result<(String, ArtifactInfo), WireError> {
    let upload_id = commit.upload_id;
    ractor::call_t!(
        ctx.deps.artifacts,
        |reply| ArtifactsMsg::Commit {
            caller,
            upload_id,
            reply
        },
        CALL_MS
    )
    .map_err(unavailable)?
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> WireError {
    WireError::new(ErrorCode::Unavailable, e.to_string())
}

/// `artifact.read` for researchers and workers alike: the job's supervisor authorises the
/// caller and names the object; the bytes come straight from the store.
pub(crate) async fn read_artifact(ctx: &Ctx, caller: Caller, req: ReadArtifact) -> Result<ArtifactChunk, WireError> {
    let max_chunk = chunk_for_payload(ctx.deps.nats.max_payload() as u64);
    if req.len > max_chunk {
        return Err(WireError::new(
            ErrorCode::TooLarge,
            format!("read at most {max_chunk} bytes at a time"),
        ));
    }
    let (job_id, name) = (req.job_id.clone(), req.name.clone());
    let (key, info) = ractor::call_t!(
        ctx.manager,
        |reply| ManagerMsg::Access {
            caller,
            job_id,
            name,
            reply
        },
        10_000
    )
    .map_err(unavailable)??;
    if req.offset > info.size {
        return Err(WireError::bad_request(format!(
            "offset {} is past the end ({} bytes)",
            req.offset, info.size
        )));
    }
    let len = req.len.min(info.size - req.offset);
    let data = ctx.deps.store.read(&key, req.offset, len).await.map_err(unavailable)?;
    Ok(ArtifactChunk {
        offset: req.offset,
        data,
        size: info.size,
        sha256: info.sha256,
    })
}

/// Subject templates as a JSON object, for `helium-broker print-subjects` (and through it the
/// Python client's test that its copy matches).
pub fn subject_templates() -> String {
    let mut map = serde_json::Map::new();
    for verb in subjects::api::ALL {
        map.insert(format!("api.{verb}"), subjects::api("{principal}", verb).into());
    }
    for verb in subjects::worker::REQUESTS
        .iter()
        .chain([&subjects::worker::HEARTBEAT, &subjects::worker::RUN_EVENT])
    {
        map.insert(format!("worker.{verb}"), subjects::worker("{worker}", verb).into());
    }
    for verb in [
        subjects::dispatch::INVITE,
        subjects::dispatch::AWARD,
        subjects::dispatch::CANCEL,
        subjects::dispatch::SETTLED,
        subjects::dispatch::AUCTION_RESULT,
    ] {
        map.insert(format!("dispatch.{verb}"), subjects::dispatch("{worker}", verb).into());
    }
    map.insert("events".into(), subjects::job_events("{principal}", "{job}").into());
    map.insert("stream.events".into(), subjects::streams::EVENTS.into());
    map.insert("stream.runs".into(), subjects::streams::RUNS.into());
    map.insert("stream.ledger".into(), subjects::streams::LEDGER.into());
    map.insert("bucket.jobs".into(), subjects::streams::JOBS_BUCKET.into());
    serde_json::Value::Object(map).to_string()
}
