//! Creates the JetStream streams and the KV bucket the broker relies on, or brings an existing
//! one's limits up to date, with the replication the deployment asks for. Idempotent: every
//! broker instance runs it at start.
//!
//! Every stream and the bucket is bounded (numbers in [`helium_protocol::limits`], byte
//! limits from [`StreamLimits`]), so that no tenant can fill JetStream:
//! - `HELIUM_EVENTS`: per job at most [`MAX_EVENTS_PER_JOB`] events, 30 days, messages of at
//!   most [`MAX_EVENT_MESSAGE_BYTES`]; when full, the oldest go (history, not money).
//! - `HELIUM_RUNS`: per worker at most [`MAX_RUN_EVENTS_PER_WORKER`] events, 7 days, small
//!   messages; the oldest go first (consumed within seconds of arriving), so a worker that
//!   floods its own subject pushes out only its own history.
//! - `HELIUM_LEDGER`: never discards anything. Its byte limit is large and its discard policy
//!   is `new`: a full journal refuses the next append (the transfer fails `unavailable`)
//!   rather than losing an entry. Delete and purge are denied.
//! - `helium_jobs`: values of at most [`MAX_JOB_RECORD_BYTES`], [`JOB_RECORD_HISTORY`]
//!   revisions per job; a full bucket refuses writes (submissions fail `unavailable`).

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use helium_protocol::{
    limits::{
        JOB_RECORD_HISTORY, MAX_EVENTS_PER_JOB, MAX_EVENT_MESSAGE_BYTES, MAX_JOB_RECORD_BYTES,
        MAX_RUN_EVENTS_PER_WORKER,
    },
    subjects::streams as names,
};

use crate::config::StreamLimits;

pub struct Streams {
    pub jobs: kv::Store,
}

/// The streams' configurations, as [`ensure`] applies them.
pub fn configs(replicas: usize, limits: &StreamLimits) -> [stream::Config; 3] {
    let events = stream::Config {
        name: names::EVENTS.into(),
        subjects: vec![names::EVENTS_SUBJECTS.into()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_age: Duration::from_secs(30 * 24 * 3600),
        max_bytes: limits.events_max_bytes,
        max_messages_per_subject: MAX_EVENTS_PER_JOB,
        max_message_size: MAX_EVENT_MESSAGE_BYTES,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    };
    let runs = stream::Config {
        name: names::RUNS.into(),
        subjects: vec![names::RUNS_SUBJECTS.into()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_age: Duration::from_secs(7 * 24 * 3600),
        max_bytes: limits.runs_max_bytes,
        max_messages_per_subject: MAX_RUN_EVENTS_PER_WORKER,
        max_message_size: MAX_EVENT_MESSAGE_BYTES,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    };
    let ledger = stream::Config {
        name: names::LEDGER.into(),
        subjects: vec![names::LEDGER_SUBJECT.into()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        // Dedup by transfer id over a long window; ids stay unique forever in the Book anyway.
        duplicate_window: Duration::from_secs(24 * 3600),
        max_bytes: limits.ledger_max_bytes,
        discard: stream::DiscardPolicy::New,
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    };
    [events, runs, ledger]
}

pub async fn ensure(
    js: &jetstream::Context,
    replicas: usize,
    limits: &StreamLimits,
) -> Result<Streams, async_nats::Error> {
    for config in configs(replicas, limits) {
        js.create_or_update_stream(config).await?;
    }
    let jobs = js
        .create_or_update_key_value(kv::Config {
            bucket: names::JOBS_BUCKET.into(),
            history: JOB_RECORD_HISTORY,
            max_value_size: MAX_JOB_RECORD_BYTES,
            max_bytes: limits.jobs_max_bytes,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await?;
    Ok(Streams { jobs })
}
