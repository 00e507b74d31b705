//! Every number that bounds what crosses a process boundary, in one place: chunk sizes both
//! sides of a transfer agree on, caps on strings and values in messages (checked by
//! [`crate::validate`]), the broker's default quotas, and the limits of its streams and bucket.
//!
//! A chunk is as large as the NATS server lets a message be (its `max_payload`, 1 MiB by
//! default, the local grid's 8 MiB), less room for the envelope, up to [`MAX_CHUNK_BYTES`];
//! senders keep [`TRANSFER_WINDOW`] chunks in flight, so a transfer is not one round trip per
//! chunk.

/// Largest data field of one artifact chunk, upload or download.
pub const MAX_CHUNK_BYTES: u64 = 4 * 1024 * 1024;
/// Room a chunk leaves in a message for its MessagePack envelope and NATS headers.
pub const CHUNK_HEADROOM_BYTES: u64 = 64 * 1024;
/// Chunks a sender (or reader) keeps in flight.
pub const TRANSFER_WINDOW: usize = 4;
/// Chunks beyond the next expected one a receiver holds while earlier ones are on their way:
/// requests of one window may be handled out of order.
pub const REORDER_CHUNKS: u64 = TRANSFER_WINDOW as u64;
/// Default largest artifact the broker accepts (the broker's `--max-artifact-bytes`).
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Micro-credits in one credit: all amounts on the wire and in the ledger are integers.
pub const MICRO_PER_CREDIT: u64 = 1_000_000;

// ---- Strings and values in messages ([`crate::validate`]) ----

/// Longest id (principal, worker, job, award, upload): one subject token, never a path.
pub const MAX_ID_BYTES: usize = 64;
/// Longest failure reason (or other free text a peer sends that a person reads). Longer ones
/// are truncated, not refused, so that a run that failed with a huge message still settles.
pub const MAX_REASON_BYTES: usize = 4096;
/// Most bytes of a worker's own words the broker keeps per note: a decline's reason in an
/// auction note, a heartbeat's `paused` (longer ones are truncated; the registry keeps 64
/// notes per worker).
pub const MAX_NOTE_BYTES: usize = 256;
/// Longest `device_name` of an ask, and `device` of a `started` run event.
pub const MAX_DEVICE_NAME_BYTES: usize = 128;
/// Most device memory an ask may claim (64 TiB: more than any machine offers today).
pub const MAX_DEVICE_MEMORY_BYTES: u64 = 64 << 40;
/// Most parameter-samples per second an ask may claim (1e16: ~100× an H200's bf16 peak
/// divided by the ~6 FLOPs a parameter-sample costs). An ask over it would rank first in
/// every auction on a claim no machine can meet.
pub const MAX_THROUGHPUT: f64 = 1e16;
/// Highest price per device-hour an ask or a bid may name: a million credits.
pub const MAX_PRICE_PER_HOUR: u64 = 1_000_000 * MICRO_PER_CREDIT;
/// Longest ETA a bid may quote: a year.
pub const MAX_ETA_SECS: f64 = 365.0 * 24.0 * 3600.0;
/// Shortest ETA a bid may quote: the fixed overhead every estimate includes
/// ([`crate::job::FIXED_OVERHEAD_SECS`]). A shorter one cannot be honest, and an ETA of 0
/// would cost 0 and win every auction.
pub const MIN_ETA_SECS: f64 = crate::job::FIXED_OVERHEAD_SECS;
/// How much faster than its own standing ask a bid may say it computes: a bid's ETA less the
/// fixed overhead must be at least the declared work over `MAX_BID_SPEEDUP ×` the ask's
/// throughput. Room for a benchmark that undersold the machine (a cold start, a small probe
/// model), not for an ETA chosen to win: the cost ranked is price × ETA, and the contract
/// price does not depend on how long the run really takes.
pub const MAX_BID_SPEEDUP: f64 = 4.0;
/// Longest line the worker agent reads from its trainer child; longer lines are dropped
/// (the trainer's own lines are far shorter: its reasons are truncated to [`MAX_REASON_BYTES`]).
pub const MAX_CHILD_LINE_BYTES: usize = 64 * 1024;

/// Most lines one `account.statement` reply holds (also its default `limit`): about 250 KiB
/// of MessagePack with the grid's job ids (a line is some 250 bytes; 400 with 64-character
/// ids and memos). A client pages through a longer statement with `since_seq`.
pub const MAX_STATEMENT_LINES: u32 = 1_000;
/// Most bytes of lines one `account.statement` reply holds, when the server's `max_payload`
/// less [`CHUNK_HEADROOM_BYTES`] is not smaller. One journal entry's lines are never split, so
/// a reply whose first entry alone is larger holds that entry whole (at most 1,024 transfers
/// of 256 KiB in all, PROTOCOL §10).
pub const MAX_STATEMENT_BYTES: usize = 512 * 1024;

// ---- Quotas (broker flags; these are the defaults) ----

/// Jobs one researcher may have open (not finished) at once (`--max-open-jobs`).
pub const DEFAULT_MAX_OPEN_JOBS: usize = 1024;
/// Bytes one researcher may have in staging (uploads begun or committed, not yet claimed by
/// a job) at once (`--max-staged-bytes`): eight of the largest artifacts.
pub const DEFAULT_MAX_STAGED_BYTES: u64 = 8 * DEFAULT_MAX_ARTIFACT_BYTES;
/// Checkpoint uploads one award may begin (`--max-checkpoints-per-award`): a checkpoint every
/// 30 s (the default interval) for over 17 hours.
pub const DEFAULT_MAX_CHECKPOINTS_PER_AWARD: u32 = 2048;

// ---- JetStream streams and the job bucket ----

/// Largest message of the events and runs streams (events carry reasons of at most
/// [`MAX_REASON_BYTES`]; nothing else in them is large).
pub const MAX_EVENT_MESSAGE_BYTES: i32 = 64 * 1024;
/// Events kept per job (`helium.v1.events.<principal>.<job>`); the oldest go first. A job
/// publishes about one per epoch, so only jobs of over ~20 000 epochs lose early progress.
pub const MAX_EVENTS_PER_JOB: i64 = 20_000;
/// Run events kept per worker subject (they are consumed within seconds; the rest is history).
pub const MAX_RUN_EVENTS_PER_WORKER: i64 = 10_000;
/// Largest job record in the `helium_jobs` bucket. A submission whose record would come
/// within [`JOB_RECORD_GROWTH_BYTES`] of it is refused (`too_large`), so that no later update
/// (a reason, checkpoints, an award) can exceed it.
pub const MAX_JOB_RECORD_BYTES: i32 = 512 * 1024;
/// Room a record keeps for what a job adds to it after submit.
pub const JOB_RECORD_GROWTH_BYTES: usize = 64 * 1024;
/// Revisions the job bucket keeps per key.
pub const JOB_RECORD_HISTORY: i64 = 5;
/// Default byte limits of the streams and the bucket (broker flags). nats-server reserves a
/// stream's `max_bytes` from its storage at creation, so the defaults fit a small disk.
pub const DEFAULT_EVENTS_MAX_BYTES: i64 = 1 << 30;
pub const DEFAULT_RUNS_MAX_BYTES: i64 = 1 << 30;
pub const DEFAULT_JOBS_MAX_BYTES: i64 = 2 << 30;
/// The ledger journal never discards: when full it refuses appends (transfers fail
/// `unavailable`) rather than lose an entry. 4 GiB is some 15 million transfers.
pub const DEFAULT_LEDGER_MAX_BYTES: i64 = 4 << 30;

// ---- Credentials: what nats-server lets one connection spend (`auth`) ----
//
// Written into the JWTs `helium creds` issues; nats-server enforces them. It applies a user's
// `subs` and `payload` to each connection of that user, and the account's `subs` and `payload`
// to each connection of the account too (the smaller wins), so the account's figures bind the
// broker as well; the account's `conn` counts every connection of the account. A user JWT's
// `data` field is not enforced by nats-server (2.10, 2.11), so none is written: there is no
// bandwidth cap per credential.

/// Largest message a researcher, operator or worker sends: an artifact chunk at its largest
/// with its envelope. Chunks never exceed [`MAX_CHUNK_BYTES`] whatever the server's
/// `max_payload`, so a connection never needs more; the broker's is the server's.
pub const PRINCIPAL_MAX_PAYLOAD_BYTES: i64 = (MAX_CHUNK_BYTES + CHUNK_HEADROOM_BYTES) as i64;
/// Subscriptions one researcher or operator connection may hold: the client's request inbox,
/// one per job it follows at once (`job.follow`), the nats CLI's few. A notebook following
/// more jobs at once opens a second connection.
pub const RESEARCHER_MAX_SUBS: i64 = 256;
/// Subscriptions one worker connection may hold: its dispatch subject and its request inbox;
/// the rest is room.
pub const WORKER_MAX_SUBS: i64 = 32;
/// Subscriptions any one connection of the account may hold, the broker's included (its
/// micro-service endpoints, heartbeats, its request inbox: some dozens). nats-server applies
/// the account's `subs` per connection, not to the account's total.
pub const ACCOUNT_MAX_SUBS_PER_CONNECTION: i64 = 16_384;
/// Connections the whole `HELIUM` account may hold at once: the broker's, one per worker and
/// per open notebook or CLI. Below nats-server's own `max_connections` (64K by default), so a
/// full account still leaves room for the system account, through which the operator revokes
/// whoever filled it.
pub const ACCOUNT_MAX_CONNECTIONS: i64 = 10_000;
/// Leaf-node connections into the account: Helium uses none.
pub const ACCOUNT_MAX_LEAF_NODES: i64 = 0;
/// How long a credential may answer a request it received (the JWT's response permission),
/// once. Who answers whom: a worker answers the broker's invitation (the broker waits the bid
/// window, 1.5 s by default), award (10 s) and cancel; a researcher answers JetStream's flow
/// control on its followed events (at once). An answer later than the asker waits is never
/// read; the broker's `--bid-window-ms` must stay below this.
pub const RESPONSE_TTL_SECS: u64 = 30;
/// Answers per request received.
pub const RESPONSE_MAX_MESSAGES: i64 = 1;

// ---- Credential lifetimes (`helium creds issue --expires`; these are the defaults) ----

/// A researcher's credential: a person's file on a laptop or in a notebook server; a leaked
/// one stops working by itself within a quarter. Renewal is one `helium creds issue`.
pub const RESEARCHER_CREDENTIAL_SECS: u64 = 90 * 24 * 3600;
/// An operator's credential mints credits: the shortest lifetime.
pub const OPERATOR_CREDENTIAL_SECS: u64 = 30 * 24 * 3600;
/// A worker's credential sits on its owner's machine unattended; nats-server drops the
/// connection when it expires (the job in hand is resumed elsewhere), so the owner renews it
/// ahead.
pub const WORKER_CREDENTIAL_SECS: u64 = 90 * 24 * 3600;
// The broker's credential does not expire by default: its expiry would stop the grid, and it
// lives next to the keys that could issue another.

/// Micro-credits as credits, for people to read (never for arithmetic: amounts stay integers).
pub fn credits(micro: u64) -> f64 {
    micro as f64 / MICRO_PER_CREDIT as f64
}

/// The chunk size for a connection whose server takes messages of up to `max_payload` bytes.
pub fn chunk_for_payload(max_payload: u64) -> u64 {
    max_payload
        .saturating_sub(CHUNK_HEADROOM_BYTES)
        .clamp(4096, MAX_CHUNK_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_fit_the_server_payload() {
        assert_eq!(chunk_for_payload(1024 * 1024), 1024 * 1024 - CHUNK_HEADROOM_BYTES);
        assert_eq!(chunk_for_payload(8 * 1024 * 1024), MAX_CHUNK_BYTES);
        assert_eq!(chunk_for_payload(0), 4096);
    }
}
