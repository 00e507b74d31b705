//! Creates (or finds) the JetStream streams and the KV bucket the broker relies on, with the
//! replication the deployment asks for. Idempotent: every broker instance runs it at start.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use helium_protocol::subjects::streams as names;

pub struct Streams {
    pub jobs: kv::Store,
}

pub async fn ensure(js: &jetstream::Context, replicas: usize) -> Result<Streams, async_nats::Error> {
    js.get_or_create_stream(stream::Config {
        name: names::EVENTS.into(),
        subjects: vec![names::EVENTS_SUBJECTS.into()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_age: Duration::from_secs(30 * 24 * 3600),
        ..Default::default()
    })
    .await?;
    js.get_or_create_stream(stream::Config {
        name: names::RUNS.into(),
        subjects: vec![names::RUNS_SUBJECTS.into()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_age: Duration::from_secs(7 * 24 * 3600),
        ..Default::default()
    })
    .await?;
    js.get_or_create_stream(stream::Config {
        name: names::LEDGER.into(),
        subjects: vec![names::LEDGER_SUBJECT.into()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        // Dedup by transfer id over a long window; ids stay unique forever in the Book anyway.
        duplicate_window: Duration::from_secs(24 * 3600),
        ..Default::default()
    })
    .await?;
    let jobs = match js.get_key_value(names::JOBS_BUCKET).await {
        Ok(store) => store,
        Err(_) => {
            js.create_key_value(kv::Config {
                bucket: names::JOBS_BUCKET.into(),
                history: 5,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await?
        }
    };
    Ok(Streams { jobs })
}
