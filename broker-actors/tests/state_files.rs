//! A worker's result or checkpoint must be a safetensors state file matching the job's model,
//! as the researcher's client declared it at submit (`protocol::state`): anything else is
//! refused at commit with `invalid_state`, is never stored or counted, and the job does not
//! complete with it.

mod common;

use async_nats::jetstream;
use common::{checkpoint_file, requirements, result_file, safetensors, upload, Grid, Script, ScriptedWorker, CREDIT};
use helium_protocol::{
    api::JobView,
    artifacts::ArtifactInfo,
    job::JobState,
    subjects::api,
    worker::{Award, RunEventKind},
    ErrorCode, WireError,
};

fn refused_code(e: &anyhow::Error) -> Option<ErrorCode> {
    e.downcast_ref::<WireError>().map(|w| w.code)
}

async fn publish(grid: &Grid, award: &Award, kind: RunEventKind, dedup: &str) {
    common::publish_run_event(&jetstream::new(grid.client.clone()), "w", award, kind, dedup.to_string()).await.unwrap();
}

#[tokio::test]
async fn a_result_or_checkpoint_that_does_not_match_the_model_is_refused() {
    let grid = Grid::start().await.unwrap();
    grid.grant("alice", CREDIT).await.unwrap();
    let w = ScriptedWorker::with_script(&grid, "w", "owner-w", CREDIT, 36.0, 8, Script::Idle)
        .await
        .unwrap();
    let job = grid.submit("alice", requirements(2 * CREDIT, CREDIT), 16).await.unwrap();
    // Running once the worker's `started` is in, which it sends after recording the award.
    grid.wait_state("alice", &job.job_id, JobState::Running).await.unwrap();
    let award = w.awards.lock().unwrap()[0].clone();
    let as_w = grid.as_worker("w", "owner-w").await.unwrap();
    let nats = &as_w;
    let id = &award.job_id;

    let param = |name: &'static str, shape: Vec<u64>| (name, "F32", shape);
    let bias = param("param/fc.bias", vec![3]);
    let buffer = ("buffer/bn.num_batches_tracked", "I64", vec![]);
    let bad_results = [
        // wrong shape
        safetensors(&[param("param/fc.weight", vec![2, 3]), bias.clone(), buffer.clone()], 0),
        // wrong dtype
        safetensors(&[("param/fc.weight", "F64", vec![3, 2]), bias.clone(), buffer.clone()], 0),
        // a missing name
        safetensors(&[bias.clone(), buffer.clone()], 0),
        // an extra name: the old embedded module archive
        safetensors(
            &[param("param/fc.weight", vec![3, 2]), bias.clone(), buffer.clone(), ("module.torchscript", "I64", vec![8])],
            0,
        ),
        // not safetensors at all: a TorchScript archive
        common::fake_torchscript(),
    ];
    for (i, bytes) in bad_results.into_iter().enumerate() {
        let e = upload(nats, "w", id, "result", bytes).await.unwrap_err();
        assert_eq!(refused_code(&e), Some(ErrorCode::InvalidState), "result {i}: {e:#}");
    }
    // A result is no checkpoint: it lacks the meta/ scalars.
    let e = upload(nats, "w", id, "checkpoints/1", result_file()).await.unwrap_err();
    assert_eq!(refused_code(&e), Some(ErrorCode::InvalidState), "{e:#}");
    let e = upload(nats, "w", id, "result", checkpoint_file(1)).await.unwrap_err();
    assert_eq!(refused_code(&e), Some(ErrorCode::InvalidState), "{e:#}");

    // `completed` naming a refused upload does not complete the job: had it been accepted,
    // the job would have completed with the forged digest rather than the good one below.
    let refused = result_file_with_weight_shape();
    let sha256 = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&refused))
    };
    let forged = ArtifactInfo {
        name: "result".into(),
        size: refused.len() as u64,
        sha256,
    };
    assert!(upload(nats, "w", id, "result", refused).await.is_err());
    publish(&grid, &award, RunEventKind::Completed { result: forged }, "completed-bad").await;

    // A matching checkpoint and result are stored, and the job completes with that result.
    upload(nats, "w", id, "checkpoints/1", checkpoint_file(1)).await.unwrap();
    let good = upload(nats, "w", id, "result", result_file()).await.unwrap();
    publish(&grid, &award, RunEventKind::Completed { result: good.clone() }, "completed").await;
    grid.wait_state("alice", id, JobState::Completed).await.unwrap();
    let view: JobView = grid.job("alice", api::JOB_STATUS, id).await.unwrap();
    assert_eq!(view.result.map(|r| r.sha256), Some(good.sha256));
}

fn result_file_with_weight_shape() -> Vec<u8> {
    safetensors(
        &[
            ("param/fc.weight", "F32", vec![6]),
            ("param/fc.bias", "F32", vec![3]),
            ("buffer/bn.num_batches_tracked", "I64", vec![]),
        ],
        7,
    )
}

#[tokio::test]
async fn a_submission_without_a_usable_manifest_is_refused() {
    let grid = Grid::start().await.unwrap();
    grid.grant("alice", CREDIT).await.unwrap();
    let mut bad = common::model_state();
    bad[0].name = "fc/weight".into();
    for state in [Vec::new(), bad] {
        let e = grid
            .submit_with_state("alice", requirements(2 * CREDIT, CREDIT), 16, state)
            .await
            .unwrap_err();
        assert_eq!(refused_code(&e), Some(ErrorCode::InvalidModel), "{e:#}");
    }
}
