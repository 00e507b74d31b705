//! The broker's one configuration struct: every flag has an environment variable.

use std::time::Duration;

use clap::{Args, Parser};
use helium_protocol::limits::{
    DEFAULT_EVENTS_MAX_BYTES, DEFAULT_JOBS_MAX_BYTES, DEFAULT_LEDGER_MAX_BYTES, DEFAULT_MAX_ARTIFACT_BYTES,
    DEFAULT_MAX_CHECKPOINTS_PER_AWARD, DEFAULT_MAX_OPEN_JOBS, DEFAULT_MAX_STAGED_BYTES, DEFAULT_RUNS_MAX_BYTES,
    RESPONSE_TTL_SECS,
};

pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
pub const DEFAULT_BID_WINDOW_MS: u64 = 1_500;
pub const DEFAULT_HEARTBEAT_MS: u64 = 1_000;
pub const DEFAULT_INVITE_K: usize = 8;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "helium-broker",
    version,
    about = "Helium broker: auctions, ledger, jobs, artifacts"
)]
pub struct BrokerConfig {
    /// NATS server to serve on; for a cluster, several URLs separated by commas.
    #[arg(long, env = "HELIUM_NATS_URL", default_value = DEFAULT_NATS_URL)]
    pub nats_url: String,
    /// Object store for artifacts: file:///abs/dir (or just /abs/dir), or memory:// for tests.
    /// Cloud stores (s3://, gs://, az://) are not compiled in yet.
    #[arg(long, env = "HELIUM_STORE")]
    pub store: String,
    /// How long an auction waits for sealed bids; under the time a worker's credential lets it
    /// answer (`limits::RESPONSE_TTL_SECS`), or every bid would be refused by nats-server.
    #[arg(long, env = "HELIUM_BID_WINDOW_MS", default_value_t = DEFAULT_BID_WINDOW_MS,
          value_parser = clap::value_parser!(u64).range(1..RESPONSE_TTL_SECS * 1000))]
    pub bid_window_ms: u64,
    /// Workers invited to one auction at most.
    #[arg(long, env = "HELIUM_INVITE_K", default_value_t = DEFAULT_INVITE_K)]
    pub invite_k: usize,
    /// Expected worker heartbeat period.
    #[arg(long, env = "HELIUM_HEARTBEAT_MS", default_value_t = DEFAULT_HEARTBEAT_MS)]
    pub heartbeat_ms: u64,
    /// The broker's NATS credential (`helium creds issue broker <name>`). Its account is the
    /// one whose signature the broker checks on a worker's registration.
    #[arg(long, env = "HELIUM_CREDS")]
    pub creds: std::path::PathBuf,
    /// A CA certificate (PEM) to trust for the server's TLS certificate, and require TLS
    /// (`deploy/tls.sh` makes one); without it, the system's roots for `tls://` URLs.
    #[arg(long, env = "HELIUM_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Largest artifact accepted, in bytes.
    #[arg(long, env = "HELIUM_MAX_ARTIFACT_BYTES", default_value_t = DEFAULT_MAX_ARTIFACT_BYTES)]
    pub max_artifact_bytes: u64,
    /// JetStream replicas for streams and buckets (3 in a 3-node cluster).
    #[arg(long, env = "HELIUM_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    #[command(flatten)]
    pub quotas: Quotas,
    #[command(flatten)]
    pub streams: StreamLimits,
}

/// What one principal may hold at once; over a quota, a request is refused `quota_exceeded`
/// and succeeds again once under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct Quotas {
    /// Jobs one researcher may have open (queued, auctioning, assigned or running) at once.
    #[arg(long, env = "HELIUM_MAX_OPEN_JOBS", default_value_t = DEFAULT_MAX_OPEN_JOBS)]
    pub max_open_jobs: usize,
    /// Bytes one researcher may have in staging (uploads not yet claimed by a job) at once.
    #[arg(long, env = "HELIUM_MAX_STAGED_BYTES", default_value_t = DEFAULT_MAX_STAGED_BYTES)]
    pub max_staged_bytes: u64,
    /// Checkpoints one award's worker may store; later checkpoint uploads are refused (the
    /// run goes on; it is paid up to its last stored checkpoint if it does not finish).
    #[arg(long, env = "HELIUM_MAX_CHECKPOINTS_PER_AWARD", default_value_t = DEFAULT_MAX_CHECKPOINTS_PER_AWARD)]
    pub max_checkpoints_per_award: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_open_jobs: DEFAULT_MAX_OPEN_JOBS,
            max_staged_bytes: DEFAULT_MAX_STAGED_BYTES,
            max_checkpoints_per_award: DEFAULT_MAX_CHECKPOINTS_PER_AWARD,
        }
    }
}

/// Byte limits of the JetStream streams and the job bucket. nats-server reserves each from its
/// storage when the stream is created, so together they must fit its `max_file_store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct StreamLimits {
    /// `HELIUM_EVENTS`: the oldest events go when it is full.
    #[arg(long, env = "HELIUM_EVENTS_MAX_BYTES", default_value_t = DEFAULT_EVENTS_MAX_BYTES)]
    pub events_max_bytes: i64,
    /// `HELIUM_RUNS`: the oldest (long consumed) run events go when it is full.
    #[arg(long, env = "HELIUM_RUNS_MAX_BYTES", default_value_t = DEFAULT_RUNS_MAX_BYTES)]
    pub runs_max_bytes: i64,
    /// `HELIUM_LEDGER`: never discards; when full, transfers fail `unavailable` until the
    /// operator raises this.
    #[arg(long, env = "HELIUM_LEDGER_MAX_BYTES", default_value_t = DEFAULT_LEDGER_MAX_BYTES)]
    pub ledger_max_bytes: i64,
    /// `helium_jobs`: when full, submissions fail `unavailable`.
    #[arg(long, env = "HELIUM_JOBS_MAX_BYTES", default_value_t = DEFAULT_JOBS_MAX_BYTES)]
    pub jobs_max_bytes: i64,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            events_max_bytes: DEFAULT_EVENTS_MAX_BYTES,
            runs_max_bytes: DEFAULT_RUNS_MAX_BYTES,
            ledger_max_bytes: DEFAULT_LEDGER_MAX_BYTES,
            jobs_max_bytes: DEFAULT_JOBS_MAX_BYTES,
        }
    }
}

impl BrokerConfig {
    pub fn bid_window(&self) -> Duration {
        Duration::from_millis(self.bid_window_ms)
    }
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}
