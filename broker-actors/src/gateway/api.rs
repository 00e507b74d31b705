//! The researcher/operator API: `helium.v1.api.<principal>.<verb>`, as the `helium-api` micro
//! service (load-balanced across brokers by its queue group). One handler per verb.

use async_nats::service::Service;
use helium_protocol::{
    api::{Balance, Empty, FollowJob, Following, Grant, JobList, JobRef, JobView, Quote, QuoteJob, ReadStatement, Statement, SubmitJob, WorkerList, WorkerLog, WorkerLogRequest},
    artifacts::{
        ArtifactChunk, ArtifactInfo, BeginUpload, ChunkAck, CommitUpload, ReadArtifact, UploadChunk, UploadStarted,
    },
    ledger::{user, Transfer, MINT},
    subjects::{self, api},
    WireError, PROTOCOL_VERSION,
};
use tokio::task::JoinHandle;

use super::{read_artifact, unavailable, upload_chunk, upload_commit, Endpoints, CALL_MS};
use crate::{
    artifacts::{ArtifactsMsg, Caller, Target},
    auction::AuctioneerMsg,
    jobs::ManagerMsg,
    ledger::LedgerMsg,
    registry::RegistryMsg,
    Ctx,
};

pub async fn start(ctx: Ctx) -> Result<(Service, Vec<JoinHandle<()>>), async_nats::Error> {
    let description = "Helium researcher and operator API";
    let mut e = Endpoints::start(&ctx, subjects::API_SERVICE, description, subjects::api_any).await?;
    e.add(api::JOB_SUBMIT, submit).await?;
    e.add(api::JOB_STATUS, status).await?;
    e.add(api::JOB_CANCEL, cancel).await?;
    e.add(api::JOB_LIST, list).await?;
    e.add(api::JOB_FOLLOW, follow).await?;
    e.add(api::JOB_QUOTE, quote).await?;
    e.add(api::ACCOUNT_BALANCE, balance).await?;
    e.add(api::ACCOUNT_GRANT, grant).await?;
    e.add(api::ACCOUNT_STATEMENT, statement).await?;
    e.add(api::WORKER_LIST, workers).await?;
    e.add(api::WORKER_LOG, worker_log).await?;
    e.add(api::ARTIFACT_BEGIN, begin).await?;
    e.add(api::ARTIFACT_CHUNK, chunk).await?;
    e.add(api::ARTIFACT_COMMIT, commit).await?;
    e.add(api::ARTIFACT_READ, read).await?;
    Ok(e.finish())
}

async fn submit(c: Ctx, principal: String, request: SubmitJob) -> Result<JobView, WireError> {
    ractor::call_t!(
        c.manager,
        |reply| ManagerMsg::Submit {
            principal,
            request,
            reply
        },
        CALL_MS
    )
    .map_err(unavailable)?
}

async fn status(c: Ctx, principal: String, r: JobRef) -> Result<JobView, WireError> {
    let job_id = r.job_id;
    ractor::call_t!(
        c.manager,
        |reply| ManagerMsg::Status {
            principal,
            job_id,
            reply
        },
        CALL_MS
    )
    .map_err(unavailable)?
}

async fn cancel(c: Ctx, principal: String, r: JobRef) -> Result<JobView, WireError> {
    let job_id = r.job_id;
    ractor::call_t!(
        c.manager,
        |reply| ManagerMsg::Cancel {
            principal,
            job_id,
            reply
        },
        CALL_MS
    )
    .map_err(unavailable)?
}

/// The auction's price for a job on the current asks; nothing is submitted, held or sent.
async fn quote(c: Ctx, _principal: String, q: QuoteJob) -> Result<Quote, WireError> {
    crate::jobs::record::validate_requirements(&q.requirements, crate::now_ms())?;
    if q.work.epochs == 0 || q.work.epochs > 100_000 {
        return Err(WireError::bad_request("epochs must be between 1 and 100000"));
    }
    let (requirements, work) = (q.requirements, q.work);
    ractor::call_t!(
        c.deps.auctioneer,
        |reply| AuctioneerMsg::Quote {
            requirements,
            work,
            reply
        },
        CALL_MS
    )
    .map_err(unavailable)
}

async fn list(c: Ctx, principal: String, _: Empty) -> Result<JobList, WireError> {
    ractor::call_t!(c.manager, |reply| ManagerMsg::List { principal, reply }, CALL_MS).map_err(unavailable)
}

async fn balance(c: Ctx, principal: String, _: Empty) -> Result<Balance, WireError> {
    let micro = ractor::call_t!(c.deps.ledger, LedgerMsg::Balance, CALL_MS, user(&principal)).map_err(unavailable)?;
    Ok(Balance { principal, micro })
}

/// The caller's own account's postings after `since_seq`, one page (`ReadStatement`): served
/// from the Ledger's index, bounded by `limit` lines and by what fits one message.
async fn statement(c: Ctx, principal: String, r: ReadStatement) -> Result<Statement, WireError> {
    use helium_protocol::limits::{CHUNK_HEADROOM_BYTES, MAX_STATEMENT_BYTES, MAX_STATEMENT_LINES};
    let limit = match r.limit {
        None => MAX_STATEMENT_LINES,
        Some(0) => return Err(WireError::bad_request("limit must be at least 1")),
        Some(n) => n.min(MAX_STATEMENT_LINES),
    } as usize;
    let room = (c.deps.nats.max_payload() as u64).saturating_sub(CHUNK_HEADROOM_BYTES) as usize;
    let (account, since_seq, max_bytes) = (user(&principal), r.since_seq, MAX_STATEMENT_BYTES.min(room));
    let (page, balance) = ractor::call_t!(
        c.deps.ledger,
        |reply| LedgerMsg::Statement {
            account,
            since_seq,
            limit,
            max_bytes,
            reply
        },
        CALL_MS
    )
    .map_err(unavailable)?;
    Ok(Statement {
        principal,
        lines: page.lines,
        more: page.more,
        balance,
    })
}

/// The operator's mint. Only an operator's credential may publish on this verb (nats-server
/// refuses everyone else's), so the caller is an operator. The grant id makes a retried grant
/// a no-op.
async fn grant(c: Ctx, principal: String, g: Grant) -> Result<Balance, WireError> {
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
    ractor::call_t!(c.deps.ledger, LedgerMsg::Transfer, CALL_MS, t)
        .map_err(unavailable)?
        .map_err(WireError::from)?;
    balance(c, g.to, Empty { v: PROTOCOL_VERSION }).await
}

async fn workers(c: Ctx, principal: String, _: Empty) -> Result<WorkerList, WireError> {
    let workers = ractor::call_t!(c.deps.registry, RegistryMsg::List, CALL_MS).map_err(unavailable)?;
    Ok(WorkerList {
        workers: workers.into_iter().map(|w| w.for_caller(&principal)).collect(),
    })
}

/// A worker's last auction notes, for its owner only: the notes name other researchers' jobs
/// and the worker's own bids.
async fn worker_log(c: Ctx, principal: String, r: WorkerLogRequest) -> Result<WorkerLog, WireError> {
    if !subjects::valid_id(&r.worker_id) {
        return Err(WireError::bad_request("worker_id must be 1-64 of [A-Za-z0-9_-]"));
    }
    let limit = match r.limit {
        0 => usize::MAX,
        n => n as usize,
    };
    let worker_id = r.worker_id.clone();
    let answer = ractor::call_t!(
        c.deps.registry,
        |reply| RegistryMsg::Log {
            worker_id,
            limit,
            reply
        },
        CALL_MS
    )
    .map_err(unavailable)?;
    match answer {
        Some((owner, notes)) if owner == principal => Ok(WorkerLog {
            worker_id: r.worker_id,
            notes,
        }),
        Some(_) => Err(WireError::new(
            helium_protocol::ErrorCode::Unauthorized,
            format!("worker {} is not yours: only its owner reads its log", r.worker_id),
        )),
        None => Err(WireError::new(
            helium_protocol::ErrorCode::NotFound,
            format!("no worker {} is registered", r.worker_id),
        )),
    }
}

async fn begin(c: Ctx, principal: String, b: BeginUpload) -> Result<UploadStarted, WireError> {
    if b.job_id.is_some() {
        return Err(WireError::bad_request(
            "researchers upload to staging: leave job_id empty and name the upload in job.submit",
        ));
    }
    let caller = Caller::Researcher(principal);
    let (size, sha256) = (b.size, b.sha256);
    ractor::call_t!(
        c.deps.artifacts,
        |reply| ArtifactsMsg::Begin {
            caller,
            target: Target::Staging,
            size,
            sha256,
            reply
        },
        CALL_MS
    )
    .map_err(unavailable)?
}

async fn chunk(c: Ctx, principal: String, chunk: UploadChunk) -> Result<ChunkAck, WireError> {
    upload_chunk(&c, Caller::Researcher(principal), chunk).await
}

async fn commit(c: Ctx, principal: String, commit: CommitUpload) -> Result<ArtifactInfo, WireError> {
    Ok(upload_commit(&c, Caller::Researcher(principal), commit).await?.1)
}

async fn read(c: Ctx, principal: String, r: ReadArtifact) -> Result<ArtifactChunk, WireError> {
    read_artifact(&c, Caller::Researcher(principal), r).await
}

/// `job.follow`: a consumer of the caller's own events of one job (the filter names the
/// caller), delivering only into the caller's own inbox, made with the broker's rights.
/// Ordered-consumer settings: no acks, flow control, heartbeats, in memory, gone a minute after
/// its subscriber.
async fn follow(c: Ctx, principal: String, f: FollowJob) -> Result<Following, WireError> {
    use async_nats::jetstream::consumer::{push, AckPolicy, DeliverPolicy};
    if !subjects::valid_id(&f.job_id) {
        return Err(WireError::bad_request("job_id must be 1-64 of [A-Za-z0-9_-]"));
    }
    if !helium_protocol::auth::reply_allowed(&subjects::api(&principal, api::JOB_FOLLOW), &f.deliver) {
        return Err(WireError::new(
            helium_protocol::ErrorCode::Unauthorized,
            "events are delivered only into the caller's own inbox",
        ));
    }
    let stream = c.deps.js.get_stream(subjects::streams::EVENTS).await.map_err(unavailable)?;
    let deliver_policy = match f.start_seq {
        0 => DeliverPolicy::All,
        start_sequence => DeliverPolicy::ByStartSequence { start_sequence },
    };
    let consumer = stream
        .create_consumer(push::Config {
            deliver_subject: f.deliver,
            filter_subject: subjects::job_events(&principal, &f.job_id),
            deliver_policy,
            ack_policy: AckPolicy::None,
            flow_control: true,
            idle_heartbeat: std::time::Duration::from_secs(5),
            inactive_threshold: std::time::Duration::from_secs(60),
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(unavailable)?;
    let info = consumer.cached_info();
    Ok(Following { consumer: info.name.clone(), pending: info.num_pending })
}
