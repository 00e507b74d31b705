//! Artifact transfer for the worker over the broker's worker gateway: chunked download with
//! SHA-256 verification into a file, chunked upload of a file with its digest declared up
//! front. Memory stays bounded by one chunk.

use std::path::Path;

use bytes::Bytes;
use helium_protocol::{
    artifacts::{
        ArtifactChunk, ArtifactInfo, BeginUpload, ChunkAck, CommitUpload, ReadArtifact, UploadChunk, UploadStarted,
    },
    decode, encode,
    limits::DEFAULT_CHUNK_BYTES,
    subjects::{self, worker},
    Reply, WireError, PROTOCOL_VERSION,
};
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("broker refused: {0}")]
    Refused(#[from] WireError),
    #[error("NATS request failed: {0}")]
    Nats(String),
    #[error("file: {0}")]
    Io(#[from] std::io::Error),
    #[error("{name}: SHA-256 is {actual}, expected {expected}")]
    Digest {
        name: String,
        actual: String,
        expected: String,
    },
}

/// Sends a request on the worker's own subject and unwraps the reply envelope.
pub async fn request<Req: Serialize, Resp: DeserializeOwned>(
    nats: &async_nats::Client,
    worker_id: &str,
    verb: &str,
    body: &Req,
) -> Result<Resp, TransferError> {
    let subject = subjects::worker(worker_id, verb);
    let message = nats
        .request(subject, Bytes::from(encode(body)))
        .await
        .map_err(|e| TransferError::Nats(e.to_string()))?;
    Ok(decode::<Reply<Resp>>(&message.payload)?.into_result()?)
}

/// Downloads `name` of `job_id` to `dest`, verifying the digest `expected` announced.
pub async fn download(
    nats: &async_nats::Client,
    worker_id: &str,
    job_id: &str,
    expected: &ArtifactInfo,
    dest: &Path,
) -> Result<(), TransferError> {
    let mut file = tokio::fs::File::create(dest).await?;
    let mut hasher = Sha256::new();
    let mut offset = 0;
    loop {
        let read = ReadArtifact {
            v: PROTOCOL_VERSION,
            job_id: job_id.into(),
            name: expected.name.clone(),
            offset,
            len: DEFAULT_CHUNK_BYTES,
        };
        let chunk: ArtifactChunk = request(nats, worker_id, worker::ARTIFACT_READ, &read).await?;
        if chunk.offset != offset || (chunk.data.is_empty() && offset < chunk.size) {
            return Err(TransferError::Nats(format!(
                "broker sent chunk at {} for offset {offset}",
                chunk.offset
            )));
        }
        hasher.update(&chunk.data);
        file.write_all(&chunk.data).await?;
        offset += chunk.data.len() as u64;
        if offset >= chunk.size {
            break;
        }
    }
    file.flush().await?;
    let actual = hex::encode(hasher.finalize());
    if actual != expected.sha256 {
        return Err(TransferError::Digest {
            name: expected.name.clone(),
            actual,
            expected: expected.sha256.clone(),
        });
    }
    Ok(())
}

/// SHA-256 and size of a file, streamed.
pub async fn digest_file(path: &Path) -> Result<(String, u64), TransferError> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// Uploads `path` as artifact `name` of `job_id`; the broker verifies size and digest.
pub async fn upload(
    nats: &async_nats::Client,
    worker_id: &str,
    job_id: &str,
    name: &str,
    path: &Path,
) -> Result<ArtifactInfo, TransferError> {
    let (sha256, size) = digest_file(path).await?;
    let begin = BeginUpload {
        v: PROTOCOL_VERSION,
        job_id: Some(job_id.into()),
        name: name.into(),
        size,
        sha256,
    };
    let started: UploadStarted = request(nats, worker_id, worker::ARTIFACT_BEGIN, &begin).await?;
    let chunk_len = started.max_chunk.min(DEFAULT_CHUNK_BYTES) as usize;
    let mut file = tokio::fs::File::open(path).await?;
    let mut buf = vec![0u8; chunk_len];
    let mut offset = 0u64;
    loop {
        let n = read_full(&mut file, &mut buf).await?;
        if n == 0 {
            break;
        }
        let chunk = UploadChunk {
            v: PROTOCOL_VERSION,
            upload_id: started.upload_id.clone(),
            offset,
            data: buf[..n].to_vec(),
        };
        let ack: ChunkAck = request(nats, worker_id, worker::ARTIFACT_CHUNK, &chunk).await?;
        offset = ack.received;
    }
    let commit = CommitUpload {
        v: PROTOCOL_VERSION,
        upload_id: started.upload_id,
    };
    let info: ArtifactInfo = request(nats, worker_id, worker::ARTIFACT_COMMIT, &commit).await?;
    Ok(ArtifactInfo {
        name: name.into(),
        ..info
    })
}

async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}
