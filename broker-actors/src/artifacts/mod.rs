//! The Artifacts actor: chunked, digest-checked uploads into the object store. An upload is
//! `begin` (declares size and SHA-256) → `chunk`s (streamed into a multipart upload in offset
//! order; a sender keeps a window of chunks in flight, and chunks that arrive ahead of the
//! next expected offset wait, at most [`REORDER_CHUNKS`] of them, so memory stays bounded by
//! one part and that many chunks per upload) → `commit` (size and digest verified, the object
//! published, or deleted on mismatch). A worker's result or checkpoint must moreover be a
//! state file matching the job's model ([`state_check`]): its first bytes are kept as they
//! stream through, and the header is checked before the object is published. Researchers' uploads wait in staging until a job
//! claims them; workers upload straight to their job's keys. Reads need no state and are served
//! by the gateways straight from [`Store`].

pub mod inspect;
pub mod state_check;
pub mod store;

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use helium_protocol::{
    artifacts::{ArtifactInfo, ChunkAck, UploadChunk, UploadStarted},
    limits::REORDER_CHUNKS,
    subjects::keys,
    ErrorCode, WireError,
};
use object_store::{ObjectStoreExt, WriteMultipart};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use sha2::{Digest, Sha256};

pub use store::{Store, StoreError};

/// Multipart part size: S3's minimum, and the most an upload buffers.
const PART_BYTES: usize = 5 * 1024 * 1024;
/// Open uploads one caller may have at once (bounds broker memory).
const MAX_OPEN_PER_CALLER: usize = 16;
/// A committed staging upload that no job claims within this long is deleted.
const STAGED_TTL: Duration = Duration::from_secs(3600);
/// An upload with no chunk for this long is aborted.
const IDLE_UPLOAD: Duration = Duration::from_secs(600);

/// Who uploads: identities come from the subject, never from the payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    Researcher(String),
    Worker(String),
}

/// Where a committed upload goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// `staging/<principal>/<upload id>`, claimed later by `job.submit`.
    Staging,
    /// A job's key, decided (and authorised) by the caller of the actor.
    Key(String),
    /// A job's result or checkpoint key: stored only if it passes [`state_check::check`].
    State(String, state_check::Expect),
}

pub enum ArtifactsMsg {
    Begin {
        caller: Caller,
        target: Target,
        size: u64,
        sha256: String,
        reply: RpcReplyPort<Result<UploadStarted, WireError>>,
    },
    Chunk {
        caller: Caller,
        chunk: UploadChunk,
        reply: RpcReplyPort<Result<ChunkAck, WireError>>,
    },
    /// Replies the object key and what was stored.
    Commit {
        caller: Caller,
        upload_id: String,
        reply: RpcReplyPort<Result<(String, ArtifactInfo), WireError>>,
    },
    /// Moves a committed staging upload of `principal` to `dest_key`.
    Claim {
        principal: String,
        upload_id: String,
        dest_key: String,
        reply: RpcReplyPort<Result<ArtifactInfo, WireError>>,
    },
    ExpireIdle,
    /// The object key an open upload of `caller` will be committed to.
    KeyOf {
        caller: Caller,
        upload_id: String,
        reply: RpcReplyPort<Result<String, WireError>>,
    },
    /// Drops an open upload without storing it.
    Abort {
        caller: Caller,
        upload_id: String,
    },
}

struct Upload {
    caller: Caller,
    key: String,
    size: u64,
    sha256: String,
    received: u64,
    /// Chunks that arrived ahead of `received`, by offset.
    ahead: BTreeMap<u64, Vec<u8>>,
    hasher: Sha256,
    writer: WriteMultipart,
    touched: Instant,
    /// For a state file: what it must match, and its first bytes (up to the header bound).
    expect: Option<state_check::Expect>,
    head: Vec<u8>,
}

/// A committed researcher upload waiting for `job.submit` to claim it.
struct Staged {
    owner: String,
    info: ArtifactInfo,
    since: Instant,
}

pub struct Artifacts;

pub struct ArtifactsArgs {
    pub store: Store,
    pub max_artifact_bytes: u64,
    /// Most bytes one researcher may have in staging at once (begun or committed uploads
    /// no job claimed yet).
    pub max_staged_bytes: u64,
    /// Largest chunk accepted: what the NATS server's max payload leaves room for.
    pub max_chunk: u64,
}

pub struct ArtifactsState {
    store: Store,
    max_artifact_bytes: u64,
    max_staged_bytes: u64,
    max_chunk: u64,
    uploads: HashMap<String, Upload>,
    /// Committed staging uploads: id → (owner, info).
    staged: HashMap<String, Staged>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

impl Actor for Artifacts {
    type Msg = ArtifactsMsg;
    type State = ArtifactsState;
    type Arguments = ArtifactsArgs;

    async fn pre_start(
        &self,
        me: ActorRef<ArtifactsMsg>,
        args: ArtifactsArgs,
    ) -> Result<ArtifactsState, ActorProcessingErr> {
        me.send_interval(Duration::from_secs(60), || ArtifactsMsg::ExpireIdle);
        Ok(ArtifactsState {
            store: args.store,
            max_artifact_bytes: args.max_artifact_bytes,
            max_staged_bytes: args.max_staged_bytes,
            max_chunk: args.max_chunk,
            uploads: HashMap::new(),
            staged: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        _me: ActorRef<ArtifactsMsg>,
        msg: ArtifactsMsg,
        state: &mut ArtifactsState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ArtifactsMsg::Begin {
                caller,
                target,
                size,
                sha256,
                reply,
            } => {
                let _ = reply.send(state.begin(caller, target, size, sha256).await);
            }
            ArtifactsMsg::Chunk { caller, chunk, reply } => {
                let _ = reply.send(state.chunk(&caller, chunk).await);
            }
            ArtifactsMsg::Commit {
                caller,
                upload_id,
                reply,
            } => {
                let _ = reply.send(state.commit(&caller, &upload_id).await);
            }
            ArtifactsMsg::Claim {
                principal,
                upload_id,
                dest_key,
                reply,
            } => {
                let _ = reply.send(state.claim(&principal, &upload_id, &dest_key).await);
            }
            ArtifactsMsg::KeyOf {
                caller,
                upload_id,
                reply,
            } => {
                let _ = reply.send(state.upload_of(&caller, &upload_id).map(|u| u.key.clone()));
            }
            ArtifactsMsg::Abort { caller, upload_id } => {
                if state.upload_of(&caller, &upload_id).is_ok() {
                    if let Some(upload) = state.uploads.remove(&upload_id) {
                        let _ = upload.writer.abort().await;
                    }
                }
            }
            ArtifactsMsg::ExpireIdle => {
                let idle: Vec<String> = state
                    .uploads
                    .iter()
                    .filter(|(_, u)| u.touched.elapsed() > IDLE_UPLOAD)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in idle {
                    if let Some(upload) = state.uploads.remove(&id) {
                        tracing::info!(upload = %id, key = %upload.key, "aborting idle upload");
                        let _ = upload.writer.abort().await;
                    }
                }
                let unclaimed: Vec<String> = state
                    .staged
                    .iter()
                    .filter(|(_, s)| s.since.elapsed() > STAGED_TTL)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in unclaimed {
                    if let Some(staged) = state.staged.remove(&id) {
                        tracing::info!(upload = %id, owner = %staged.owner, "deleting an upload no job claimed");
                        let _ = state.store.delete(&keys::staging(&staged.owner, &id)).await;
                    }
                }
            }
        }
        Ok(())
    }
}

impl ArtifactsState {
    async fn begin(
        &mut self,
        caller: Caller,
        target: Target,
        size: u64,
        sha256: String,
    ) -> Result<UploadStarted, WireError> {
        if size > self.max_artifact_bytes {
            return Err(WireError::new(
                ErrorCode::TooLarge,
                format!(
                    "artifact of {:.1} MiB is over this grid's limit of {:.1} MiB",
                    mib(size),
                    mib(self.max_artifact_bytes)
                ),
            ));
        }
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(WireError::bad_request("sha256 must be 64 hex digits"));
        }
        if self.uploads.values().filter(|u| u.caller == caller).count() >= MAX_OPEN_PER_CALLER {
            return Err(WireError::new(
                ErrorCode::Conflict,
                format!("at most {MAX_OPEN_PER_CALLER} uploads may be open at once"),
            ));
        }
        if let (Target::Staging, Caller::Researcher(principal)) = (&target, &caller) {
            self.within_staging_quota(principal, size)?;
        }
        let upload_id = uuid::Uuid::now_v7().simple().to_string();
        let (key, expect) = match (target, &caller) {
            (Target::Staging, Caller::Researcher(principal)) => (keys::staging(principal, &upload_id), None),
            (Target::Key(key), _) => (key, None),
            (Target::State(key, expect), _) => (key, Some(expect)),
            (Target::Staging, Caller::Worker(_)) => {
                return Err(WireError::bad_request("workers upload to a job, not to staging"))
            }
        };
        let multipart = self
            .store
            .raw()
            .put_multipart(&self.store.path(&key))
            .await
            .map_err(|e| WireError::new(ErrorCode::Unavailable, format!("object store: {e}")))?;
        let writer = WriteMultipart::new_with_chunk_size(multipart, PART_BYTES);
        self.uploads.insert(
            upload_id.clone(),
            Upload {
                caller,
                key,
                size,
                sha256: sha256.to_ascii_lowercase(),
                received: 0,
                ahead: BTreeMap::new(),
                hasher: Sha256::new(),
                writer,
                touched: Instant::now(),
                expect,
                head: Vec::new(),
            },
        );
        Ok(UploadStarted {
            upload_id,
            max_chunk: self.max_chunk,
        })
    }

    /// A researcher's staged bytes (uploads begun to staging, and committed ones no job
    /// claimed yet) plus `size` stay within the quota; claims and expiry free them.
    fn within_staging_quota(&self, principal: &str, size: u64) -> Result<(), WireError> {
        let prefix = keys::staging(principal, "");
        let open: u64 = self
            .uploads
            .values()
            .filter(|u| u.key.starts_with(&prefix))
            .map(|u| u.size)
            .sum();
        let committed: u64 = self
            .staged
            .values()
            .filter(|s| s.owner == principal)
            .map(|s| s.info.size)
            .sum();
        let used = open.saturating_add(committed);
        if used.saturating_add(size) > self.max_staged_bytes {
            return Err(WireError::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "{principal} has {:.1} MiB staged; {:.1} MiB more is over the quota of {:.1} MiB \
                     (submit or let expire what is staged, then upload again)",
                    mib(used),
                    mib(size),
                    mib(self.max_staged_bytes)
                ),
            ));
        }
        Ok(())
    }

    fn upload_of(&mut self, caller: &Caller, upload_id: &str) -> Result<&mut Upload, WireError> {
        match self.uploads.get_mut(upload_id) {
            Some(u) if &u.caller == caller => Ok(u),
            _ => Err(WireError::new(
                ErrorCode::NotFound,
                format!("no open upload {upload_id}"),
            )),
        }
    }

    async fn chunk(&mut self, caller: &Caller, chunk: UploadChunk) -> Result<ChunkAck, WireError> {
        let max_chunk = self.max_chunk;
        let upload = self.upload_of(caller, &chunk.upload_id)?;
        let len = chunk.data.len() as u64;
        if len > max_chunk {
            return Err(WireError::new(
                ErrorCode::TooLarge,
                format!("chunk of {len} bytes is over the {max_chunk}-byte limit"),
            ));
        }
        if chunk.offset.saturating_add(len) > upload.size {
            return Err(WireError::new(
                ErrorCode::TooLarge,
                format!("more bytes than the declared {} bytes", upload.size),
            ));
        }
        let ahead_by = chunk.offset.checked_sub(upload.received);
        let room = REORDER_CHUNKS.saturating_mul(max_chunk);
        match ahead_by {
            Some(0) => {}
            Some(gap) if gap <= room && (upload.ahead.len() as u64) < REORDER_CHUNKS => {
                upload.ahead.insert(chunk.offset, chunk.data);
                upload.touched = Instant::now();
                return Ok(ChunkAck {
                    received: upload.received,
                });
            }
            _ => {
                return Err(WireError::new(
                    ErrorCode::Conflict,
                    format!(
                        "chunk at offset {} but {} bytes were received; resume from {}",
                        chunk.offset, upload.received, upload.received
                    ),
                ))
            }
        }
        let mut next = Some(chunk.data);
        while let Some(data) = next {
            upload
                .writer
                .wait_for_capacity(2)
                .await
                .map_err(|e| WireError::new(ErrorCode::Unavailable, format!("object store: {e}")))?;
            upload.hasher.update(&data);
            if let Some(expect) = &upload.expect {
                let want = usize::try_from(expect.head_bytes().min(upload.size)).unwrap_or(usize::MAX);
                let take = want.saturating_sub(upload.head.len()).min(data.len());
                if let Some(part) = data.get(..take) {
                    upload.head.extend_from_slice(part);
                }
            }
            upload.writer.write(&data);
            upload.received += data.len() as u64;
            next = upload.ahead.remove(&upload.received);
        }
        upload.touched = Instant::now();
        Ok(ChunkAck {
            received: upload.received,
        })
    }

    async fn commit(&mut self, caller: &Caller, upload_id: &str) -> Result<(String, ArtifactInfo), WireError> {
        self.upload_of(caller, upload_id)?;
        let Some(upload) = self.uploads.remove(upload_id) else {
            return Err(WireError::new(
                ErrorCode::NotFound,
                format!("no open upload {upload_id}"),
            ));
        };
        if upload.received != upload.size {
            let _ = upload.writer.abort().await;
            return Err(WireError::bad_request(format!(
                "upload incomplete: {} of {} bytes",
                upload.received, upload.size
            )));
        }
        let digest = hex::encode(upload.hasher.finalize());
        if digest != upload.sha256 {
            let _ = upload.writer.abort().await;
            return Err(WireError::new(
                ErrorCode::DigestMismatch,
                format!(
                    "SHA-256 of the received bytes is {digest}, not the declared {}",
                    upload.sha256
                ),
            ));
        }
        if let Some(expect) = &upload.expect {
            if let Err(why) = state_check::check(&upload.head, upload.size, expect) {
                let _ = upload.writer.abort().await;
                tracing::warn!(key = %upload.key, reason = %why, "state file refused");
                return Err(WireError::new(
                    ErrorCode::InvalidState,
                    format!("this does not fit the job's model: {why}"),
                ));
            }
        }
        upload
            .writer
            .finish()
            .await
            .map_err(|e| WireError::new(ErrorCode::Unavailable, format!("object store: {e}")))?;
        let info = ArtifactInfo {
            name: upload_id.to_string(),
            size: upload.size,
            sha256: digest,
        };
        if let Caller::Researcher(principal) = caller {
            if upload.key == keys::staging(principal, upload_id) {
                let staged = Staged {
                    owner: principal.clone(),
                    info: info.clone(),
                    since: Instant::now(),
                };
                self.staged.insert(upload_id.to_string(), staged);
            }
        }
        tracing::info!(key = %upload.key, size = upload.size, "artifact stored");
        Ok((upload.key, info))
    }

    async fn claim(&mut self, principal: &str, upload_id: &str, dest_key: &str) -> Result<ArtifactInfo, WireError> {
        match self.staged.get(upload_id) {
            Some(staged) if staged.owner == principal => {}
            _ => {
                return Err(WireError::new(
                    ErrorCode::NotFound,
                    format!("no committed upload {upload_id} of {principal}"),
                ))
            }
        }
        self.store
            .rename(&keys::staging(principal, upload_id), dest_key)
            .await
            .map_err(|e| WireError::new(ErrorCode::Unavailable, e.to_string()))?;
        let staged = self
            .staged
            .remove(upload_id)
            .ok_or_else(|| WireError::internal("staged upload vanished"))?;
        Ok(staged.info)
    }
}
