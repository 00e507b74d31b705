//! The operator's read-only view of the books over NATS (`helium ledger`, `helium jobs`): the
//! whole journal and the job records, read message by message with JetStream's get API
//! (`$JS.API.STREAM.MSG.GET.<stream>`). No consumer is created: an operator's credential may
//! not create one (a consumer's deliver subject is not bound by permissions, see
//! `helium_protocol::auth::permissions`), and a get neither writes nor leaves anything behind.
//! The broker's own credential reads the same way.

use std::{collections::BTreeMap, path::Path};

use async_nats::jetstream::{self, stream::RawMessageErrorKind};
use futures::{StreamExt, TryStreamExt};
use helium_protocol::{api::JobView, job::JobState, subjects::streams};

use super::{
    audit::{Content, JournalEntry},
    journal::decode_entry,
};
use crate::jobs::record::JobRecord;

/// Gets in flight at once while reading the journal.
const IN_FLIGHT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}: {1}")]
    Creds(String, String),
    #[error("connect to {0}: {1}")]
    Connect(String, String),
    #[error("reading {0}: {1}")]
    Read(&'static str, String),
}

/// A connection with the credential in `creds` (its inbox prefix read from it), over TLS when
/// `tls_ca` is given, as `helium creds revoke --nats` connects.
pub async fn connect(url: &str, creds: &Path, tls_ca: Option<&Path>) -> Result<async_nats::Client, ReadError> {
    let bad = |e: &dyn std::fmt::Display| ReadError::Creds(creds.display().to_string(), e.to_string());
    let text = std::fs::read_to_string(creds).map_err(|e| bad(&e))?;
    let (name, _role, inbox) = helium_protocol::auth::identity(&text).map_err(|e| bad(&e))?;
    let mut options = async_nats::ConnectOptions::with_credentials(&text).map_err(|e| bad(&e))?;
    if let Some(ca) = tls_ca {
        options = options.add_root_certificates(ca.to_path_buf()).require_tls(true);
    }
    options
        .custom_inbox_prefix(inbox)
        .name(format!("helium ledger ({name})"))
        .connect(url)
        .await
        .map_err(|e| ReadError::Connect(url.to_string(), e.to_string()))
}

/// Every journal sequence from 1 to the last one the stream held when asked, in order.
pub async fn read_journal(js: &jetstream::Context) -> Result<Vec<JournalEntry>, ReadError> {
    let error = |e: &dyn std::fmt::Display| ReadError::Read(streams::LEDGER, e.to_string());
    let mut stream = js.get_stream(streams::LEDGER).await.map_err(|e| error(&e))?;
    let last = stream.info().await.map_err(|e| error(&e))?.state.last_sequence;
    let stream = &stream;
    futures::stream::iter(1..=last)
        .map(|seq| async move {
            match stream.get_raw_message(seq).await {
                Ok(m) => Ok(JournalEntry {
                    seq,
                    time_ms: (m.time.unix_timestamp_nanos() / 1_000_000) as i64,
                    content: match decode_entry(&m.payload) {
                        Ok(transfers) => Content::Transfers(transfers),
                        Err(e) => Content::Undecodable(e),
                    },
                }),
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(JournalEntry {
                    seq,
                    time_ms: 0,
                    content: Content::Missing,
                }),
                Err(e) => Err(error(&format!("entry {seq}: {e}"))),
            }
        })
        .buffered(IN_FLIGHT)
        .try_collect()
        .await
}

/// The state of each of `jobs` in the job bucket (its latest record), `None` for a job without
/// one (never written, deleted or purged).
pub async fn job_states(
    js: &jetstream::Context,
    jobs: impl IntoIterator<Item = String>,
) -> Result<BTreeMap<String, Option<JobState>>, ReadError> {
    let stream = jobs_stream(js).await?;
    let mut states = BTreeMap::new();
    for job in jobs {
        let state = job_record(&stream, &job).await?.map(|r| r.view.state);
        states.insert(job, state);
    }
    Ok(states)
}

/// Every job in the job bucket (its latest record's view), oldest first (by `created_ms`, then
/// id), only `principal`'s when given. The keys come from the bucket stream's info (its
/// subjects, `$JS.API.STREAM.INFO`), each record from a get: no consumer, no watcher.
pub async fn jobs(js: &jetstream::Context, principal: Option<&str>) -> Result<Vec<JobView>, ReadError> {
    let stream = jobs_stream(js).await?;
    let prefix = format!("$KV.{}.", streams::JOBS_BUCKET);
    let subjects: Vec<String> = stream
        .info_with_subjects(format!("{prefix}>"))
        .await
        .map_err(|e| jobs_error(&e))?
        .map_ok(|(subject, _count)| subject)
        .try_collect()
        .await
        .map_err(|e| jobs_error(&e))?;
    let stream = &stream;
    let records: Vec<Option<JobRecord>> =
        futures::stream::iter(subjects.iter().filter_map(|s| s.strip_prefix(&prefix)))
            .map(|job| async move { job_record(stream, job).await })
            .buffered(IN_FLIGHT)
            .try_collect()
            .await?;
    let mut views: Vec<JobView> = records
        .into_iter()
        .flatten()
        .map(|r| r.view)
        .filter(|v| principal.is_none_or(|p| v.principal == p))
        .collect();
    views.sort_by(|a, b| (a.created_ms, &a.job_id).cmp(&(b.created_ms, &b.job_id)));
    Ok(views)
}

fn jobs_error(e: &dyn std::fmt::Display) -> ReadError {
    ReadError::Read(streams::JOBS_BUCKET, e.to_string())
}

/// The job bucket's stream, without asking for its info.
async fn jobs_stream(js: &jetstream::Context) -> Result<jetstream::stream::Stream<()>, ReadError> {
    let name = format!("KV_{}", streams::JOBS_BUCKET);
    js.get_stream_no_info(&name).await.map_err(|e| jobs_error(&e))
}

/// A job's latest record in the bucket; `None` when it has none (never written, deleted or
/// purged).
async fn job_record(stream: &jetstream::stream::Stream<()>, job: &str) -> Result<Option<JobRecord>, ReadError> {
    let subject = format!("$KV.{}.{job}", streams::JOBS_BUCKET);
    match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => {
            let op = m.headers.get("KV-Operation").map(|v| v.as_str().to_string());
            if matches!(op.as_deref(), Some("DEL" | "PURGE")) {
                return Ok(None);
            }
            // Records are the broker's own storage: no version envelope.
            let record: JobRecord =
                rmp_serde::from_slice(&m.payload).map_err(|e| jobs_error(&format!("job {job}: {e}")))?;
            Ok(Some(record))
        }
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(jobs_error(&format!("job {job}: {e}"))),
    }
}
