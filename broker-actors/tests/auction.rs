//! The reverse auction against a real nats-server, the real broker and scripted bidders:
//! who wins, what is paid, and what happens when nobody qualifies.

mod common;

use common::{requirements, Grid, Script, ScriptedWorker, CREDIT};
use helium_protocol::{
    api::{JobEventKind, JobView},
    job::{DeviceKind, JobState},
    subjects::api,
    worker::{Ask, Bid},
};

async fn status(grid: &Grid, principal: &str, job_id: &str) -> JobView {
    grid.job(principal, api::JOB_STATUS, job_id).await.unwrap()
}

#[tokio::test]
async fn lowest_cost_qualifying_bid_wins_and_is_paid_the_second_price() {
    let grid = Grid::start().await.unwrap();
    grid.grant("alice", 10 * CREDIT).await.unwrap();
    // Estimated costs: a = 1.0/h × 36 s = 10 000 µ; b = 2.0/h × 36 s = 20 000 µ;
    // c = 0.5/h × 108 s = 15 000 µ; d is cheapest (0.1/h × 36 s = 1 000 µ) but over max price.
    let _a = ScriptedWorker::start(&grid, "a", "owner-a", CREDIT, 36.0, 8)
        .await
        .unwrap();
    let _b = ScriptedWorker::start(&grid, "b", "owner-b", 2 * CREDIT, 36.0, 8)
        .await
        .unwrap();
    let _c = ScriptedWorker::start(&grid, "c", "owner-c", CREDIT / 2, 108.0, 8)
        .await
        .unwrap();
    let _d = ScriptedWorker::start(&grid, "d", "owner-d", 100 * CREDIT, 0.36, 8)
        .await
        .unwrap();

    let job = grid
        .submit("alice", requirements(3 * CREDIT, CREDIT), 16)
        .await
        .unwrap();
    let events = grid
        .wait_state("alice", &job.job_id, JobState::Completed)
        .await
        .unwrap();

    let awarded = events.iter().find_map(|e| match &e.kind {
        JobEventKind::Awarded { worker, price, .. } => Some((worker.clone(), *price)),
        _ => None,
    });
    assert_eq!(awarded, Some(("a".to_string(), 15_000)), "events: {events:?}");
    let view = status(&grid, "alice", &job.job_id).await;
    assert_eq!((view.worker.as_deref(), view.paid), (Some("a"), 15_000));
    assert_eq!(grid.balance("alice").await.unwrap(), i128::from(10 * CREDIT - 15_000));
    assert_eq!(grid.balance("owner-a").await.unwrap(), 15_000);
    for loser in ["owner-b", "owner-c", "owner-d"] {
        assert_eq!(grid.balance(loser).await.unwrap(), 0, "{loser}");
    }
    grid.assert_books_balanced().await;
}
#[tokio::test]
async fn a_lone_bid_is_paid_its_own_price() {
    let grid = Grid::start().await.unwrap();
    grid.grant("alice", CREDIT).await.unwrap();
    let _a = ScriptedWorker::start(&grid, "solo", "owner-solo", CREDIT, 36.0, 8)
        .await
        .unwrap();
    let job = grid
        .submit("alice", requirements(2 * CREDIT, CREDIT), 16)
        .await
        .unwrap();
    grid.wait_state("alice", &job.job_id, JobState::Completed)
        .await
        .unwrap();
    assert_eq!(status(&grid, "alice", &job.job_id).await.paid, 10_000);
    assert_eq!(grid.balance("owner-solo").await.unwrap(), 10_000);
    assert_eq!(grid.balance("alice").await.unwrap(), i128::from(CREDIT - 10_000));
    grid.assert_books_balanced().await;
}
#[tokio::test]
async fn no_qualifying_worker_waits_with_a_reason_then_runs_when_one_joins() {
    let grid = Grid::start().await.unwrap();
    grid.grant("alice", CREDIT).await.unwrap();
    let _small = ScriptedWorker::start(&grid, "small", "owner-small", CREDIT, 36.0, 8)
        .await
        .unwrap();
    let mut req = requirements(2 * CREDIT, CREDIT);
    req.min_memory_bytes = 16 << 30;
    let job = grid.submit("alice", req, 16).await.unwrap();
    let events = grid
        .wait_event("alice", &job.job_id, |k| {
            matches!(
                k,
                JobEventKind::State {
                    state: JobState::Queued,
                    reason: Some(_)
                }
            )
        })
        .await
        .unwrap();
    let reason = match &events.last().unwrap().kind {
        JobEventKind::State { reason: Some(r), .. } => r.clone(),
        other => panic!("{other:?}"),
    };
    assert!(reason.contains("16.0 GiB"), "{reason}");
    assert_eq!(status(&grid, "alice", &job.job_id).await.state, JobState::Queued);
    assert_eq!(
        grid.balance("alice").await.unwrap(),
        i128::from(CREDIT),
        "nothing is held while waiting"
    );

    let _big = ScriptedWorker::start(&grid, "big", "owner-big", CREDIT, 36.0, 32)
        .await
        .unwrap();
    grid.wait_state("alice", &job.job_id, JobState::Completed)
        .await
        .unwrap();
    let view = status(&grid, "alice", &job.job_id).await;
    assert_eq!(view.worker.as_deref(), Some("big"));
    assert_eq!(grid.balance("owner-big").await.unwrap(), 10_000);
    grid.assert_books_balanced().await;
}
#[tokio::test]
async fn a_budget_below_every_bid_waits_and_moves_no_credits() {
    let grid = Grid::start().await.unwrap();
    grid.grant("alice", CREDIT).await.unwrap();
    let _a = ScriptedWorker::start(&grid, "a", "owner-a", CREDIT, 36.0, 8)
        .await
        .unwrap();
    let job = grid.submit("alice", requirements(2 * CREDIT, 5_000), 16).await.unwrap();
    let events = grid
        .wait_event("alice", &job.job_id, |k| {
            matches!(
                k,
                JobEventKind::State {
                    state: JobState::Queued,
                    reason: Some(_)
                }
            )
        })
        .await
        .unwrap();
    assert!(format!("{:?}", events.last().unwrap()).contains("budget"));
    let cancelled: JobView = grid.job("alice", api::JOB_CANCEL, &job.job_id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(grid.balance("alice").await.unwrap(), i128::from(CREDIT));
    assert_eq!(grid.balance("owner-a").await.unwrap(), 0);
    // Another principal cannot see the job.
    let other = grid.job("mallory", api::JOB_STATUS, &job.job_id).await;
    assert!(other.unwrap_err().to_string().contains("NotFound"));
    grid.assert_books_balanced().await;
}
#[tokio::test]
async fn a_restarted_broker_remembers_jobs_and_balances() {
    let mut grid = Grid::start().await.unwrap();
    grid.grant("alice", CREDIT).await.unwrap();
    let _a = ScriptedWorker::start(&grid, "a", "owner-a", CREDIT, 36.0, 8)
        .await
        .unwrap();
    let job = grid
        .submit("alice", requirements(2 * CREDIT, CREDIT), 16)
        .await
        .unwrap();
    grid.wait_state("alice", &job.job_id, JobState::Completed)
        .await
        .unwrap();
    let before = status(&grid, "alice", &job.job_id).await;

    grid.broker.take().unwrap().stop().await;
    grid.broker = Some(helium_broker_actors::Broker::start(&grid.config).await.unwrap());

    assert_eq!(status(&grid, "alice", &job.job_id).await, before);
    assert_eq!(grid.balance("alice").await.unwrap(), i128::from(CREDIT - 10_000));
    assert_eq!(grid.balance("owner-a").await.unwrap(), 10_000);
    grid.assert_books_balanced().await;
}
#[tokio::test]
async fn a_budget_the_account_cannot_cover_is_refused_at_submit() {
    let grid = Grid::start().await.unwrap();
    grid.grant("alice", CREDIT).await.unwrap();
    let refused = grid
        .submit("alice", requirements(2 * CREDIT, 2 * CREDIT), 16)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("InsufficientFunds"), "{refused}");
    assert!(grid
        .submit("bob", requirements(2 * CREDIT, 1), 16)
        .await
        .unwrap_err()
        .to_string()
        .contains("bob holds 0"));
    assert_eq!(grid.balance("alice").await.unwrap(), i128::from(CREDIT));
    grid.assert_books_balanced().await;
}

/// The awarded worker and its contract price, from the job's events.
fn awarded(events: &[helium_protocol::api::JobEvent]) -> Option<(String, u64)> {
    events.iter().find_map(|e| match &e.kind {
        JobEventKind::Awarded { worker, price, .. } => Some((worker.clone(), *price)),
        _ => None,
    })
}

/// The liar's ask advertises 1,000 parameter-samples/s: the job's 32,000 take it 32 s, so no
/// bid of it may say less than 5 + 32 / 4 = 13 s. Its 6 s bid (cost 1,667 µ) would beat the
/// honest 36 s (10,000 µ); refused, it neither wins nor sets the price.
#[tokio::test]
async fn a_bid_faster_than_its_own_ask_allows_is_refused() {
    let grid = Grid::start().await.unwrap();
    grid.grant("alice", CREDIT).await.unwrap();
    let ask = Ask {
        price_per_hour: CREDIT,
        device: DeviceKind::Cpu,
        device_name: "cpu".into(),
        memory_bytes: 8 << 30,
        throughput: 1e3,
        sandbox: Vec::new(),
    };
    let bid = Bid {
        price_per_hour: CREDIT,
        eta_secs: 6.0,
    };
    let liar = ScriptedWorker::with_ask(&grid, "liar", "owner-liar", ask, bid, Script::Complete)
        .await
        .unwrap();
    let _honest = ScriptedWorker::start(&grid, "honest", "owner-honest", CREDIT, 36.0, 8)
        .await
        .unwrap();
    let job = grid
        .submit("alice", requirements(2 * CREDIT, CREDIT), 16)
        .await
        .unwrap();
    let events = grid
        .wait_state("alice", &job.job_id, JobState::Completed)
        .await
        .unwrap();
    assert_eq!(
        awarded(&events),
        Some(("honest".to_string(), 10_000)),
        "events: {events:?}"
    );
    assert_eq!(liar.invites.lock().unwrap().len(), 1, "the liar was invited and bid");
    assert!(liar.awards.lock().unwrap().is_empty());
    assert_eq!(grid.balance("owner-liar").await.unwrap(), 0);
    grid.assert_books_balanced().await;
}

/// Owner A runs a1 (cost 10,000 µ) and a2, which bids the whole budget (100,000 µ); owner B's
/// b bids over the budget. a1 wins and, since no other owner qualified, is paid its own cost:
/// a2 cannot set its price.
#[tokio::test]
async fn a_second_worker_of_the_winners_owner_does_not_set_the_price() {
    let grid = Grid::start().await.unwrap();
    grid.grant("alice", CREDIT).await.unwrap();
    let budget = CREDIT / 10;
    let _a1 = ScriptedWorker::start(&grid, "a1", "owner-a", CREDIT, 36.0, 8)
        .await
        .unwrap();
    let _a2 = ScriptedWorker::start(&grid, "a2", "owner-a", 10 * CREDIT, 36.0, 8)
        .await
        .unwrap();
    let _b = ScriptedWorker::start(&grid, "b", "owner-b", 20 * CREDIT, 36.0, 8)
        .await
        .unwrap();
    let job = grid
        .submit("alice", requirements(20 * CREDIT, budget), 16)
        .await
        .unwrap();
    let events = grid
        .wait_state("alice", &job.job_id, JobState::Completed)
        .await
        .unwrap();
    assert_eq!(awarded(&events), Some(("a1".to_string(), 10_000)), "events: {events:?}");
    assert_eq!(grid.balance("owner-a").await.unwrap(), 10_000);
    assert_eq!(grid.balance("alice").await.unwrap(), i128::from(CREDIT - 10_000));
    grid.assert_books_balanced().await;
}

/// What an invitee reads: the job, the declared work, the device and memory it needs; never
/// the budget, the maximum price or the deadline, at any depth of the message.
#[tokio::test]
async fn the_invitation_names_no_budget_price_or_deadline() {
    let grid = Grid::start().await.unwrap();
    grid.grant("alice", CREDIT).await.unwrap();
    let worker = ScriptedWorker::start(&grid, "w", "owner-w", CREDIT, 36.0, 8)
        .await
        .unwrap();
    let mut req = requirements(2 * CREDIT, CREDIT / 2);
    req.deadline_ms = helium_broker_actors::now_ms() + 3_600_000;
    req.min_memory_bytes = 4 << 30;
    let job = grid.submit("alice", req, 16).await.unwrap();
    grid.wait_state("alice", &job.job_id, JobState::Completed)
        .await
        .unwrap();
    let invites = worker.invites.lock().unwrap().clone();
    assert_eq!(invites.len(), 1);
    let invite: serde_json::Value = rmp_serde::from_slice(&invites[0]).unwrap();
    let keys = |v: &serde_json::Value| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&invite), ["auction_id", "job_id", "requirements", "v", "work"]);
    assert_eq!(keys(&invite["requirements"]), ["device", "min_memory_bytes"]);
    assert_eq!(invite["requirements"]["min_memory_bytes"], 4u64 << 30);
    assert_eq!(invite["work"]["samples"], 16);
    assert_eq!(invite["job_id"], job.job_id.as_str());
}
