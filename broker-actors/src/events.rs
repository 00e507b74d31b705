//! Publishing a job's events to JetStream, where a notebook replays them from the start and
//! then follows live (`helium.v1.events.<principal>.<job>` in `HELIUM_EVENTS`).

use async_nats::jetstream;
use helium_protocol::{
    api::{JobEvent, JobEventKind},
    encode, subjects, PROTOCOL_VERSION,
};

/// Publishes and waits for the stream's ack. A lost event is logged, not fatal: the job record
/// in KV stays the source of truth and `job.status` always answers from it.
pub async fn publish_job_event(js: &jetstream::Context, principal: &str, job_id: &str, kind: JobEventKind) {
    let event = JobEvent {
        v: PROTOCOL_VERSION,
        job_id: job_id.to_string(),
        at_ms: crate::now_ms(),
        kind,
    };
    let subject = subjects::job_events(principal, job_id);
    let acked = match js.publish(subject, encode(&event).into()).await {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = acked {
        tracing::error!(job = %job_id, error = %e, "job event not stored");
    }
}
