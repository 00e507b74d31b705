//! The Helium broker: runs the reverse auction, keeps the ledger, supervises jobs, tracks
//! workers and moves artifacts, all over NATS. Each responsibility is one ractor actor; they
//! talk to workers and clients only through the subjects in `helium_protocol::subjects`.
//!
//! # Layout
//! - [`broker`]: builds the actor system and the NATS ingress ([`Broker::start`]).
//! - [`config`]: the binary's flags.
//! - [`ledger`]: the Ledger actor, its pure [`ledger::Book`] and per-principal index of postings
//!   ([`ledger::postings`], `account.statement`); the operator's read-only audit
//!   of the journal (`helium ledger`) in [`ledger::reader`] and [`ledger::audit`].
//! - [`auction`]: the Auctioneer actor and the pure auction rules in [`auction::decide`].
//! - [`registry`]: the WorkerRegistry actor (asks, heartbeats, liveness).
//! - [`jobs`]: the JobManager actor and one [`jobs::JobSupervisor`] per job.
//! - [`artifacts`]: the Artifacts actor (chunked uploads), the store, and artifact checks.
//! - [`gateway`]: micro-service endpoints and JetStream consumers that feed the actors.
//! - [`keydir`]: the operator's keys and credentials (`helium creds`).
//! - [`ops`]: the operator's read-only tables of workers and jobs (`helium workers`, `helium jobs`).
//! - [`events`]: job events for researchers.
//! - [`streams`]: the JetStream streams and KV bucket the broker relies on.

pub mod artifacts;
pub mod auction;
pub mod broker;
pub mod config;
pub mod events;
pub mod gateway;
pub mod jobs;
pub mod keydir;
pub mod ledger;
pub mod ops;
pub mod registry;
pub mod sim;
pub mod streams;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use ractor::ActorRef;

pub use broker::{Broker, BrokerError};
pub use config::BrokerConfig;

/// What every job supervisor needs: the connections and the long-lived actors.
#[derive(Clone)]
pub struct Deps {
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub jobs: kv::Store,
    pub store: artifacts::Store,
    pub ledger: ActorRef<ledger::LedgerMsg>,
    pub artifacts: ActorRef<artifacts::ArtifactsMsg>,
    pub auctioneer: ActorRef<auction::AuctioneerMsg>,
    pub registry: ActorRef<registry::RegistryMsg>,
    pub bid_window: Duration,
    pub quotas: config::Quotas,
}

/// What the NATS ingress needs: [`Deps`] plus the job manager that routes to supervisors.
#[derive(Clone)]
pub struct Ctx {
    pub deps: Deps,
    pub manager: ActorRef<jobs::ManagerMsg>,
    /// The public key of the grid's account: a worker's credential must be signed by it.
    pub account: std::sync::Arc<str>,
}

/// Milliseconds on a monotonic clock since this process first asked (durations only).
pub fn mono_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}

/// Wall-clock unix milliseconds (deadlines and event times are wall-clock by nature).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
