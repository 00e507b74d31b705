//! Publishing a job's events to JetStream, where a notebook replays them from the start and
//! then follows live (`helium.v1.events.<principal>.<job>` in `HELIUM_EVENTS`).

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use helium_protocol::{
    api::{JobEvent, JobEventKind},
    encode, subjects, PROTOCOL_VERSION,
};

/// How long an event is retried: past a cluster's leader election (seconds; the stream
/// answers "no stream" or nothing meanwhile), within the stream's duplicate window
/// (JetStream's default, two minutes).
pub const EVENT_PATIENCE: Duration = Duration::from_secs(30);

/// Publishes and waits for the stream's ack, retrying with backoff for [`EVENT_PATIENCE`]
/// under one message id (a retry of a publish that did land is dropped as a duplicate). A
/// lost event is logged, not fatal: the job record in KV stays the source of truth and
/// `job.status` always answers from it.
pub async fn publish_job_event(js: &jetstream::Context, principal: &str, job_id: &str, kind: JobEventKind) {
    let event = JobEvent {
        v: PROTOCOL_VERSION,
        job_id: job_id.to_string(),
        at_ms: crate::now_ms(),
        kind,
    };
    let subject = subjects::job_events(principal, job_id);
    let payload: bytes::Bytes = encode(&event).into();
    let id = uuid::Uuid::now_v7().simple().to_string();
    let started = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let publish = PublishMessage::build().payload(payload.clone()).message_id(&id);
        let acked = match js.send_publish(subject.clone(), publish).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match acked {
            Ok(()) => return,
            Err(e) if started.elapsed() + backoff < EVENT_PATIENCE => {
                tracing::warn!(job = %job_id, error = %e, retry_in = ?backoff, "job event not stored; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                tracing::error!(job = %job_id, error = %e, "job event not stored");
                return;
            }
        }
    }
}
