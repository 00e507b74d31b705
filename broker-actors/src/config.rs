//! The broker's one configuration struct: every flag has an environment variable.

use std::time::Duration;

use clap::Parser;
use helium_protocol::limits::DEFAULT_MAX_ARTIFACT_BYTES;

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
    /// NATS server to serve on.
    #[arg(long, env = "HELIUM_NATS_URL", default_value = DEFAULT_NATS_URL)]
    pub nats_url: String,
    /// Object store for artifacts: file:///abs/dir (or just /abs/dir), or memory:// for tests.
    /// Cloud stores (s3://, gs://, az://) are not compiled in yet.
    #[arg(long, env = "HELIUM_STORE")]
    pub store: String,
    /// How long an auction waits for sealed bids.
    #[arg(long, env = "HELIUM_BID_WINDOW_MS", default_value_t = DEFAULT_BID_WINDOW_MS)]
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
}

impl BrokerConfig {
    pub fn bid_window(&self) -> Duration {
        Duration::from_millis(self.bid_window_ms)
    }
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}
