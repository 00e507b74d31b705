//! Every NATS subject, JetStream stream, KV bucket and object-store key, built in one place.
//!
//! Shape: `helium.v1.<role>.<id>.<resource>.<verb>`. The `<id>` token is the caller's identity
//! (principal or worker id); deployments enforce with NATS permissions that a caller publishes
//! only under its own id, so the broker trusts the token it reads from the subject.
//!
//! | direction | subject |
//! | --- | --- |
//! | researcher → broker (request) | `helium.v1.api.<principal>.<resource>.<verb>` |
//! | worker → broker (request/publish) | `helium.v1.worker.<worker>.<resource>.<verb>` |
//! | broker → worker (request) | `helium.v1.dispatch.<worker>.<resource>.<verb>` |
//! | job events (JetStream) | `helium.v1.events.<principal>.<job>` |
//! | run events (JetStream) | `helium.v1.worker.<worker>.run.event` |
//! | ledger journal (JetStream) | `helium.v1.ledger.journal` |

/// First two tokens of every Helium subject.
pub const PREFIX: &str = "helium.v1";

/// Micro service names (discoverable with `nats micro ls`).
pub const API_SERVICE: &str = "helium-api";
pub const WORKER_GATEWAY_SERVICE: &str = "helium-worker-gateway";
/// Queue group for load-balanced broker endpoints.
pub const BROKER_QUEUE: &str = "helium-broker";

/// Researcher/operator API verbs, each `helium.v1.api.<principal>.<verb>`.
pub mod api {
    pub const JOB_SUBMIT: &str = "job.submit";
    pub const JOB_STATUS: &str = "job.status";
    pub const JOB_CANCEL: &str = "job.cancel";
    pub const JOB_LIST: &str = "job.list";
    pub const JOB_FOLLOW: &str = "job.follow";
    pub const JOB_QUOTE: &str = "job.quote";
    pub const ACCOUNT_BALANCE: &str = "account.balance";
    pub const ACCOUNT_GRANT: &str = "account.grant";
    pub const ACCOUNT_STATEMENT: &str = "account.statement";
    pub const WORKER_LIST: &str = "worker.list";
    /// A worker's last auction notes, for its owner.
    pub const WORKER_LOG: &str = "worker.log";
    pub const ARTIFACT_BEGIN: &str = "artifact.begin";
    pub const ARTIFACT_CHUNK: &str = "artifact.chunk";
    pub const ARTIFACT_COMMIT: &str = "artifact.commit";
    pub const ARTIFACT_READ: &str = "artifact.read";
    /// Every verb above, for the service and the docs.
    pub const ALL: [&str; 15] = [
        JOB_SUBMIT,
        JOB_STATUS,
        JOB_CANCEL,
        JOB_LIST,
        JOB_FOLLOW,
        JOB_QUOTE,
        ACCOUNT_BALANCE,
        ACCOUNT_GRANT,
        ACCOUNT_STATEMENT,
        WORKER_LIST,
        WORKER_LOG,
        ARTIFACT_BEGIN,
        ARTIFACT_CHUNK,
        ARTIFACT_COMMIT,
        ARTIFACT_READ,
    ];
}

/// Worker → broker verbs, each `helium.v1.worker.<worker>.<verb>`.
pub mod worker {
    pub const REGISTER: &str = "agent.register";
    pub const HEARTBEAT: &str = "agent.heartbeat";
    pub const RUN_EVENT: &str = "run.event";
    pub const ARTIFACT_BEGIN: &str = "artifact.begin";
    pub const ARTIFACT_CHUNK: &str = "artifact.chunk";
    pub const ARTIFACT_COMMIT: &str = "artifact.commit";
    pub const ARTIFACT_READ: &str = "artifact.read";
    /// Request/reply verbs served by the broker's worker gateway.
    pub const REQUESTS: [&str; 5] = [REGISTER, ARTIFACT_BEGIN, ARTIFACT_CHUNK, ARTIFACT_COMMIT, ARTIFACT_READ];
}

/// Broker → worker verbs, each `helium.v1.dispatch.<worker>.<verb>`.
pub mod dispatch {
    pub const INVITE: &str = "auction.invite";
    pub const AWARD: &str = "job.award";
    pub const CANCEL: &str = "job.cancel";
    /// A plain publish (no reply): what an ended award paid, for the worker's log.
    pub const SETTLED: &str = "job.settled";
    /// A plain publish (no reply): why this worker's bid did not win an auction
    /// ([`crate::worker::AuctionNote`]), for the owner's log and status line.
    pub const AUCTION_RESULT: &str = "auction.result";
}

/// `helium.v1.api.<principal>.<verb>`.
pub fn api(principal: &str, verb: &str) -> String {
    format!("{PREFIX}.api.{principal}.{verb}")
}

/// Wildcard the broker serves one API verb on: `helium.v1.api.*.<verb>`.
pub fn api_any(verb: &str) -> String {
    format!("{PREFIX}.api.*.{verb}")
}

/// `helium.v1.worker.<worker>.<verb>`.
pub fn worker(worker_id: &str, verb: &str) -> String {
    format!("{PREFIX}.worker.{worker_id}.{verb}")
}

/// Wildcard the broker serves one worker verb on: `helium.v1.worker.*.<verb>`.
pub fn worker_any(verb: &str) -> String {
    format!("{PREFIX}.worker.*.{verb}")
}

/// `helium.v1.dispatch.<worker>.<verb>`.
pub fn dispatch(worker_id: &str, verb: &str) -> String {
    format!("{PREFIX}.dispatch.{worker_id}.{verb}")
}

/// `helium.v1.events.<principal>.<job>`: a job's history, replayable.
pub fn job_events(principal: &str, job_id: &str) -> String {
    format!("{PREFIX}.events.{principal}.{job_id}")
}

/// The identity token (principal or worker id) of a subject built by [`api`], [`worker`] or
/// [`dispatch`]; `None` when the subject is not shaped like one.
pub fn identity_of(subject: &str) -> Option<&str> {
    let mut tokens = subject.split('.');
    match (tokens.next(), tokens.next(), tokens.next(), tokens.next()) {
        (Some("helium"), Some("v1"), Some(_role), Some(id)) if valid_id(id) => Some(id),
        _ => None,
    }
}

/// Principals, worker ids and job ids are single subject tokens: 1–64 of `[A-Za-z0-9_-]`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// JetStream streams and KV buckets.
pub mod streams {
    /// Job events for researchers: `helium.v1.events.>`.
    pub const EVENTS: &str = "HELIUM_EVENTS";
    pub const EVENTS_SUBJECTS: &str = "helium.v1.events.>";
    /// Durable run events from workers: `helium.v1.worker.*.run.event`.
    pub const RUNS: &str = "HELIUM_RUNS";
    pub const RUNS_SUBJECTS: &str = "helium.v1.worker.*.run.event";
    /// The broker's durable consumer on [`RUNS`].
    pub const RUNS_CONSUMER: &str = "helium-broker-runs";
    /// The ledger journal; message id = transfer id.
    pub const LEDGER: &str = "HELIUM_LEDGER";
    pub const LEDGER_SUBJECT: &str = "helium.v1.ledger.journal";
    /// Job records, key = job id, revision-checked updates.
    pub const JOBS_BUCKET: &str = "helium_jobs";
}

/// Object-store keys (relative to the store's root).
pub mod keys {
    pub fn model(job_id: &str) -> String {
        format!("jobs/{job_id}/model.pt")
    }
    pub fn data(job_id: &str) -> String {
        format!("jobs/{job_id}/data.safetensors")
    }
    pub fn result(job_id: &str) -> String {
        format!("jobs/{job_id}/result.safetensors")
    }
    pub fn checkpoint(job_id: &str, step: u64) -> String {
        format!("jobs/{job_id}/checkpoints/{step}.safetensors")
    }
    /// The job id and artifact name (`result`, `checkpoints/<step>`, `model`, `data`) of a
    /// job key built above.
    pub fn parse_job_key(key: &str) -> Option<(String, String)> {
        let rest = key.strip_prefix("jobs/")?;
        let (job, file) = rest.split_once('/')?;
        let name = match file {
            "model.pt" => "model".to_string(),
            "data.safetensors" => "data".to_string(),
            "result.safetensors" => "result".to_string(),
            other => {
                let step = other.strip_prefix("checkpoints/")?.strip_suffix(".safetensors")?;
                // Only the spelling `checkpoint` writes: `007` or `+7` would name step 7 twice.
                step.parse::<u64>().ok().filter(|n| n.to_string() == step)?;
                format!("checkpoints/{step}")
            }
        };
        Some((job.to_string(), name))
    }

    /// Where a researcher's upload waits until a job claims it.
    pub fn staging(principal: &str, upload_id: &str) -> String {
        format!("staging/{principal}/{upload_id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_shaped_and_carry_identity() {
        assert_eq!(api("alice", api::JOB_SUBMIT), "helium.v1.api.alice.job.submit");
        assert_eq!(worker("w1", worker::RUN_EVENT), "helium.v1.worker.w1.run.event");
        assert_eq!(dispatch("w1", dispatch::AWARD), "helium.v1.dispatch.w1.job.award");
        assert_eq!(identity_of("helium.v1.api.alice.job.submit"), Some("alice"));
        assert_eq!(identity_of("helium.v1.api.a*b.job.submit"), None);
        assert_eq!(identity_of("other.v1.api.alice.job.submit"), None);
        assert!(!valid_id("a.b"));
        assert!(!valid_id(""));
        assert!(valid_id("gpu-owner_2"));
        assert_eq!(
            keys::parse_job_key(&keys::checkpoint("j", 7)),
            Some(("j".into(), "checkpoints/7".into()))
        );
        assert_eq!(
            keys::parse_job_key(&keys::result("j")),
            Some(("j".into(), "result".into()))
        );
        assert_eq!(keys::parse_job_key("jobs/j/evil.pt"), None);
        assert_eq!(keys::parse_job_key("jobs/j/checkpoints/007.safetensors"), None);
        assert_eq!(keys::parse_job_key("jobs/j/checkpoints/+7.safetensors"), None);
    }
}
