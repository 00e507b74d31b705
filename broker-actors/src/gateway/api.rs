//! The researcher/operator API: `helium.v1.api.<principal>.<verb>`, as the `helium-api` micro
//! service (load-balanced across brokers by its queue group).

use async_nats::service::{Service, ServiceExt};
use helium_protocol::{
    api::{Balance, Empty, Grant, JobRef, SubmitJob, WorkerList},
    artifacts::{BeginUpload, CommitUpload, ReadArtifact, UploadChunk},
    ledger::{user, Transfer, MINT},
    subjects::{self, api},
    ErrorCode, WireError, PROTOCOL_VERSION,
};
use tokio::task::JoinHandle;

use super::{read_artifact, serve, unavailable};
use crate::{
    artifacts::{ArtifactsMsg, Caller, Target},
    jobs::ManagerMsg,
    ledger::LedgerMsg,
    registry::RegistryMsg,
    Ctx,
};

const CALL_MS: u64 = 30_000;

pub async fn start(ctx: Ctx, operators: Vec<String>) -> Result<(Service, Vec<JoinHandle<()>>), async_nats::Error> {
    let service = ctx
        .deps
        .nats
        .service_builder()
        .description("Helium researcher and operator API")
        .queue_group(subjects::BROKER_QUEUE)
        .start(subjects::API_SERVICE, env!("CARGO_PKG_VERSION"))
        .await?;
    let endpoint = |verb: &'static str| {
        let service = &service;
        async move {
            service
                .endpoint_builder()
                .name(verb.replace('.', "-"))
                .add(subjects::api_any(verb))
                .await
        }
    };
    let mut tasks = Vec::new();

    let d = ctx.clone();
    tasks.push(serve(
        endpoint(api::JOB_SUBMIT).await?,
        move |principal, request: SubmitJob| {
            let d = d.clone();
            async move {
                ractor::call_t!(
                    d.manager,
                    |reply| ManagerMsg::Submit {
                        principal,
                        request,
                        reply
                    },
                    CALL_MS
                )
                .map_err(unavailable)?
            }
        },
    ));
    let d = ctx.clone();
    tasks.push(serve(endpoint(api::JOB_STATUS).await?, move |principal, r: JobRef| {
        let d = d.clone();
        async move {
            ractor::call_t!(
                d.manager,
                |reply| ManagerMsg::Status {
                    principal,
                    job_id: r.job_id,
                    reply
                },
                CALL_MS
            )
            .map_err(unavailable)?
        }
    }));
    let d = ctx.clone();
    tasks.push(serve(endpoint(api::JOB_CANCEL).await?, move |principal, r: JobRef| {
        let d = d.clone();
        async move {
            ractor::call_t!(
                d.manager,
                |reply| ManagerMsg::Cancel {
                    principal,
                    job_id: r.job_id,
                    reply
                },
                CALL_MS
            )
            .map_err(unavailable)?
        }
    }));
    let d = ctx.clone();
    tasks.push(serve(
        endpoint(api::ACCOUNT_BALANCE).await?,
        move |principal, _: Empty| {
            let d = d.clone();
            async move {
                let micro = ractor::call_t!(d.deps.ledger, LedgerMsg::Balance, CALL_MS, user(&principal))
                    .map_err(unavailable)?;
                Ok(Balance { principal, micro })
            }
        },
    ));
    let d = ctx.clone();
    tasks.push(serve(
        endpoint(api::ACCOUNT_GRANT).await?,
        move |principal, g: Grant| {
            let (d, operators) = (d.clone(), operators.clone());
            async move {
                if !operators.contains(&principal) {
                    return Err(WireError::new(
                        ErrorCode::Unauthorized,
                        format!("{principal} is not an operator and cannot mint credits"),
                    ));
                }
                if !subjects::valid_id(&g.to) || !subjects::valid_id(&g.id) {
                    return Err(WireError::bad_request(
                        "grant `to` and `id` must be 1-64 of [A-Za-z0-9_-]",
                    ));
                }
                let t = Transfer {
                    v: PROTOCOL_VERSION,
                    id: format!("grant.{}", g.id),
                    debit: MINT.into(),
                    credit: user(&g.to),
                    amount: g.micro,
                    memo: format!("minted by {principal}"),
                };
                ractor::call_t!(d.deps.ledger, LedgerMsg::Transfer, CALL_MS, t)
                    .map_err(unavailable)?
                    .map_err(WireError::from)?;
                let micro =
                    ractor::call_t!(d.deps.ledger, LedgerMsg::Balance, CALL_MS, user(&g.to)).map_err(unavailable)?;
                Ok(Balance { principal: g.to, micro })
            }
        },
    ));
    let d = ctx.clone();
    tasks.push(serve(endpoint(api::WORKER_LIST).await?, move |_principal, _: Empty| {
        let d = d.clone();
        async move {
            Ok(WorkerList {
                workers: ractor::call_t!(d.deps.registry, RegistryMsg::List, CALL_MS).map_err(unavailable)?,
            })
        }
    }));
    let d = ctx.clone();
    tasks.push(serve(
        endpoint(api::ARTIFACT_BEGIN).await?,
        move |principal, b: BeginUpload| {
            let d = d.clone();
            async move {
                if b.job_id.is_some() {
                    return Err(WireError::bad_request(
                        "researchers upload to staging: leave job_id empty and name the upload in job.submit",
                    ));
                }
                let caller = Caller::Researcher(principal);
                ractor::call_t!(
                    d.deps.artifacts,
                    |reply| ArtifactsMsg::Begin {
                        caller,
                        target: Target::Staging,
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
    let d = ctx.clone();
    tasks.push(serve(
        endpoint(api::ARTIFACT_CHUNK).await?,
        move |principal, chunk: UploadChunk| {
            let d = d.clone();
            async move {
                let caller = Caller::Researcher(principal);
                ractor::call_t!(
                    d.deps.artifacts,
                    |reply| ArtifactsMsg::Chunk { caller, chunk, reply },
                    CALL_MS
                )
                .map_err(unavailable)?
            }
        },
    ));
    let d = ctx.clone();
    tasks.push(serve(
        endpoint(api::ARTIFACT_COMMIT).await?,
        move |principal, c: CommitUpload| {
            let d = d.clone();
            async move {
                let caller = Caller::Researcher(principal);
                let (_, info) = ractor::call_t!(
                    d.deps.artifacts,
                    |reply| ArtifactsMsg::Commit {
                        caller,
                        upload_id: c.upload_id,
                        reply
                    },
                    CALL_MS
                )
                .map_err(unavailable)??;
                Ok(info)
            }
        },
    ));
    let d = ctx.clone();
    tasks.push(serve(
        endpoint(api::ARTIFACT_READ).await?,
        move |principal, r: ReadArtifact| {
            let d = d.clone();
            async move { read_artifact(&d, Caller::Researcher(principal), r).await }
        },
    ));
    Ok((service, tasks))
}
