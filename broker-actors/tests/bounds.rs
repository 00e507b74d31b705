//! Everything a peer sends is bounded: the broker refuses an ask or a bid it cannot rank
//! honestly, truncates a failure reason rather than losing the run, holds each researcher to
//! its quotas (open jobs, staged bytes) and each award to its checkpoints, and bounds every
//! stream and the job bucket. Each test shows the forbidden act refused with a clear error,
//! and that nothing else is lost: the grid goes on serving everyone.

mod common;

use async_nats::jetstream::{self, stream};
use common::{
    checkpoint_file, fake_torchscript, model_state, requirements, result_file, safetensors_xy, training, upload,
    worker_request, Grid, Script, ScriptedWorker, CREDIT,
};
use helium_broker_actors::streams;
use helium_protocol::{
    api::{Empty, JobView, SubmitJob, WorkerList},
    auth::Role,
    encode,
    job::{DeclaredWork, DeviceKind, JobState},
    limits::{MAX_EVENTS_PER_JOB, MAX_JOB_RECORD_BYTES, MAX_REASON_BYTES},
    subjects::{self, api, streams as names, worker},
    worker::{Ask, Award, Heartbeat, Register, Registered, RunEventKind},
    ErrorCode, WireError, PROTOCOL_VERSION,
};

fn code(e: &anyhow::Error) -> Option<ErrorCode> {
    e.downcast_ref::<WireError>().map(|w| w.code)
}

async fn publish(grid: &Grid, worker_id: &str, award: &Award, kind: RunEventKind, dedup: &str) -> anyhow::Result<()> {
    common::publish_run_event(&jetstream::new(grid.client.clone()), worker_id, award, kind, dedup.to_string()).await
}

async fn workers(grid: &Grid, principal: &str) -> WorkerList {
    grid.request(principal, api::WORKER_LIST, &Empty { v: PROTOCOL_VERSION })
        .await
        .expect("worker.list answers")
}

/// An ask with infinite throughput, `u64::MAX` memory or a 1 MB device name is refused at
/// registration, saying which field; `worker.list` still answers everyone, and so does it
/// after heartbeats naming a huge or path-like job.
#[tokio::test]
async fn asks_with_impossible_claims_are_refused_and_worker_list_still_works() {
    let grid = Grid::start().await.unwrap();
    let role = Role::Worker { owner: "mallory".into() };
    let issued = grid.nats.authority.issue(&role, "rigger", helium_test_support::now()).unwrap();
    let nats = grid.nats.connect_issued(&issued, &role, "rigger").await.unwrap();
    let honest = Ask {
        price_per_hour: CREDIT,
        device: DeviceKind::Cpu,
        device_name: "cpu".into(),
        memory_bytes: 8 << 30,
        throughput: 1e9,
        sandbox: Vec::new(),
    };
    let rigged = [
        (Ask { throughput: f64::INFINITY, ..honest.clone() }, "throughput"),
        (Ask { throughput: f64::NAN, ..honest.clone() }, "throughput"),
        (Ask { memory_bytes: u64::MAX, ..honest.clone() }, "memory_bytes"),
        (Ask { device_name: "x".repeat(1_000_000), ..honest.clone() }, "device_name"),
    ];
    for (ask, field) in rigged {
        let register = Register {
            v: PROTOCOL_VERSION,
            owner: "mallory".into(),
            credential: issued.jwt.clone(),
            ask,
            incarnation: String::new(),
        };
        let e = worker_request::<_, Registered>(&nats, "rigger", worker::REGISTER, &register)
            .await
            .unwrap_err();
        assert_eq!(code(&e), Some(ErrorCode::BadRequest), "{e:#}");
        assert!(e.to_string().contains(field), "{field}: {e:#}");
    }
    assert!(workers(&grid, "alice").await.workers.is_empty());

    // The same worker with an honest ask is welcome; its heartbeats naming no job id are dropped.
    let _honest = ScriptedWorker::start(&grid, "honest", "owner-h", CREDIT, 36.0, 8).await.unwrap();
    let register = Register {
        v: PROTOCOL_VERSION,
        owner: "mallory".into(),
        credential: issued.jwt.clone(),
        ask: honest,
        incarnation: String::new(),
    };
    worker_request::<_, Registered>(&nats, "rigger", worker::REGISTER, &register)
        .await
        .unwrap();
    for running in ["x".repeat(900_000), "../x".into()] {
        let hb = Heartbeat {
            v: PROTOCOL_VERSION,
            running: Some(running),
            paused: None,
        };
        nats.publish(subjects::worker("rigger", worker::HEARTBEAT), encode(&hb).into())
            .await
            .unwrap();
    }
    nats.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let list = workers(&grid, "alice").await.workers;
    let ids: Vec<_> = list.iter().map(|w| (w.worker_id.as_str(), w.busy_with.as_deref())).collect();
    assert_eq!(ids, [("honest", None), ("rigger", None)]);
}

/// Bids with an ETA of 0, NaN or below zero would cost nothing and win: they are refused,
/// and the auction goes on with the honest bidder, who is paid its own price.
#[tokio::test]
async fn bids_of_zero_nan_or_negative_eta_are_refused_and_the_auction_proceeds() {
    let grid = Grid::start().await.unwrap();
    grid.grant("alice", 10 * CREDIT).await.unwrap();
    let mut liars = Vec::new();
    for (i, eta) in [0.0, f64::NAN, -36.0].into_iter().enumerate() {
        let id = format!("liar{i}");
        liars.push(ScriptedWorker::start(&grid, &id, "owner-liar", CREDIT / 10, eta, 8).await.unwrap());
    }
    let _honest = ScriptedWorker::start(&grid, "honest", "owner-honest", CREDIT, 36.0, 8).await.unwrap();
    let job = grid.submit("alice", requirements(3 * CREDIT, CREDIT), 16).await.unwrap();
    grid.wait_state("alice", &job.job_id, JobState::Completed).await.unwrap();
    let view: JobView = grid.job("alice", api::JOB_STATUS, &job.job_id).await.unwrap();
    // Alone among valid bids: paid its own cost, 1 credit/h × 36 s.
    assert_eq!((view.worker.as_deref(), view.paid), (Some("honest"), 10_000));
    assert_eq!(grid.balance("owner-liar").await.unwrap(), 0);
    assert!(liars.iter().all(|l| l.awards.lock().unwrap().is_empty()));
    grid.assert_books_balanced().await;
}

/// A run that fails with a huge reason settles with the reason truncated: the job is failed
/// (not stuck running), the worker is freed and paid nothing it did not checkpoint, the hold
/// goes back. A reason too big for the runs stream is refused by the stream at publish.
#[tokio::test]
async fn a_huge_failure_reason_is_truncated_and_the_job_still_settles() {
    let grid = Grid::start().await.unwrap();
    grid.grant("alice", CREDIT).await.unwrap();
    let w = ScriptedWorker::with_script(&grid, "w", "owner-w", CREDIT, 36.0, 8, Script::Idle)
        .await
        .unwrap();
    let job = grid.submit("alice", requirements(2 * CREDIT, CREDIT), 16).await.unwrap();
    grid.wait_state("alice", &job.job_id, JobState::Running).await.unwrap();
    let award = w.awards.lock().unwrap()[0].clone();

    let too_big = RunEventKind::Failed {
        reason: "y".repeat(900_000),
        worker_fault: false,
    };
    assert!(publish(&grid, "w", &award, too_big, "failed-too-big").await.is_err());

    let huge = RunEventKind::Failed {
        reason: format!("RuntimeError: {}", "é".repeat(30_000)),
        worker_fault: false,
    };
    publish(&grid, "w", &award, huge, "failed").await.unwrap();
    let events = grid.wait_state("alice", &job.job_id, JobState::Failed).await.unwrap();
    let view: JobView = grid.job("alice", api::JOB_STATUS, &job.job_id).await.unwrap();
    let reason = view.reason.unwrap_or_default();
    assert!(reason.len() <= MAX_REASON_BYTES, "{}", reason.len());
    assert!(reason.starts_with("RuntimeError: éé") && reason.ends_with("[truncated]"), "{reason:.40}");
    assert!(events.iter().all(|e| encode(e).len() < 2 * MAX_REASON_BYTES));
    assert_eq!(grid.balance("alice").await.unwrap(), i128::from(CREDIT));
    grid.assert_books_balanced().await;
    // The worker is free again: the next job goes to it.
    grid.grant("alice", CREDIT).await.unwrap();
    let next = grid.submit("alice", requirements(2 * CREDIT, CREDIT), 16).await.unwrap();
    grid.wait_state("alice", &next.job_id, JobState::Running).await.unwrap();
}

/// Over its open-jobs quota a researcher gets `quota_exceeded`, and submits again once one of
/// its jobs finished. Another researcher is not affected.
#[tokio::test]
async fn over_the_open_jobs_quota_a_researcher_is_refused_until_under_it() {
    let grid = Grid::start_with(|c| c.quotas.max_open_jobs = 1).await.unwrap();
    grid.grant("alice", 10 * CREDIT).await.unwrap();
    grid.grant("bob", 10 * CREDIT).await.unwrap();
    // No worker: the first job waits, open.
    let first = grid.submit("alice", requirements(2 * CREDIT, CREDIT), 16).await.unwrap();
    let e = grid.submit("alice", requirements(2 * CREDIT, CREDIT), 16).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::QuotaExceeded), "{e:#}");
    assert!(e.to_string().contains("open jobs"), "{e:#}");
    grid.submit("bob", requirements(2 * CREDIT, CREDIT), 16).await.unwrap();
    grid.job("alice", api::JOB_CANCEL, &first.job_id).await.unwrap();
    grid.submit("alice", requirements(2 * CREDIT, CREDIT), 16).await.unwrap();
}

fn submission(model_upload: String, data_upload: String, rows: u64) -> SubmitJob {
    SubmitJob {
        v: PROTOCOL_VERSION,
        model_upload,
        data_upload,
        training: training(2),
        requirements: requirements(2 * CREDIT, CREDIT),
        work: DeclaredWork {
            parameters: 1_000,
            samples: rows,
            epochs: 2,
        },
        name: None,
        state: model_state(),
    }
}

/// Over its staged-bytes quota a researcher's upload is refused `quota_exceeded`; once a job
/// claimed what was staged, it uploads again.
#[tokio::test]
async fn over_the_staged_bytes_quota_an_upload_is_refused_until_a_job_claims_the_staged() {
    let (model, data) = (fake_torchscript(), safetensors_xy(16, 16));
    let quota = (model.len() + data.len()) as u64;
    let grid = Grid::start_with(|c| c.quotas.max_staged_bytes = quota).await.unwrap();
    grid.grant("alice", 10 * CREDIT).await.unwrap();
    let m = grid.upload("alice", &model).await.unwrap();
    let d = grid.upload("alice", &data).await.unwrap();
    let e = grid.upload("alice", b"one byte too many").await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::QuotaExceeded), "{e:#}");
    assert!(e.to_string().contains("staged"), "{e:#}");
    // Another researcher has its own quota.
    grid.upload("bob", &model).await.unwrap();
    let request = submission(m.name, d.name, 16);
    let _: JobView = grid.request("alice", api::JOB_SUBMIT, &request).await.unwrap();
    grid.upload("alice", &model).await.unwrap();
}

/// An award's worker may store a bounded number of checkpoints; the next is refused
/// `quota_exceeded` at begin, and the run still completes with its result.
#[tokio::test]
async fn a_worker_over_the_checkpoints_per_award_quota_is_refused() {
    let grid = Grid::start_with(|c| c.quotas.max_checkpoints_per_award = 2).await.unwrap();
    grid.grant("alice", CREDIT).await.unwrap();
    let w = ScriptedWorker::with_script(&grid, "w", "owner-w", CREDIT, 36.0, 8, Script::Idle)
        .await
        .unwrap();
    // 32 rows in batches of 8 for 2 epochs: 8 steps, so checkpoints 1-7 are all in range.
    let job = grid.submit("alice", requirements(2 * CREDIT, CREDIT), 32).await.unwrap();
    grid.wait_state("alice", &job.job_id, JobState::Running).await.unwrap();
    let award = w.awards.lock().unwrap()[0].clone();
    let id = &award.job_id;
    let as_w = grid.as_worker("w", "owner-w").await.unwrap();
    for step in 1..=2 {
        upload(&as_w, "w", id, &format!("checkpoints/{step}"), checkpoint_file(step))
            .await
            .unwrap();
    }
    // `Stored` reaches the supervisor just after the commit's reply.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let e = upload(&as_w, "w", id, "checkpoints/3", checkpoint_file(3)).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::QuotaExceeded), "{e:#}");
    assert!(e.to_string().contains("checkpoints"), "{e:#}");
    let result = upload(&as_w, "w", id, "result", result_file()).await.unwrap();
    publish(&grid, "w", &award, RunEventKind::Completed { result }, "completed").await.unwrap();
    grid.wait_state("alice", id, JobState::Completed).await.unwrap();
    grid.assert_books_balanced().await;
}

/// Every stream and the bucket is bounded as documented, also when an older broker created
/// them without limits; the ledger journal never discards (it refuses when full).
#[tokio::test]
async fn streams_and_the_job_bucket_are_bounded_and_the_journal_never_discards() {
    let server = helium_test_support::NatsServer::start().unwrap();
    let js = jetstream::new(server.connect().await.unwrap());
    // What an older broker made: no limits at all.
    for (name, subject) in [(names::EVENTS, names::EVENTS_SUBJECTS), (names::LEDGER, names::LEDGER_SUBJECT)] {
        js.create_stream(stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let limits = Default::default();
    streams::ensure(&js, 1, &limits).await.unwrap();
    streams::ensure(&js, 1, &limits).await.unwrap(); // idempotent
    let config = |name: &'static str| {
        let js = js.clone();
        async move { js.get_stream(name).await.unwrap().info().await.unwrap().config.clone() }
    };
    let events = config(names::EVENTS).await;
    assert_eq!(events.max_messages_per_subject, MAX_EVENTS_PER_JOB);
    assert_eq!(events.discard, stream::DiscardPolicy::Old);
    assert!(events.max_bytes > 0 && events.max_message_size > 0 && !events.max_age.is_zero());
    let runs = config(names::RUNS).await;
    assert!(runs.max_bytes > 0 && runs.max_messages_per_subject > 0 && !runs.max_age.is_zero());
    let ledger = config(names::LEDGER).await;
    assert_eq!(ledger.discard, stream::DiscardPolicy::New);
    assert!(ledger.max_bytes > 0 && ledger.max_age.is_zero() && ledger.max_messages_per_subject <= 0);
    assert!(ledger.deny_delete && ledger.deny_purge);
    let jobs = config("KV_helium_jobs").await;
    assert_eq!(jobs.max_message_size, MAX_JOB_RECORD_BYTES);
    assert!(jobs.max_bytes > 0);
}
