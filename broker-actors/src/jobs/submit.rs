//! Accepting a submission, in its own task (the JobManager keeps routing meanwhile): check it,
//! check the account covers its budget, claim its staged uploads as the job's model and data,
//! inspect them, and create its record. Nothing is left behind when any of it fails.

use helium_protocol::{
    api::{JobView, SubmitJob},
    artifacts::ArtifactInfo,
    encode,
    job::JobState,
    ledger::user,
    limits::MICRO_PER_CREDIT,
    subjects::keys,
    ErrorCode, WireError,
};

use super::record::{self, JobRecord};
use crate::{artifacts::ArtifactsMsg, ledger::LedgerMsg, Deps};

/// Everything a submission needs before its supervisor starts: the record, written, and its
/// revision.
pub async fn prepare(deps: Deps, principal: String, request: SubmitJob) -> Result<(JobRecord, u64), WireError> {
    let now = crate::now_ms();
    record::validate(&request, now)?;
    // Fail fast: a budget the account cannot cover would only fail later, at the award.
    let balance = ractor::call_t!(deps.ledger, LedgerMsg::Balance, 10_000, user(&principal))
        .map_err(|e| WireError::new(ErrorCode::Unavailable, format!("ledger: {e}")))?;
    if balance < i128::from(request.requirements.budget) {
        let credits = |micro: i128| micro as f64 / MICRO_PER_CREDIT as f64;
        return Err(WireError::new(
            ErrorCode::InsufficientFunds,
            format!(
                "{principal} holds {} credits, less than the budget of {} credits",
                credits(balance),
                credits(i128::from(request.requirements.budget))
            ),
        ));
    }
    let job_id = uuid::Uuid::now_v7().simple().to_string();
    let claim = |upload_id: String, dest_key: String| {
        let principal = principal.clone();
        move |reply| ArtifactsMsg::Claim {
            principal,
            upload_id,
            dest_key,
            reply,
        }
    };
    let artifacts = &deps.artifacts;
    let model = ractor::call_t!(
        artifacts,
        claim(request.model_upload.clone(), keys::model(&job_id)),
        30_000
    )
    .map_err(|e| WireError::new(ErrorCode::Unavailable, e.to_string()))??;
    let data = ractor::call_t!(
        artifacts,
        claim(request.data_upload.clone(), keys::data(&job_id)),
        30_000
    )
    .map_err(|e| WireError::new(ErrorCode::Unavailable, e.to_string()))
    .and_then(|claimed| claimed);
    let data = match data {
        Ok(data) => data,
        Err(e) => {
            let _ = deps.store.delete(&keys::model(&job_id)).await; // no job will own it
            return Err(e);
        }
    };
    let store = &deps.store;
    let unavailable = |e: crate::artifacts::StoreError| WireError::new(ErrorCode::Unavailable, e.to_string());
    let checked = async {
        store
            .inspect_model(&keys::model(&job_id))
            .await
            .map_err(unavailable)?
            .map_err(|m| WireError::new(ErrorCode::InvalidModel, m))?;
        store
            .inspect_data(&keys::data(&job_id))
            .await
            .map_err(unavailable)?
            .map_err(|m| WireError::new(ErrorCode::InvalidData, m))
    }
    .await;
    let summary = match checked {
        Ok(summary) => summary,
        Err(e) => {
            let _ = store.delete(&keys::model(&job_id)).await;
            let _ = store.delete(&keys::data(&job_id)).await;
            return Err(e);
        }
    };
    let model = ArtifactInfo {
        name: helium_protocol::artifacts::MODEL.into(),
        ..model
    };
    let data = ArtifactInfo {
        name: helium_protocol::artifacts::DATA.into(),
        ..data
    };
    let mut work = request.work;
    work.samples = summary.rows; // the data, not the declaration, says how many samples
    let view = JobView {
        job_id: job_id.clone(),
        principal: principal.clone(),
        name: request.name.clone(),
        state: JobState::Queued,
        reason: None,
        reason_code: None,
        worker: None,
        price: None,
        paid: 0,
        epochs: request.training.epochs,
        epochs_done: 0,
        last_loss: None,
        result: None,
        created_ms: now,
        updated_ms: now,
    };
    let record = JobRecord {
        view,
        training: request.training,
        requirements: request.requirements,
        work,
        model,
        data,
        awards: 0,
        accepted_awards: 0,
        award: None,
        checkpoint: None,
        excluded_workers: Vec::new(),
        state: request.state,
        reason: None,
        swept: false,
    };
    let revision = deps
        .jobs
        .create(&job_id, encode(&record).into())
        .await
        .map_err(|e| WireError::new(ErrorCode::Unavailable, format!("job store: {e}")))?;
    crate::events::publish_job_event(
        &deps.js,
        &principal,
        &job_id,
        helium_protocol::api::JobEventKind::State {
            state: JobState::Queued,
            reason: None,
        },
    )
    .await;
    tracing::info!(job = %job_id, principal = %principal, "job submitted");
    Ok((record, revision))
}
