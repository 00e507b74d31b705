//! A worker that vanishes mid-run: it is paid for the steps up to its last verified
//! checkpoint only, and the job resumes from that checkpoint on another worker, which is sold
//! only the remaining epochs. Progress without a checkpoint, or a checkpoint never uploaded,
//! earns nothing.

mod common;

use common::{requirements, Grid, Script, ScriptedWorker, CREDIT};
use futures::StreamExt;
use helium_protocol::{
    api::{JobEvent, JobEventKind, JobView},
    decode,
    job::JobState,
    subjects::{self, api},
    worker::Settled,
};

#[tokio::test]
async fn a_lost_worker_is_paid_its_checkpoints_and_the_job_resumes_elsewhere() {
    // 16 rows in batches of 8: 2 steps per epoch, 4 in the job; step 2 ends epoch 1.
    let Vanished {
        grid,
        job_id,
        events,
        worker: flaky,
        ..
    } = vanishing_worker(Script::CheckpointThenVanish { step: 2 }).await;
    assert!(
        format!("{:?}", events.last()).contains("resuming from epoch 1"),
        "{events:?}"
    );
    // Paid for 1 of its 2 epochs; the rest of its hold went back.
    assert_eq!(grid.balance("owner-flaky").await.unwrap(), 5_000);
    assert_eq!(grid.balance("alice").await.unwrap(), i128::from(CREDIT - 5_000));

    // `steady` joins: 2.0/h × 36 s = 20 000 µ, for the one remaining epoch.
    let steady = ScriptedWorker::start(&grid, "steady", "owner-steady", 2 * CREDIT, 36.0, 8)
        .await
        .unwrap();
    grid.wait_state("alice", &job_id, JobState::Completed).await.unwrap();

    let award = steady.awards.lock().unwrap()[0].clone();
    let first = flaky.awards.lock().unwrap()[0].clone();
    assert_eq!(
        (first.work.epochs, award.work.epochs),
        (2, 1),
        "only the remaining epoch is sold"
    );
    let resume = award.resume.expect("the second award resumes from the checkpoint");
    assert_eq!(resume.size, common::checkpoint_file(1).len() as u64);
    let view: JobView = grid.job("alice", api::JOB_STATUS, &job_id).await.unwrap();
    assert_eq!(
        (view.worker.as_deref(), view.paid, view.epochs_done),
        (Some("steady"), 25_000, 2)
    );
    assert_eq!(grid.balance("owner-steady").await.unwrap(), 20_000);
    assert_eq!(grid.balance("alice").await.unwrap(), i128::from(CREDIT - 25_000));
    grid.assert_books_balanced().await;
}

#[tokio::test]
async fn a_model_bigger_than_declared_fails_and_costs_nothing() {
    let grid = Grid::start().await.unwrap();
    grid.grant("alice", CREDIT).await.unwrap();
    let _w = ScriptedWorker::with_script(&grid, "w", "owner-w", CREDIT, 36.0, 8, Script::UndeclaredBigModel)
        .await
        .unwrap();
    let job = grid
        .submit("alice", requirements(5 * CREDIT, CREDIT), 16)
        .await
        .unwrap();
    let events = grid.wait_state("alice", &job.job_id, JobState::Failed).await.unwrap();
    let reason = format!("{:?}", events.last().unwrap());
    assert!(
        reason.contains("10000 parameters but the job declared 1000"),
        "{reason}"
    );
    assert_eq!(grid.balance("alice").await.unwrap(), i128::from(CREDIT));
    assert_eq!(grid.balance("owner-w").await.unwrap(), 0);
    grid.assert_books_balanced().await;
}

#[tokio::test]
async fn a_worker_that_fails_through_its_own_fault_hands_the_job_on() {
    let grid = Grid::start().await.unwrap();
    grid.grant("alice", CREDIT).await.unwrap();
    // `broken` is cheaper and wins first; once it failed the job it is not invited again.
    let _broken = ScriptedWorker::with_script(&grid, "broken", "owner-broken", CREDIT, 36.0, 8, Script::WorkerFault)
        .await
        .unwrap();
    let fine = ScriptedWorker::start(&grid, "fine", "owner-fine", 2 * CREDIT, 36.0, 8)
        .await
        .unwrap();
    let job = grid
        .submit("alice", requirements(5 * CREDIT, CREDIT), 16)
        .await
        .unwrap();
    let events = grid
        .wait_state("alice", &job.job_id, JobState::Completed)
        .await
        .unwrap();
    assert!(
        format!("{events:?}").contains("worker broken failed (disk full)"),
        "{events:?}"
    );
    assert_eq!(fine.awards.lock().unwrap().len(), 1);
    assert_eq!(grid.balance("owner-broken").await.unwrap(), 0, "no checkpoint, no pay");
    // `fine` alone qualifies in the second auction: its own cost, 2.0/h × 36 s.
    assert_eq!(grid.balance("owner-fine").await.unwrap(), 20_000);
    assert_eq!(grid.balance("alice").await.unwrap(), i128::from(CREDIT - 20_000));
    grid.assert_books_balanced().await;
}

/// A job whose only worker vanished: what happened up to its loss.
struct Vanished {
    grid: Grid,
    job_id: String,
    /// The job's events up to the `queued … lost` one.
    events: Vec<JobEvent>,
    view: JobView,
    /// The owner's balance once the award was settled.
    paid: i128,
    /// What the broker told the worker it earned.
    notice: Settled,
    worker: ScriptedWorker,
}

/// Starts `flaky` alone (1.0/h × 36 s = 10 000 µ for the job's 4 steps) with `script`, submits
/// a 16-row job and waits until the worker is lost.
async fn vanishing_worker(script: Script) -> Vanished {
    let grid = Grid::start().await.unwrap();
    grid.grant("alice", CREDIT).await.unwrap();
    let mut notices = grid
        .client
        .subscribe(subjects::dispatch("flaky", subjects::dispatch::SETTLED))
        .await
        .unwrap();
    let worker = ScriptedWorker::with_script(&grid, "flaky", "owner-flaky", CREDIT, 36.0, 8, script)
        .await
        .unwrap();
    let job = grid
        .submit("alice", requirements(5 * CREDIT, CREDIT), 16)
        .await
        .unwrap();
    let lost = |k: &JobEventKind| matches!(k, JobEventKind::State { state: JobState::Queued, reason: Some(r) } if r.contains("lost"));
    let events = grid.wait_event("alice", &job.job_id, lost).await.unwrap();
    let paid = grid.balance("owner-flaky").await.unwrap();
    let view: JobView = grid.job("alice", api::JOB_STATUS, &job.job_id).await.unwrap();
    let notice = tokio::time::timeout(std::time::Duration::from_secs(30), notices.next())
        .await
        .expect("a settlement notice")
        .expect("the subscription is open");
    let notice: Settled = decode(&notice.payload).unwrap();
    assert_eq!(
        (notice.job_id.as_str(), notice.award_id.as_str()),
        (job.job_id.as_str(), format!("{}-1", job.job_id).as_str())
    );
    Vanished {
        grid,
        job_id: job.job_id,
        events,
        view,
        paid,
        notice,
        worker,
    }
}

#[tokio::test]
async fn a_mid_epoch_checkpoint_pays_its_steps_and_the_job_resumes_from_its_epoch() {
    let Vanished {
        grid,
        view,
        paid,
        notice,
        ..
    } = vanishing_worker(Script::CheckpointThenVanish { step: 3 }).await;
    assert_eq!(paid, 7_500, "3 of the award's 4 steps");
    // The worker is told what its owner earned, as the ledger has it.
    assert_eq!(
        (notice.paid, notice.refunded, notice.paid_steps, notice.steps),
        (7_500, 2_500, 3, 4)
    );
    assert_eq!((view.paid, view.epochs_done), (7_500, 1));
    assert_eq!(grid.balance("alice").await.unwrap(), i128::from(CREDIT - 7_500));
    grid.assert_books_balanced().await;
}

#[tokio::test]
async fn progress_without_a_checkpoint_earns_nothing() {
    let Vanished {
        grid,
        view,
        paid,
        notice,
        ..
    } = vanishing_worker(Script::ProgressThenVanish).await;
    assert_eq!((notice.paid, notice.paid_steps), (0, 0));
    assert_eq!(paid, 0, "claimed every epoch, checkpointed none");
    assert_eq!((view.paid, view.epochs_done), (0, 0), "the job starts over");
    assert_eq!(grid.balance("alice").await.unwrap(), i128::from(CREDIT));
    grid.assert_books_balanced().await;
}

#[tokio::test]
async fn a_checkpoint_never_uploaded_earns_nothing() {
    let Vanished { grid, view, paid, .. } = vanishing_worker(Script::UnverifiedCheckpointThenVanish).await;
    assert_eq!(paid, 0);
    assert_eq!(view.epochs_done, 0);
    assert_eq!(grid.balance("alice").await.unwrap(), i128::from(CREDIT));
    grid.assert_books_balanced().await;
}

#[tokio::test]
async fn a_checkpoint_whose_event_arrives_after_the_next_upload_still_counts() {
    let Vanished { grid, view, paid, .. } = vanishing_worker(Script::OvertakenCheckpointThenVanish).await;
    assert_eq!(paid, 2_500, "step 1 of 4 was verified and reported");
    assert_eq!(view.epochs_done, 0);
    grid.assert_books_balanced().await;
}
