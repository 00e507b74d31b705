//! Unit tests of the pure core: one rule per test, driven through `Job::step` alone.

use helium_protocol::{
    artifacts::ArtifactInfo,
    worker::{RunEvent, RunEventKind},
    PROTOCOL_VERSION,
};

use super::*;
use crate::auction::{decide::Winner, Outcome};
use crate::sim::fixture;

const PRICE: u64 = 1_000;

/// 2 epochs of 100 samples at batch 10: 20 steps.
fn job() -> Job {
    Job::new(fixture::record("j", "alice", 2, 100, 1_000_000, 0), Config { max_checkpoints_per_award: 100 })
}

fn won(eta_secs: f64) -> Input {
    Input::AuctionClosed(Outcome::Won {
        winner: Winner {
            worker_id: "w1".into(),
            owner: "bob".into(),
            price: PRICE,
            cost: PRICE,
            eta_secs,
            // 1,000 parameters × batch 10 per step: its 20 steps take `5 × eta_secs` at this pace.
            throughput: 40_000.0 / eta_secs,
        },
        bids: 1,
    })
}

fn event(kind: RunEventKind) -> Input {
    Input::Run {
        worker_id: "w1".into(),
        event: RunEvent {
            v: PROTOCOL_VERSION,
            job_id: "j".into(),
            award_id: "j-1".into(),
            kind,
        },
    }
}

fn stored(job: &mut Job, name: &str, now: u64) -> ArtifactInfo {
    let info = ArtifactInfo {
        name: name.into(),
        size: 8,
        sha256: format!("{:064}", name.len()),
    };
    let step = job.step(
        Input::Stored {
            worker_id: "w1".into(),
            name: name.into(),
            info: info.clone(),
        }, Now::at(now));
    assert_eq!(step.answer, Answer::Ack(Ok(())));
    info
}

/// A job whose award (ETA `eta_secs`) was held at t = 0 and accepted, and whose run started.
fn running(eta_secs: f64) -> Job {
    let mut job = job();
    job.step(Input::Start { restarted: false }, Now::at(0));
    job.step(won(eta_secs), Now::at(0));
    job.step(
        Input::HoldDone {
            n: 1,
            outcome: TransferOutcome::Applied,
        }, Now::at(0));
    job.step(
        Input::AwardAnswered {
            award_id: "j-1".into(),
            answer: Ok(AwardAck {
                accepted: true,
                reason: None,
            }),
        }, Now::at(0));
    job.step(
        event(RunEventKind::Started {
            device: "cpu".into(),
            parameters: None,
        }), Now::at(0));
    assert_eq!(job.state(), JobState::Running);
    job
}

fn checkpoint(job: &mut Job, step: u64, now: u64) -> Step {
    let name = format!("checkpoints/{step}");
    let info = stored(job, &name, now);
    job.step(
        event(RunEventKind::Checkpoint {
            step,
            epoch: (step / 10) as u32,
            checkpoint: info,
        }), Now::at(now))
}

fn settle_transfers(step: &Step) -> Vec<Transfer> {
    step.effects
        .iter()
        .find_map(|e| match e {
            Effect::Settle { transfers, .. } => Some(transfers.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn an_award_is_recorded_before_its_hold_and_sent_only_once_held() {
    let mut job = job();
    let start = job.step(Input::Start { restarted: false }, Now::at(0));
    assert!(start.effects.iter().any(|e| matches!(e, Effect::Auction { .. })));
    let step = job.step(won(10.0), Now::at(0));
    assert!(step.persist, "the award is persisted with the step that asks for its hold");
    let award = job.record.award.as_ref().unwrap();
    assert!(!award.held && award.n == 1);
    assert!(matches!(&step.effects[..], [.., Effect::Hold { transfer, .. }] if transfer.id == "hold.j.1"));
    assert!(!step.effects.iter().any(|e| matches!(e, Effect::SendAward { .. })));
    // Unknown outcome: asked again, same id, at the next tick; sent only once applied.
    job.step(Input::HoldDone { n: 1, outcome: TransferOutcome::Unknown("timeout".into()) }, Now::at(10));
    let tick = job.step(Input::Tick, Now::at(1_000));
    assert!(tick.effects.iter().any(|e| matches!(e, Effect::Hold { transfer, .. } if transfer.id == "hold.j.1")));
    let held = job.step(Input::HoldDone { n: 1, outcome: TransferOutcome::Applied }, Now::at(1_100));
    assert!(held.effects.iter().any(|e| matches!(e, Effect::SendAward { worker_id, .. } if worker_id == "w1")));
}

#[test]
fn a_settlement_is_persisted_before_its_transfers_and_made_again_after_a_restart() {
    let mut job = running(10.0);
    let step = checkpoint(&mut job, 10, 5_000);
    assert_eq!(step.answer, Answer::Ack(Ok(())));
    let lost = job.step(Input::WorkerLost { worker_id: "w1".into() }, Now::at(6_000));
    assert!(lost.persist);
    assert_eq!(job.state(), JobState::Queued);
    assert_eq!(job.record.award.as_ref().unwrap().settle_steps, Some(10));
    assert_eq!(job.record.view.paid, PRICE / 2, "half the steps were checkpointed");
    let transfers = settle_transfers(&lost);
    let ids: Vec<_> = transfers.iter().map(|t| (t.id.as_str(), t.amount)).collect();
    assert_eq!(ids, [("pay.j.1", PRICE / 2), ("refund.j.1", PRICE / 2)]);
    // The broker dies before the transfers are known: the restarted job makes the same ones.
    let mut again = Job::new(job.record.clone(), job.config);
    let restart = again.step(Input::Start { restarted: true }, Now::at(7_000));
    assert_eq!(settle_transfers(&restart), transfers);
    // Not auctioned while its money moves; auctioned as soon as it has moved.
    assert!(!restart.effects.iter().any(|e| matches!(e, Effect::Auction { .. })));
    let done = again.step(Input::SettleDone { n: 1, outcome: TransferOutcome::Applied }, Now::at(7_100));
    assert!(again.record.award.as_ref().unwrap().settled);
    assert!(done.effects.iter().any(|e| matches!(e, Effect::Auction { .. })));
}

#[test]
fn a_terminal_job_never_moves() {
    assert!(!can_move(JobState::Queued, JobState::Completed));
    assert!(!can_move(JobState::Queued, JobState::Running));
    let mut job = running(10.0);
    job.step(Input::Cancel { principal: "alice".into() }, Now::at(1_000));
    assert_eq!(job.state(), JobState::Cancelled);
    let info = ArtifactInfo { name: "result".into(), size: 8, sha256: "0".repeat(64) };
    for input in [
        event(RunEventKind::Completed { result: info }),
        Input::WorkerLost { worker_id: "w1".into() },
        Input::Capacity,
        won(10.0),
        Input::Tick,
    ] {
        job.step(input, Now::at(2_000));
        assert_eq!(job.state(), JobState::Cancelled);
    }
    let again = job.step(Input::Cancel { principal: "alice".into() }, Now::at(3_000));
    assert!(matches!(again.answer, Answer::View(Err(e)) if e.code == ErrorCode::Conflict));
}

#[test]
fn a_checkpoint_ahead_of_what_the_time_allows_is_refused() {
    // The ask's pace is 20 steps in 500 s: after 1 s a worker may plausibly have done 100 × 0.04.
    let mut job = running(100.0);
    let ahead = checkpoint(&mut job, 15, 1_000);
    assert!(matches!(&ahead.answer, Answer::Ack(Err(e)) if e.message.contains("ahead")), "{ahead:?}");
    assert!(job.record.checkpoint.is_none());
    // The same step, later, counts.
    let later = checkpoint(&mut job, 15, 8_000);
    assert_eq!(later.answer, Answer::Ack(Ok(())));
    assert_eq!(job.record.checkpoint.as_ref().map(|c| c.step), Some(15));
}

#[test]
fn a_result_in_a_tenth_of_the_estimate_is_not_believed_or_paid() {
    let mut job = running(100.0);
    let result = stored(&mut job, "result", 1_000);
    let step = job.step(event(RunEventKind::Completed { result }), Now::at(1_000));
    assert_eq!(step.answer, Answer::Ack(Ok(())));
    assert_eq!(job.state(), JobState::Queued);
    assert_eq!(job.record.reason.as_ref().map(Reason::code), Some("worker_failed"));
    assert_eq!(job.record.excluded_workers, ["w1"]);
    assert_eq!(settle_transfers(&step).iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["refund.j.1"]);
}

#[test]
fn a_completed_run_pays_the_award_in_full_once() {
    let mut job = running(10.0);
    let result = stored(&mut job, "result", 20_000);
    let step = job.step(event(RunEventKind::Completed { result: result.clone() }), Now::at(20_000));
    assert_eq!(job.state(), JobState::Completed);
    let transfers = settle_transfers(&step);
    assert_eq!(transfers.iter().map(|t| (t.id.as_str(), t.amount)).collect::<Vec<_>>(), [("pay.j.1", PRICE)]);
    // Redelivered after a crash: acknowledged, nothing more happens.
    let again = job.step(event(RunEventKind::Completed { result }), Now::at(21_000));
    assert_eq!(again.answer, Answer::Ack(Ok(())));
    assert!(settle_transfers(&again).is_empty());
}

#[test]
fn uploads_after_the_award_ended_are_refused_and_superseded_checkpoints_deleted() {
    let mut job = running(10.0);
    checkpoint(&mut job, 5, 5_000);
    let second = checkpoint(&mut job, 10, 6_000);
    assert!(second.effects.contains(&Effect::Delete { key: helium_protocol::subjects::keys::checkpoint("j", 5) }));
    job.step(Input::WorkerLost { worker_id: "w1".into() }, Now::at(7_000));
    let late = job.step(
        Input::Stored {
            worker_id: "w1".into(),
            name: "checkpoints/15".into(),
            info: ArtifactInfo { name: "checkpoints/15".into(), size: 8, sha256: "0".repeat(64) },
        }, Now::at(8_000));
    assert!(matches!(late.answer, Answer::Ack(Err(e)) if e.code == ErrorCode::Unauthorized));
}

#[test]
fn a_running_job_past_its_deadline_expires_and_settles_its_checkpoints() {
    let mut job = running(10.0);
    job.record.requirements.deadline_ms = 9_000;
    checkpoint(&mut job, 10, 5_000);
    let tick = job.step(Input::Tick, Now::at(9_001));
    assert_eq!(job.state(), JobState::Expired);
    assert!(tick.effects.iter().any(|e| matches!(e, Effect::SendCancel { worker_id, .. } if worker_id == "w1")));
    assert_eq!(settle_transfers(&tick).first().map(|t| t.amount), Some(PRICE / 2));
}

#[test]
fn a_run_its_worker_stopped_at_the_deadline_expires_rather_than_fails() {
    let failed = |job: &mut Job, now: u64| {
        job.step(
            event(RunEventKind::Failed {
                reason: "the trainer exceeded its wall-clock limit (the job's deadline)".into(),
                worker_fault: false,
            }),
            Now::at(now),
        )
    };
    let mut job = running(10.0);
    job.record.requirements.deadline_ms = 9_000;
    checkpoint(&mut job, 10, 5_000);
    let step = failed(&mut job, 9_000);
    assert_eq!(job.state(), JobState::Expired);
    assert_eq!(job.record.reason.as_ref().map(Reason::code), Some("deadline_passed"));
    assert_eq!(settle_transfers(&step).first().map(|t| t.amount), Some(PRICE / 2));

    // Before the deadline the same event is the job's failure.
    let mut early = running(10.0);
    early.record.requirements.deadline_ms = 9_000;
    failed(&mut early, 8_999);
    assert_eq!(early.state(), JobState::Failed);
}
