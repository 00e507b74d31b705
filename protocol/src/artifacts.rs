//! Chunked artifact transfer over NATS. Uploads are `begin` → `chunk`* → `commit`, in order,
//! each chunk acknowledged (so memory stays bounded and a client can resume from the offset the
//! broker reports). Downloads are pulled chunk by chunk with `read`. SHA-256 is declared up
//! front and verified by the broker on commit, and by the reader after the last chunk.

use serde::{Deserialize, Serialize};

/// Names a job's artifact: `model`, `data`, `result` or `checkpoints/<step>`.
pub const MODEL: &str = "model";
pub const DATA: &str = "data";
pub const RESULT: &str = "result";
pub const CHECKPOINTS: &str = "checkpoints/";

/// Starts an upload. A researcher uploads to staging (no `job_id`) and names the upload in
/// `job.submit`; a worker uploads `result` or `checkpoints/<step>` of a job awarded to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BeginUpload {
    pub v: u32,
    #[serde(default)]
    pub job_id: Option<String>,
    pub name: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the whole artifact.
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UploadStarted {
    pub upload_id: String,
    /// Largest chunk the broker accepts.
    pub max_chunk: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadChunk {
    pub v: u32,
    pub upload_id: String,
    /// Must equal the bytes received so far; a mismatch is refused with the expected offset.
    pub offset: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChunkAck {
    pub received: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitUpload {
    pub v: u32,
    pub upload_id: String,
}

/// A stored, verified artifact.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArtifactInfo {
    /// Upload id (staging) or artifact name within the job.
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadArtifact {
    pub v: u32,
    pub job_id: String,
    pub name: String,
    pub offset: u64,
    /// At most [`crate::limits::MAX_CHUNK_BYTES`].
    pub len: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArtifactChunk {
    pub offset: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Size of the whole artifact, so the reader knows when it is done.
    pub size: u64,
    pub sha256: String,
}
