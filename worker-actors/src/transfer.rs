//! Artifact transfer for the worker over the broker's worker gateway: chunked download with
//! SHA-256 verification into a file, chunked upload of a file with its digest declared up
//! front. [`TRANSFER_WINDOW`] requests are in flight at a time, chunks as large as the server's
//! max payload allows; memory stays bounded by that many chunks.

use std::path::Path;

use bytes::Bytes;
use futures::{stream::FuturesOrdered, StreamExt};
use helium_protocol::{
    artifacts::{
        ArtifactChunk, ArtifactInfo, BeginUpload, ChunkAck, CommitUpload, ReadArtifact, UploadChunk, UploadStarted,
    },
    decode, encode,
    limits::{chunk_for_payload, TRANSFER_WINDOW},
    subjects::{self, worker},
    Reply, WireError, PROTOCOL_VERSION,
};
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

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

impl TransferError {
    /// The broker did not answer, or said it cannot now (it is restarting): the same transfer
    /// may succeed later. Refusals, file errors and digest mismatches will not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Nats(_) => true,
            Self::Refused(e) => e.code == helium_protocol::ErrorCode::Unavailable,
            Self::Io(_) | Self::Digest { .. } => false,
        }
    }
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

/// Downloads `name` of `job_id` into `dest` (a file the caller created, see
/// [`crate::jobfs::create`]), verifying the digest `expected` announced.
pub async fn download(
    nats: &async_nats::Client,
    worker_id: &str,
    job_id: &str,
    expected: &ArtifactInfo,
    dest: std::fs::File,
) -> Result<(), TransferError> {
    let chunk = chunk_for_payload(nats.max_payload() as u64);
    // The size is the job record's, never a replier's.
    let size = expected.size;
    let mut file = tokio::fs::File::from_std(dest);
    let mut hasher = Sha256::new();
    let mut inflight = FuturesOrdered::new();
    let mut next = 0u64;
    loop {
        while inflight.len() < TRANSFER_WINDOW && next < size {
            let read = ReadArtifact {
                v: PROTOCOL_VERSION,
                job_id: job_id.into(),
                name: expected.name.clone(),
                offset: next,
                len: chunk.min(size - next),
            };
            next += read.len;
            inflight.push_back(read_chunk(nats.clone(), worker_id.to_string(), read, size));
        }
        let Some(data) = inflight.next().await else { break };
        let data = data?;
        hasher.update(&data);
        file.write_all(&data).await?;
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

/// One `artifact.read`, checked to be exactly the bytes asked for.
async fn read_chunk(
    nats: async_nats::Client,
    worker_id: String,
    read: ReadArtifact,
    size: u64,
) -> Result<Vec<u8>, TransferError> {
    let got: ArtifactChunk = request(&nats, &worker_id, worker::ARTIFACT_READ, &read).await?;
    if got.offset != read.offset || got.size != size || got.data.len() as u64 != read.len {
        return Err(TransferError::Nats(format!(
            "broker sent {} bytes at {} of {} for {} bytes at {} of {size}",
            got.data.len(),
            got.offset,
            got.size,
            read.len,
            read.offset
        )));
    }
    Ok(got.data)
}

/// SHA-256 and size of a file, streamed.
pub async fn digest_file(path: &Path) -> Result<(String, u64), TransferError> {
    let mut file = tokio::fs::File::open(path).await?;
    digest(&mut file).await
}

/// SHA-256 and size of what is left of `file`, streamed.
async fn digest(file: &mut tokio::fs::File) -> Result<(String, u64), TransferError> {
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

/// Uploads `file` (opened by [`crate::jobfs::open`]) as artifact `name` of `job_id`; the
/// broker verifies size and digest. The bytes hashed and the bytes sent are read from the
/// same open file.
pub async fn upload(
    nats: &async_nats::Client,
    worker_id: &str,
    job_id: &str,
    name: &str,
    file: std::fs::File,
) -> Result<ArtifactInfo, TransferError> {
    let mut file = tokio::fs::File::from_std(file);
    let (sha256, size) = digest(&mut file).await?;
    file.seek(std::io::SeekFrom::Start(0)).await?;
    let begin = BeginUpload {
        v: PROTOCOL_VERSION,
        job_id: Some(job_id.into()),
        name: name.into(),
        size,
        sha256,
    };
    let started: UploadStarted = request(nats, worker_id, worker::ARTIFACT_BEGIN, &begin).await?;
    let chunk_len = started
        .max_chunk
        .min(chunk_for_payload(nats.max_payload() as u64))
        .max(1) as usize;
    // The file is read a chunk at a time as the window frees up: memory stays bounded by it.
    let mut inflight = FuturesOrdered::new();
    let mut offset = 0u64;
    let mut eof = false;
    loop {
        while inflight.len() < TRANSFER_WINDOW && !eof {
            let mut data = vec![0u8; chunk_len];
            let n = read_full(&mut file, &mut data).await?;
            if n == 0 {
                eof = true;
                break;
            }
            data.truncate(n);
            let chunk = UploadChunk {
                v: PROTOCOL_VERSION,
                upload_id: started.upload_id.clone(),
                offset,
                data,
            };
            offset += n as u64;
            let (nats, worker_id) = (nats.clone(), worker_id.to_string());
            inflight.push_back(async move {
                request::<_, ChunkAck>(&nats, &worker_id, worker::ARTIFACT_CHUNK, &chunk).await
            });
        }
        match inflight.next().await {
            Some(ack) => {
                ack?;
            }
            None => break,
        }
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
