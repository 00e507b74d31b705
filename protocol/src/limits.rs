//! Sizes that both sides of a chunked transfer agree on. A chunk is as large as the NATS
//! server lets a message be (its `max_payload`, 1 MiB by default, the local grid's 8 MiB),
//! less room for the envelope, up to [`MAX_CHUNK_BYTES`]; senders keep [`TRANSFER_WINDOW`]
//! chunks in flight, so a transfer is not one round trip per chunk.

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
