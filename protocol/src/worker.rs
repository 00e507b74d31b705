//! Worker ↔ broker messages. Workers publish under `helium.v1.worker.<worker>.…`; the broker
//! reaches a worker on `helium.v1.dispatch.<worker>.…`.

use serde::{Deserialize, Serialize};

use crate::artifacts::ArtifactInfo;
use crate::job::{DeclaredWork, DeviceKind, Requirements, TrainingSpec};

/// A worker's standing ask, measured or configured at start-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ask {
    /// Micro-credits per device-hour.
    pub price_per_hour: u64,
    pub device: DeviceKind,
    pub device_name: String,
    pub memory_bytes: u64,
    /// Parameter-samples per second (forward + backward + step) from the start-up benchmark.
    pub throughput: f64,
    /// The layers of the trainer sandbox in force on this worker (DESIGN §7), as its start-up
    /// probe found them. Empty from a worker that predates sandboxing, or one whose owner
    /// passed `--allow-unsandboxed` on a machine that offers none.
    #[serde(default)]
    pub sandbox: Vec<SandboxLayer>,
}

/// One layer of the sandbox a worker runs a job's TorchScript in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxLayer {
    /// Its own user namespace: the trainer holds no capability outside it.
    UserNamespace,
    /// Its own network namespace: no network at all.
    NetworkNamespace,
    /// Its own pid namespace, the trainer its pid 1: no other process on the machine is
    /// visible or addressable (signals, `prlimit`, `setpriority`, scheduling).
    PidNamespace,
    /// Its own IPC namespace: SysV shared memory, semaphores and message queues, and POSIX
    /// message queues, of its own only (and the seccomp filter denies them besides).
    IpcNamespace,
    /// Landlock: the job directory read-write, libtorch and the binary read-only, nothing else.
    Landlock,
    /// A seccomp filter denying what a trainer never needs (sockets, ptrace, mounts, exec, …).
    Seccomp,
    /// Resource limits: CPU time, file size, open files, processes, no core (and address
    /// space on CPU workers).
    Rlimits,
}

impl SandboxLayer {
    /// Every layer: a worker with all of them is fully sandboxed.
    pub const ALL: [SandboxLayer; 7] = [
        SandboxLayer::UserNamespace,
        SandboxLayer::NetworkNamespace,
        SandboxLayer::PidNamespace,
        SandboxLayer::IpcNamespace,
        SandboxLayer::Landlock,
        SandboxLayer::Seccomp,
        SandboxLayer::Rlimits,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SandboxLayer::UserNamespace => "user_namespace",
            SandboxLayer::NetworkNamespace => "network_namespace",
            SandboxLayer::PidNamespace => "pid_namespace",
            SandboxLayer::IpcNamespace => "ipc_namespace",
            SandboxLayer::Landlock => "landlock",
            SandboxLayer::Seccomp => "seccomp",
            SandboxLayer::Rlimits => "rlimits",
        }
    }
}

/// `agent.register` (request).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Register {
    pub v: u32,
    /// The principal paid for this worker's work. The broker takes it from `credential` and
    /// refuses a registration whose `owner` differs: it is here so a log line reads well.
    pub owner: String,
    /// The worker's own user JWT (the first section of its `.creds` file; not a secret). The
    /// broker checks that the grid's account signed it and that it names this worker, and
    /// reads the owner from its tags.
    pub credential: String,
    pub ask: Ask,
    /// A fresh id each time the worker process starts (its periodic re-registrations repeat
    /// it): a registration under a new incarnation means the worker restarted, so a run the
    /// broker had awarded to the previous one is lost, even if no heartbeat was missed.
    #[serde(default)]
    pub incarnation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    /// How often the broker expects `agent.heartbeat`.
    pub heartbeat_ms: u64,
}

/// `agent.heartbeat` (publish).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub v: u32,
    #[serde(default)]
    pub running: Option<String>,
    /// Why the worker takes no jobs now, by its owner's terms ("outside the owner's hours
    /// 22:00–07:00", "the owner is using this machine (CPU 85 % busy)"): the registry does not
    /// invite a paused worker, and shows why in `WorkerView.paused`. Kept to
    /// [`crate::limits::MAX_NOTE_BYTES`].
    #[serde(default)]
    pub paused: Option<String>,
}

/// `auction.invite` (request): a sealed-bid invitation. It carries what a worker needs to
/// decide whether it can run the job (device, memory) and to estimate its time (the declared
/// work), and nothing of what the researcher would pay: with the budget, a bidder could bid
/// exactly up to it; with the maximum price per hour or the deadline, it could inflate its
/// price or ETA up to them when it suspects it bids alone (a lone bid is paid its own cost).
/// The broker invites only workers whose ask is within the job's maximum price, and checks
/// every bid against all the job's constraints itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invite {
    pub v: u32,
    pub job_id: String,
    pub auction_id: String,
    /// The field keeps its name from before invites dropped the money: a worker of this version
    /// reads an older broker's invite too (its extra fields are ignored). A worker built
    /// before cannot read this one (it misses `max_price_per_hour` and `budget`) and so never
    /// bids: workers and broker upgrade together.
    pub requirements: InviteRequirements,
    pub work: DeclaredWork,
}

/// The part of a job's [`Requirements`] an invitee sees: what the machine must offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InviteRequirements {
    #[serde(default)]
    pub device: DeviceKind,
    #[serde(default)]
    pub min_memory_bytes: u64,
}

impl From<&Requirements> for InviteRequirements {
    fn from(r: &Requirements) -> Self {
        InviteRequirements {
            device: r.device,
            min_memory_bytes: r.min_memory_bytes,
        }
    }
}

/// The reply to an invite: a bid, or a decline with a reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BidReply {
    #[serde(default)]
    pub bid: Option<Bid>,
    #[serde(default)]
    pub decline: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bid {
    pub price_per_hour: u64,
    pub eta_secs: f64,
}

/// `job.award` (request): the winner is told to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Award {
    pub v: u32,
    pub job_id: String,
    pub award_id: String,
    pub training: TrainingSpec,
    pub work: DeclaredWork,
    pub model: ArtifactInfo,
    pub data: ArtifactInfo,
    /// Contract price in micro-credits.
    pub price: u64,
    #[serde(default)]
    pub deadline_ms: u64,
    /// A checkpoint to continue from (the job moved here from a lost worker); the run then
    /// trains only the epochs after the checkpoint's.
    #[serde(default)]
    pub resume: Option<ArtifactInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwardAck {
    pub accepted: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `job.cancel` (request) to a worker: stop the run now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRun {
    pub v: u32,
    pub job_id: String,
    pub award_id: String,
}

/// `job.settled` (plain publish, at most once) to a worker: its award ended and was settled.
/// Informational: the ledger is the record of what was paid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settled {
    pub v: u32,
    pub job_id: String,
    pub award_id: String,
    /// Micro-credits paid to the worker's owner for this award.
    pub paid: u64,
    /// Micro-credits of the hold returned to the researcher.
    pub refunded: u64,
    /// Optimizer steps of the award paid for, of `steps`.
    pub paid_steps: u64,
    pub steps: u64,
}

/// How one invitation to an auction ended for the invited worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Its bid won: an award follows.
    Won,
    /// It bid, and another bid won (or the job went unawarded for want of a qualifying bid).
    Lost,
    /// It answered without a bid (busy, not enough memory, …): the worker's own reason.
    Declined,
    /// Its bid did not take part: out of bounds, or faster than its own ask allows.
    Refused,
    /// No answer within the bid window.
    NoAnswer,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Won => "won",
            Verdict::Lost => "lost",
            Verdict::Declined => "declined",
            Verdict::Refused => "refused",
            Verdict::NoAnswer => "no_answer",
        }
    }
}

/// `auction.result` (broker → worker, publish) and one entry of `worker.log`: how an
/// invitation ended for this worker, and why, in words an owner reads ("outbid: 1.200000
/// against your 1.500000 credits/h", "needs 16.0 GiB, this worker has 8.0"). The broker sends
/// it to a worker that bid and did not win ([`Verdict::Lost`], [`Verdict::Refused`]); the
/// registry keeps the last ones of every verdict for its owner's `worker.log`. The winning
/// bid's price and cost are revealed to losers once the auction closed (never the winner's
/// id): what a bidder needs to see where the market clears.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuctionNote {
    pub v: u32,
    pub job_id: String,
    /// When the auction closed, unix milliseconds.
    pub at_ms: u64,
    pub verdict: Verdict,
    pub reason: String,
    /// This worker's bid, when it bid: micro-credits per hour, and its estimated cost.
    #[serde(default)]
    pub price_per_hour: Option<u64>,
    #[serde(default)]
    pub cost: Option<u64>,
    /// The winning bid, when another worker won.
    #[serde(default)]
    pub winning_price_per_hour: Option<u64>,
    #[serde(default)]
    pub winning_cost: Option<u64>,
}

/// `run.event` (JetStream publish, durable): what happens to an awarded run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    pub v: u32,
    pub job_id: String,
    pub award_id: String,
    #[serde(flatten)]
    pub kind: RunEventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunEventKind {
    Started {
        device: String,
        /// Parameters of the loaded model, so the broker can hold the job to its declared work
        /// (the price was computed from it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parameters: Option<u64>,
    },
    /// One epoch done: its metrics. Progress alone earns nothing; checkpoints do.
    Progress {
        epoch: u32,
        epochs: u32,
        step: u64,
        loss: f64,
        samples_per_sec: f64,
        /// On the job's validation split (`x_val`, `y_val`), when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        val_loss: Option<f64>,
        /// Only for classification losses.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        val_accuracy: Option<f64>,
    },
    /// A checkpoint after optimizer step `step` (`epoch` epochs complete) was uploaded as
    /// `checkpoint`, and the broker verified its bytes on commit. It is what the worker is paid
    /// for if the run does not finish, and where the job resumes.
    Checkpoint {
        step: u64,
        epoch: u32,
        checkpoint: ArtifactInfo,
    },
    /// Training finished and `result` was uploaded and verified.
    Completed {
        result: ArtifactInfo,
    },
    /// The run stopped. `worker_fault` says the worker itself failed (an artifact transfer,
    /// the trainer process dying without a reason): the job moves to another worker. Otherwise
    /// the model or data failed training and the job fails.
    Failed {
        reason: String,
        #[serde(default)]
        worker_fault: bool,
    },
    Cancelled,
}

impl RunEventKind {
    /// The event's `kind` tag as it appears on the wire (`started`, `progress`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Started { .. } => "started",
            Self::Progress { .. } => "progress",
            Self::Checkpoint { .. } => "checkpoint",
            Self::Completed { .. } => "completed",
            Self::Failed { .. } => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode, PROTOCOL_VERSION};

    #[test]
    fn run_events_are_flat_tagged_maps() {
        let ev = RunEvent {
            v: PROTOCOL_VERSION,
            job_id: "j".into(),
            award_id: "a".into(),
            kind: RunEventKind::Failed {
                reason: "boom".into(),
                worker_fault: false,
            },
        };
        let back: RunEvent = decode(&encode(&ev)).unwrap();
        assert_eq!(back, ev);
        let as_map: std::collections::BTreeMap<String, rmpv_like::Value> = rmp_serde::from_slice(&encode(&ev)).unwrap();
        assert_eq!(as_map.get("kind"), Some(&rmpv_like::Value::S(ev.kind.name().into())));
    }

    /// The invitation names no money and no deadline, at any depth; and a worker reads an
    /// invite of the broker before (which carried the job's whole `Requirements`).
    #[test]
    fn an_invite_names_no_budget_price_or_deadline_and_reads_the_older_shape() {
        use crate::job::{DeviceKind, Requirements};
        use serde::de::IgnoredAny;
        use std::collections::BTreeMap;
        let requirements = Requirements {
            device: DeviceKind::Cuda,
            min_memory_bytes: 16 << 30,
            max_price_per_hour: 2_000_000,
            budget: 123_456_789,
            deadline_ms: 42,
        };
        let work = DeclaredWork {
            parameters: 10,
            samples: 20,
            epochs: 3,
        };
        let invite = Invite {
            v: PROTOCOL_VERSION,
            job_id: "j".into(),
            auction_id: "a".into(),
            requirements: (&requirements).into(),
            work,
        };
        let bytes = encode(&invite);
        #[derive(serde::Deserialize)]
        struct Shape {
            requirements: BTreeMap<String, IgnoredAny>,
        }
        let top: BTreeMap<String, IgnoredAny> = rmp_serde::from_slice(&bytes).unwrap();
        let inner = rmp_serde::from_slice::<Shape>(&bytes).unwrap().requirements;
        let keys: Vec<&str> = top.keys().chain(inner.keys()).map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "auction_id",
                "job_id",
                "requirements",
                "v",
                "work",
                "device",
                "min_memory_bytes"
            ]
        );
        // The budget's digits appear nowhere in the bytes.
        let budget = requirements.budget.to_be_bytes();
        assert!(!bytes.windows(4).any(|w| w == &budget[4..]));

        #[derive(serde::Serialize)]
        struct Before<'a> {
            v: u32,
            job_id: &'a str,
            auction_id: &'a str,
            requirements: &'a Requirements,
            work: DeclaredWork,
        }
        let old = encode(&Before {
            v: PROTOCOL_VERSION,
            job_id: "j",
            auction_id: "a",
            requirements: &requirements,
            work,
        });
        let read: Invite = decode(&old).unwrap();
        assert_eq!((read.requirements, read.work), (invite.requirements, work));
    }

    /// Just enough of a dynamic value to look at the encoded map's keys.
    mod rmpv_like {
        #[derive(Debug, PartialEq, serde::Deserialize)]
        #[serde(untagged)]
        pub enum Value {
            U(u64),
            B(bool),
            S(String),
        }
    }
}
