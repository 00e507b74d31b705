//! Sizes that both sides of a chunked transfer agree on. Chunks stay well below nats-server's
//! default `max_payload` (1 MiB) so a message never bounces, whatever the deployment.

/// Largest data field of one artifact chunk, upload or download.
pub const MAX_CHUNK_BYTES: u64 = 512 * 1024;
/// Default chunk size clients use.
pub const DEFAULT_CHUNK_BYTES: u64 = 256 * 1024;
/// Default largest artifact the broker accepts (the broker's `--max-artifact-bytes`).
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Micro-credits in one credit: all amounts on the wire and in the ledger are integers.
pub const MICRO_PER_CREDIT: u64 = 1_000_000;
