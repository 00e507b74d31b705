//! Researcher and operator requests on `helium.v1.api.<principal>.<verb>`, and their replies
//! (each wrapped in [`crate::Reply`]). Job events on `helium.v1.events.<principal>.<job>`.

use serde::{Deserialize, Serialize};

use crate::artifacts::ArtifactInfo;
use crate::state::TensorSpec;
use crate::job::{DeclaredWork, DeviceKind, JobState, Requirements, TrainingSpec};

/// `job.submit`: train the staged model on the staged data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitJob {
    pub v: u32,
    /// Upload ids returned by `artifact.commit` for this principal.
    pub model_upload: String,
    pub data_upload: String,
    pub training: TrainingSpec,
    pub requirements: Requirements,
    pub work: DeclaredWork,
    #[serde(default)]
    pub name: Option<String>,
    /// The model's parameters and buffers (names, shapes, dtypes), as the client read them
    /// from the scripted module: the broker refuses a result or checkpoint that does not
    /// match. See [`crate::state`].
    #[serde(default)]
    pub state: Vec<TensorSpec>,
}

/// `job.status` and `job.cancel`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRef {
    pub v: u32,
    pub job_id: String,
}

/// `job.follow`: have the broker deliver the caller's events of one job into `deliver`, a
/// subject of the caller's own inbox, from stream sequence `start_seq` (0: the first).
/// Researchers hold no JetStream API rights (a consumer they created could deliver anywhere).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FollowJob {
    pub v: u32,
    pub job_id: String,
    pub deliver: String,
    #[serde(default)]
    pub start_seq: u64,
}

/// The consumer the broker made for a `job.follow`, and how many events it will deliver now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Following {
    pub consumer: String,
    pub pending: u64,
}

/// What a researcher sees of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub job_id: String,
    pub principal: String,
    #[serde(default)]
    pub name: Option<String>,
    pub state: JobState,
    /// Why the job waits or failed, in words ("no worker with ≥ 16 GiB").
    #[serde(default)]
    pub reason: Option<String>,
    /// The same reason as a stable code (`no_worker`, `worker_lost`, `cancelled`, …; see
    /// docs/PROTOCOL.md): what programs match, never the words.
    #[serde(default)]
    pub reason_code: Option<String>,
    #[serde(default)]
    pub worker: Option<String>,
    /// Micro-credits committed to the job: paid so far plus the hold of the award in force
    /// (the second price, capped by the budget); equals `paid` once the job has settled.
    #[serde(default)]
    pub price: Option<u64>,
    /// Micro-credits actually paid to the worker's owner.
    #[serde(default)]
    pub paid: u64,
    pub epochs: u32,
    #[serde(default)]
    pub epochs_done: u32,
    #[serde(default)]
    pub last_loss: Option<f64>,
    #[serde(default)]
    pub result: Option<ArtifactInfo>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// `job.list` takes `{v}` and replies the caller's jobs, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

/// `account.balance` takes `{v}` and replies this; `account.grant` replies the grantee's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub principal: String,
    pub micro: i128,
}

/// `account.statement`: the caller's own account's postings in journal entries after
/// `since_seq` (0: from the first), oldest first. A reply holds whole entries only (an entry's
/// postings are never split across replies), at most `limit` lines (default and cap
/// [`crate::limits::MAX_STATEMENT_LINES`]) and what fits one message, except that the first
/// entry is always whole; `more` says whether to ask again with `since_seq` = the last line's
/// `seq`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadStatement {
    pub v: u32,
    #[serde(default)]
    pub since_seq: u64,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One posting of an account: a journaled transfer into or out of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementLine {
    /// The journal entry (`HELIUM_LEDGER` sequence) that holds the transfer.
    pub seq: u64,
    /// When the stream stored that entry, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The transfer id (`pay.<job>.<n>`, …; PROTOCOL §10).
    pub transfer: String,
    pub job: Option<String>,
    /// The other account of the transfer.
    pub counterparty: String,
    pub kind: crate::ledger::TransferKind,
    /// Micro-credits into the account (negative: out of it).
    pub micro: i128,
    /// The account's balance after this line.
    pub balance: i128,
    pub memo: String,
}

/// The answer to `account.statement`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    pub principal: String,
    pub lines: Vec<StatementLine>,
    /// Postings after the last line remain: ask again from its `seq`.
    pub more: bool,
    /// The account's balance now (after all its journaled postings).
    pub balance: i128,
}

/// The empty request body of `account.balance` and `worker.list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Empty {
    pub v: u32,
}

/// `account.grant`: the operator mints credits to a principal. `id` makes retries idempotent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub v: u32,
    pub to: String,
    pub micro: u64,
    pub id: String,
}

/// One row of `worker.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    pub worker_id: String,
    pub owner: String,
    pub device: DeviceKind,
    pub device_name: String,
    pub memory_bytes: u64,
    pub price_per_hour: u64,
    /// Parameter-samples per second from the worker's start-up benchmark.
    pub throughput: f64,
    pub busy_with: Option<String>,
    pub alive: bool,
    /// The sandbox layers its trainer runs in ([`crate::worker::Ask::sandbox`]).
    #[serde(default)]
    pub sandbox: Vec<crate::worker::SandboxLayer>,
    /// `(completed + 1) / (completed + failed + 1)`, in (0, 1]: 1 for a newcomer. An auction
    /// ranks its invitations by estimated cost ÷ reputation.
    #[serde(default = "one")]
    pub reputation: f64,
    /// Awards it completed with a verified result, and awards it abandoned (lost, restarted,
    /// preempted, failed by its own fault, refused after winning), since the broker started.
    #[serde(default)]
    pub completed: u32,
    #[serde(default)]
    pub failed: u32,
    /// Invitations it won, lost (bid, and another bid won) and declined, and its last auction
    /// note in words ("lost job 0192…: outbid: …"): shown to the worker's owner only (`None`
    /// to everyone else: they name other researchers' jobs, prices and how many bid).
    #[serde(default)]
    pub won: Option<u32>,
    #[serde(default)]
    pub lost: Option<u32>,
    #[serde(default)]
    pub declined: Option<u32>,
    #[serde(default)]
    pub last_auction: Option<String>,
    /// Why it takes no jobs now, by its owner's terms (its last heartbeat's words); a paused
    /// worker is not invited.
    #[serde(default)]
    pub paused: Option<String>,
}

fn one() -> f64 {
    1.0
}

impl WorkerView {
    /// This view as `principal` may see it: the auction record (`won`, `lost`, `declined`,
    /// `last_auction`) only if it owns the worker.
    pub fn for_caller(mut self, principal: &str) -> WorkerView {
        if self.owner != principal {
            (self.won, self.lost, self.declined, self.last_auction) = (None, None, None, None);
        }
        self
    }
}

/// `worker.log`: the last auction notes of one worker, for its owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerLogRequest {
    pub v: u32,
    pub worker_id: String,
    /// At most this many, the newest (0: all that are kept).
    #[serde(default)]
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerLog {
    pub worker_id: String,
    pub notes: Vec<crate::worker::AuctionNote>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerList {
    pub workers: Vec<WorkerView>,
}

/// `job.quote`: what a job would cost and take on the grid's current asks, without submitting
/// anything (no upload, no hold, no auction).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuoteJob {
    pub v: u32,
    pub requirements: Requirements,
    pub work: DeclaredWork,
}

/// The answer to `job.quote`. The workers an auction would invite now are taken to bid what
/// their asks say (price/hour × their own ETA for the work); `price` is what the auction would
/// then charge. While the asks do not change, the price charged for the same job lies in
/// `[low, high]` whichever of those workers are free to bid by then: at least the cheapest
/// qualifying cost, at most the dearest one (capped by the budget), since the second price
/// is always one of them. `reason` says why no worker could take the job (then the numbers
/// are 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    pub v: u32,
    /// Micro-credits the auction would charge now.
    pub price: u64,
    pub low: u64,
    pub high: u64,
    /// The expected winner and its ETA for the work, seconds.
    pub worker: Option<String>,
    pub eta_secs: f64,
    /// The fastest and slowest ETA among the qualifying workers.
    pub eta_low_secs: f64,
    pub eta_high_secs: f64,
    /// Workers an auction would invite now, and how many of them meet every constraint.
    pub invited: u32,
    pub qualifying: u32,
    pub reason: Option<String>,
}

/// One entry of a job's event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub v: u32,
    pub job_id: String,
    pub at_ms: u64,
    #[serde(flatten)]
    pub kind: JobEventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobEventKind {
    /// The job entered `state`; `reason` says why it waits or failed.
    State { state: JobState, reason: Option<String> },
    /// The auction closed with a winner.
    Awarded {
        worker: String,
        bids: u32,
        price: u64,
        eta_secs: f64,
    },
    /// One epoch done.
    Progress {
        epoch: u32,
        epochs: u32,
        /// Optimizer steps taken by the end of the epoch, over the whole job.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<u64>,
        loss: f64,
        samples_per_sec: f64,
        /// On the job's validation split, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        val_loss: Option<f64>,
        /// Only for classification losses.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        val_accuracy: Option<f64>,
    },
    /// The broker verified a checkpoint after optimizer step `step` (`epoch` epochs complete):
    /// the job resumes there if its worker is lost, and that worker is paid up to it.
    Checkpointed { step: u64, epoch: u32 },
}
