//! A real grid for integration tests: nats-server (per test), the broker in-process, and
//! scripted workers that speak the worker protocol over NATS with fixed bids (so auction
//! outcomes are exact), plus a researcher that uploads and submits through the real API.

#![allow(dead_code)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{anyhow, bail, Result};
use async_nats::jetstream::{self, consumer::DeliverPolicy, message::PublishMessage};
use futures::StreamExt;
use helium_broker_actors::{Broker, BrokerConfig};
use helium_protocol::{
    api::{Balance, Empty, Grant, JobEvent, JobEventKind, JobRef, JobView, SubmitJob},
    auth::Role as AuthRole,
    artifacts::{ArtifactInfo, BeginUpload, ChunkAck, CommitUpload, UploadChunk, UploadStarted},
    decode, encode,
    job::{DeclaredWork, DeviceKind, JobState, Loss, OptimizerKind, OptimizerSpec, Requirements, TrainingSpec},
    ledger::MINT,
    state::{Role, TensorSpec},
    subjects::{self, api, dispatch, streams, worker},
    worker::{Ask, Award, AwardAck, Bid, BidReply, Register, Registered, RunEvent, RunEventKind},
    Reply, PROTOCOL_VERSION,
};
use helium_test_support::NatsServer;
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};

pub const OPERATOR: &str = "operator";
/// Micro-credits in one credit.
pub const CREDIT: u64 = 1_000_000;

pub struct Grid {
    pub nats: NatsServer,
    pub broker: Option<Broker>,
    pub client: async_nats::Client,
    /// One connection per principal, with its own credential (the broker answers a request
    /// only into the caller's own inbox).
    principals: tokio::sync::Mutex<std::collections::HashMap<String, async_nats::Client>>,
    _store: tempfile::TempDir,
    pub config: BrokerConfig,
}

impl Grid {
    pub async fn start() -> Result<Grid> {
        Self::start_with(|_| {}).await
    }

    /// [`Grid::start`] with the broker's configuration changed by `tweak` (quotas, limits).
    pub async fn start_with(tweak: impl FnOnce(&mut BrokerConfig)) -> Result<Grid> {
        let nats = NatsServer::start()?;
        let store = tempfile::tempdir()?;
        let config = BrokerConfig {
            nats_url: nats.url.clone(),
            store: format!("file://{}", store.path().display()),
            bid_window_ms: 1_000,
            invite_k: 8,
            heartbeat_ms: 200,
            creds: nats.creds(&AuthRole::Broker, "broker")?,
            tls_ca: None,
            max_artifact_bytes: 1 << 20,
            replicas: 1,
            quotas: Default::default(),
            streams: Default::default(),
        };
        let mut config = config;
        tweak(&mut config);
        let broker = Broker::start(&config).await?;
        let client = nats.connect().await?;
        Ok(Grid {
            nats,
            broker: Some(broker),
            client,
            principals: Default::default(),
            _store: store,
            config,
        })
    }

    /// The connection of `principal`: an operator's credential for [`OPERATOR`], a
    /// researcher's for anyone else.
    pub async fn as_principal(&self, principal: &str) -> Result<async_nats::Client> {
        let mut open = self.principals.lock().await;
        if let Some(client) = open.get(principal) {
            return Ok(client.clone());
        }
        let role = if principal == OPERATOR { AuthRole::Operator } else { AuthRole::Researcher };
        let client = self.nats.connect_as(&role, principal).await?;
        open.insert(principal.to_string(), client.clone());
        Ok(client)
    }

    /// A connection of worker `id` (owner `owner`), with a credential of its own.
    pub async fn as_worker(&self, id: &str, owner: &str) -> Result<async_nats::Client> {
        self.nats.connect_as(&AuthRole::Worker { owner: owner.to_string() }, id).await
    }

    pub async fn request<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        principal: &str,
        verb: &str,
        body: &Req,
    ) -> Result<Resp> {
        let client = self.as_principal(principal).await?;
        let message = client.request(subjects::api(principal, verb), encode(body).into()).await?;
        decode::<Reply<Resp>>(&message.payload)?
            .into_result()
            .map_err(anyhow::Error::from)
    }

    /// `job.status` or `job.cancel` (`verb`) of `job_id`, as `principal`.
    pub async fn job(&self, principal: &str, verb: &str, job_id: &str) -> Result<JobView> {
        self.request(
            principal,
            verb,
            &JobRef {
                v: PROTOCOL_VERSION,
                job_id: job_id.into(),
            },
        )
        .await
    }

    pub async fn grant(&self, to: &str, micro: u64) -> Result<Balance> {
        let g = Grant {
            v: PROTOCOL_VERSION,
            to: to.into(),
            micro,
            id: uuid::Uuid::new_v4().simple().to_string(),
        };
        self.request(OPERATOR, api::ACCOUNT_GRANT, &g).await
    }

    pub async fn balance(&self, principal: &str) -> Result<i128> {
        Ok(self
            .request::<_, Balance>(principal, api::ACCOUNT_BALANCE, &Empty { v: PROTOCOL_VERSION })
            .await?
            .micro)
    }

    pub async fn upload(&self, principal: &str, bytes: &[u8]) -> Result<ArtifactInfo> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let begin = BeginUpload {
            v: PROTOCOL_VERSION,
            job_id: None,
            name: "x".into(),
            size: bytes.len() as u64,
            sha256,
        };
        let started: UploadStarted = self.request(principal, api::ARTIFACT_BEGIN, &begin).await?;
        let mut offset = 0u64;
        for chunk in bytes.chunks(100_000) {
            let c = UploadChunk {
                v: PROTOCOL_VERSION,
                upload_id: started.upload_id.clone(),
                offset,
                data: chunk.to_vec(),
            };
            offset = self
                .request::<_, ChunkAck>(principal, api::ARTIFACT_CHUNK, &c)
                .await?
                .received;
        }
        self.request(
            principal,
            api::ARTIFACT_COMMIT,
            &CommitUpload {
                v: PROTOCOL_VERSION,
                upload_id: started.upload_id,
            },
        )
        .await
    }

    /// Uploads a stand-in model and `rows` of data, then submits.
    pub async fn submit(&self, principal: &str, requirements: Requirements, rows: usize) -> Result<JobView> {
        self.submit_with_state(principal, requirements, rows, model_state()).await
    }

    /// [`Grid::submit`] declaring `state` as the model's parameters and buffers.
    pub async fn submit_with_state(
        &self,
        principal: &str,
        requirements: Requirements,
        rows: usize,
        state: Vec<TensorSpec>,
    ) -> Result<JobView> {
        let model = self.upload(principal, &fake_torchscript()).await?;
        let data = self.upload(principal, &safetensors_xy(rows, rows)).await?;
        let request = SubmitJob {
            v: PROTOCOL_VERSION,
            model_upload: model.name,
            data_upload: data.name,
            training: training(2),
            requirements,
            work: DeclaredWork {
                parameters: 1_000,
                samples: rows as u64,
                epochs: 2,
            },
            name: None,
            state,
        };
        self.request(principal, api::JOB_SUBMIT, &request).await
    }

    /// Follows the job's event stream from the start until `until` matches an event.
    pub async fn wait_event(
        &self,
        principal: &str,
        job_id: &str,
        until: impl Fn(&JobEventKind) -> bool,
    ) -> Result<Vec<JobEvent>> {
        let js = jetstream::new(self.client.clone());
        let stream = js.get_stream(streams::EVENTS).await?;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: subjects::job_events(principal, job_id),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let next = tokio::time::timeout_at(deadline, messages.next())
                .await
                .map_err(|_| anyhow!("timed out; events so far: {seen:?}"))?;
            let message = next.ok_or_else(|| anyhow!("event stream ended"))??;
            let event: JobEvent = decode(&message.payload)?;
            let done = until(&event.kind);
            seen.push(event);
            if done {
                return Ok(seen);
            }
        }
    }

    /// The ledger's invariants over every account: the sum is zero, nobody but the mint is
    /// below zero, and no escrow holds anything once all jobs are settled.
    pub async fn assert_books_balanced(&self) {
        let ledger = &self.broker.as_ref().expect("broker running").ctx.deps.ledger;
        let balances = ractor::call_t!(ledger, helium_broker_actors::ledger::LedgerMsg::Balances, 5_000).unwrap();
        assert_eq!(balances.values().sum::<i128>(), 0, "{balances:?}");
        for (account, balance) in &balances {
            assert!(account == MINT || *balance >= 0, "{account} is negative: {balances:?}");
            assert!(
                !account.starts_with("escrow:") || *balance == 0,
                "{account} still holds {balance}"
            );
        }
    }

    pub async fn wait_state(&self, principal: &str, job_id: &str, state: JobState) -> Result<Vec<JobEvent>> {
        self.wait_event(
            principal,
            job_id,
            |k| matches!(k, JobEventKind::State { state: s, .. } if *s == state),
        )
        .await
    }
}

pub fn requirements(max_price: u64, budget: u64) -> Requirements {
    Requirements {
        device: DeviceKind::Any,
        min_memory_bytes: 0,
        max_price_per_hour: max_price,
        budget,
        deadline_ms: 0,
    }
}

pub fn training(epochs: u32) -> TrainingSpec {
    TrainingSpec {
        epochs,
        batch_size: 8,
        loss: Loss::CrossEntropy,
        optimizer: OptimizerSpec {
            kind: OptimizerKind::Adam,
            lr: 0.01,
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        seed: 0,
        shuffle: true,
        checkpoint_every: Default::default(),
    }
}

/// Bytes that pass the broker's TorchScript check (a zip with code/ and constants.pkl).
pub fn fake_torchscript() -> Vec<u8> {
    let mut bytes = b"PK\x03\x04".to_vec();
    bytes.extend_from_slice(b"....m/code/__torch__.py....m/constants.pkl....");
    bytes
}

/// The stand-in model's state manifest: a 2 → 3 linear layer and one int64 buffer.
pub fn model_state() -> Vec<TensorSpec> {
    let spec = |name: &str, role, dtype: &str, shape: &[u64]| TensorSpec {
        name: name.into(),
        role,
        dtype: dtype.into(),
        shape: shape.to_vec(),
    };
    vec![
        spec("fc.weight", Role::Param, "F32", &[3, 2]),
        spec("fc.bias", Role::Param, "F32", &[3]),
        spec("bn.num_batches_tracked", Role::Buffer, "I64", &[]),
    ]
}

/// A safetensors file of `(name, dtype, shape)` tensors back to back, each filled with `fill`.
pub fn safetensors(tensors: &[(&str, &str, Vec<u64>)], fill: u8) -> Vec<u8> {
    let mut at = 0u64;
    let entries: Vec<String> = tensors
        .iter()
        .map(|(name, dtype, shape)| {
            let item = if dtype.ends_with("64") { 8 } else { 4 };
            let n = shape.iter().product::<u64>() * item;
            let e = format!(r#""{name}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{at},{}]}}"#, at + n);
            at += n;
            e
        })
        .collect();
    let mut header = format!("{{{}}}", entries.join(","));
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + at as usize, fill);
    bytes
}

/// A result that fits [`model_state`].
pub fn result_file() -> Vec<u8> {
    safetensors(&result_tensors(), 1)
}

fn result_tensors() -> Vec<(&'static str, &'static str, Vec<u64>)> {
    vec![
        ("param/fc.weight", "F32", vec![3, 2]),
        ("param/fc.bias", "F32", vec![3]),
        ("buffer/bn.num_batches_tracked", "I64", vec![]),
    ]
}

/// A checkpoint that fits [`model_state`]; its bytes differ by `step`.
pub fn checkpoint_file(step: u64) -> Vec<u8> {
    let mut t = result_tensors();
    t.extend([
        ("meta/step", "I64", vec![]),
        ("meta/epoch", "I64", vec![]),
        ("meta/loss_sum", "F64", vec![]),
        ("optim/exp_avg/fc.weight", "F32", vec![3, 2]),
    ]);
    safetensors(&t, step as u8)
}

/// A safetensors file with `x` (rows × 2 f32) and `y` (y_rows i64).
pub fn safetensors_xy(rows: usize, y_rows: usize) -> Vec<u8> {
    let (xb, yb) = (rows * 8, y_rows * 8);
    let mut header = format!(
        r#"{{"x":{{"dtype":"F32","shape":[{rows},2],"data_offsets":[0,{xb}]}},"y":{{"dtype":"I64","shape":[{y_rows}],"data_offsets":[{xb},{}]}}}}"#,
        xb + yb
    );
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + xb + yb, 0);
    bytes
}

/// A worker that bids a fixed price and ETA, and "trains" by uploading a result at once.
/// What a scripted worker does with an award.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Script {
    /// Starts, uploads a result and completes at once.
    Complete,
    /// Starts, uploads a checkpoint after optimizer step `step`, reports it and the first
    /// epoch's progress, then vanishes (no more heartbeats).
    CheckpointThenVanish { step: u64 },
    /// Reports the last epoch's progress without any checkpoint, then vanishes: a lie about
    /// work done, which must earn nothing.
    ProgressThenVanish,
    /// Reports a checkpoint it never uploaded, then vanishes.
    UnverifiedCheckpointThenVanish,
    /// Uploads the checkpoints of steps 1 and 2, then reports only the first (the second's
    /// event still on its way, as when uploads outpace the run-event stream), then vanishes.
    OvertakenCheckpointThenVanish,
    /// Starts and reports a model ten times bigger than the job declared.
    UndeclaredBigModel,
    /// Starts, then fails through its own fault (as a failed download would).
    WorkerFault,
    /// Starts and keeps heartbeating; the test acts for it (uploads, run events).
    Idle,
}

/// A worker that bids a fixed price and ETA, and "trains" as its [`Script`] says.
pub struct ScriptedWorker {
    pub id: String,
    /// Every award it received, in order.
    pub awards: Arc<Mutex<Vec<Award>>>,
    /// Every invitation it received, as the bytes on the wire, in order.
    pub invites: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedWorker {
    pub async fn start(
        grid: &Grid,
        id: &str,
        owner: &str,
        price_per_hour: u64,
        eta_secs: f64,
        memory_gib: u64,
    ) -> Result<ScriptedWorker> {
        Self::with_script(grid, id, owner, price_per_hour, eta_secs, memory_gib, Script::Complete).await
    }

    pub async fn with_script(
        grid: &Grid,
        id: &str,
        owner: &str,
        price_per_hour: u64,
        eta_secs: f64,
        memory_gib: u64,
        script: Script,
    ) -> Result<ScriptedWorker> {
        let ask = Ask {
            price_per_hour,
            device: DeviceKind::Cpu,
            device_name: "cpu".into(),
            memory_bytes: memory_gib << 30,
            throughput: 1e9,
            sandbox: Vec::new(),
        };
        let bid = Bid { price_per_hour, eta_secs };
        Self::with_ask(grid, id, owner, ask, bid, script).await
    }

    /// A worker registering `ask` and bidding `bid` on every invitation.
    pub async fn with_ask(grid: &Grid, id: &str, owner: &str, ask: Ask, bid: Bid, script: Script) -> Result<ScriptedWorker> {
        let role = AuthRole::Worker { owner: owner.to_string() };
        let issued = grid.nats.authority.issue(&role, id, helium_test_support::now())?;
        let nats = grid.nats.connect_issued(&issued, &role, id).await?;
        let mut invites = nats.subscribe(subjects::dispatch(id, ">")).await?;
        let register = Register {
            v: PROTOCOL_VERSION,
            owner: owner.into(),
            credential: issued.jwt.clone(),
            ask,
            incarnation: String::new(),
        };
        let registered: Registered = worker_request(&nats, id, worker::REGISTER, &register).await?;
        let (id_owned, beat) = (id.to_string(), Duration::from_millis(registered.heartbeat_ms));
        let awards = Arc::new(Mutex::new(Vec::new()));
        let seen = awards.clone();
        let invited = Arc::new(Mutex::new(Vec::new()));
        let seen_invites = invited.clone();
        let vanish = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(async move {
            let id = id_owned;
            let mut ticker = tokio::time::interval(beat);
            loop {
                tokio::select! {
                    _ = vanish.notified() => return,
                    _ = ticker.tick() => {
                        let hb = helium_protocol::worker::Heartbeat { v: PROTOCOL_VERSION, running: None, paused: None };
                        let _ = nats.publish(subjects::worker(&id, worker::HEARTBEAT), encode(&hb).into()).await;
                    }
                    Some(message) = invites.next() => {
                        let Some(reply) = message.reply.clone() else { continue };
                        let verb = message.subject.as_str().rsplitn(3, '.').take(2).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(".");
                        let payload = if verb == dispatch::INVITE {
                            seen_invites.lock().map(|mut i| i.push(message.payload.to_vec())).ok();
                            encode(&Reply::ok(BidReply { bid: Some(bid), decline: None }))
                        } else if verb == dispatch::AWARD {
                            let award: Award = match decode(&message.payload) { Ok(a) => a, Err(_) => continue };
                            seen.lock().map(|mut a| a.push(award.clone())).ok();
                            let (nats, id, vanish) = (nats.clone(), id.clone(), vanish.clone());
                            tokio::spawn(async move {
                                if let Err(e) = run_award(&nats, &id, award, script, &vanish).await {
                                    eprintln!("scripted worker {id}: {e:#}");
                                }
                            });
                            encode(&Reply::ok(AwardAck { accepted: true, reason: None }))
                        } else {
                            encode(&Reply::ok(true))
                        };
                        let _ = nats.publish(reply, payload.into()).await;
                    }
                }
            }
        });
        Ok(ScriptedWorker {
            id: id.into(),
            awards,
            invites: invited,
            task,
        })
    }
}

impl Drop for ScriptedWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn worker_request<Req: Serialize, Resp: DeserializeOwned>(
    nats: &async_nats::Client,
    id: &str,
    verb: &str,
    body: &Req,
) -> Result<Resp> {
    let message = nats.request(subjects::worker(id, verb), encode(body).into()).await?;
    // The WireError itself, so that a test can match its code.
    decode::<Reply<Resp>>(&message.payload)?
        .into_result()
        .map_err(anyhow::Error::from)
}

/// Uploads `bytes` as artifact `name` of the awarded job, through the worker gateway.
pub async fn upload(nats: &async_nats::Client, id: &str, job_id: &str, name: &str, bytes: Vec<u8>) -> Result<ArtifactInfo> {
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let begin = BeginUpload {
        v: PROTOCOL_VERSION,
        job_id: Some(job_id.into()),
        name: name.into(),
        size: bytes.len() as u64,
        sha256,
    };
    let started: UploadStarted = worker_request(nats, id, worker::ARTIFACT_BEGIN, &begin).await?;
    let chunk = UploadChunk {
        v: PROTOCOL_VERSION,
        upload_id: started.upload_id.clone(),
        offset: 0,
        data: bytes,
    };
    let _: ChunkAck = worker_request(nats, id, worker::ARTIFACT_CHUNK, &chunk).await?;
    let commit = CommitUpload {
        v: PROTOCOL_VERSION,
        upload_id: started.upload_id,
    };
    let info: ArtifactInfo = worker_request(nats, id, worker::ARTIFACT_COMMIT, &commit).await?;
    Ok(ArtifactInfo {
        name: name.into(),
        ..info
    })
}

/// Publishes a run event of `award` on worker `worker_id`'s subject, deduplicated by
/// `<award_id>.<dedup>`, and waits for the stream's ack.
pub async fn publish_run_event(
    js: &jetstream::Context,
    worker_id: &str,
    award: &Award,
    kind: RunEventKind,
    dedup: String,
) -> Result<()> {
    let event = RunEvent { v: PROTOCOL_VERSION, job_id: award.job_id.clone(), award_id: award.award_id.clone(), kind };
    let msg = PublishMessage::build()
        .payload(encode(&event).into())
        .message_id(format!("{}.{dedup}", award.award_id));
    js.send_publish(subjects::worker(worker_id, worker::RUN_EVENT), msg).await?.await?;
    Ok(())
}

async fn run_award(
    nats: &async_nats::Client,
    id: &str,
    award: Award,
    script: Script,
    vanish: &tokio::sync::Notify,
) -> Result<()> {
    let js = jetstream::new(nats.clone());
    let publish = |kind: RunEventKind, dedup: &str| publish_run_event(&js, id, &award, kind, dedup.to_string());
    let parameters = match script {
        Script::UndeclaredBigModel => award.work.parameters * 10,
        _ => award.work.parameters,
    };
    publish(
        RunEventKind::Started {
            device: "cpu".into(),
            parameters: Some(parameters),
        },
        "started",
    )
    .await?;
    match script {
        Script::Complete => {
            let result = upload(nats, id, &award.job_id, "result", result_file()).await?;
            if result.size == 0 {
                bail!("empty result");
            }
            publish(RunEventKind::Completed { result }, "completed").await
        }
        Script::UndeclaredBigModel => Ok(()),
        Script::Idle => Ok(()),
        Script::WorkerFault => {
            let failed = RunEventKind::Failed {
                reason: "disk full".into(),
                worker_fault: true,
            };
            publish(failed, "failed").await
        }
        Script::CheckpointThenVanish { step } => {
            let checkpoint = upload(
                nats,
                id,
                &award.job_id,
                &format!("checkpoints/{step}"),
                checkpoint_file(step),
            )
            .await?;
            let per_epoch = award.training.steps_per_epoch(award.work.samples);
            let epoch = (step / per_epoch) as u32;
            publish(
                RunEventKind::Checkpoint {
                    step,
                    epoch,
                    checkpoint,
                },
                &format!("checkpoint-{step}"),
            )
            .await?;
            publish(progress(1, award.training.epochs, per_epoch), "progress-1").await?;
            vanish.notify_one();
            Ok(())
        }
        Script::ProgressThenVanish => {
            let epochs = award.training.epochs;
            let per_epoch = award.training.steps_per_epoch(award.work.samples);
            publish(progress(epochs, epochs, per_epoch * u64::from(epochs)), "progress-last").await?;
            vanish.notify_one();
            Ok(())
        }
        Script::OvertakenCheckpointThenVanish => {
            let first = upload(nats, id, &award.job_id, "checkpoints/1", checkpoint_file(1)).await?;
            upload(nats, id, &award.job_id, "checkpoints/2", checkpoint_file(2)).await?;
            let event = RunEventKind::Checkpoint {
                step: 1,
                epoch: 0,
                checkpoint: first,
            };
            publish(event, "checkpoint-1").await?;
            vanish.notify_one();
            Ok(())
        }
        Script::UnverifiedCheckpointThenVanish => {
            let checkpoint = ArtifactInfo {
                name: "checkpoints/2".into(),
                size: 10,
                sha256: "ab".repeat(32),
            };
            publish(
                RunEventKind::Checkpoint {
                    step: 2,
                    epoch: 1,
                    checkpoint,
                },
                "checkpoint-2",
            )
            .await?;
            vanish.notify_one();
            Ok(())
        }
    }
}

fn progress(epoch: u32, epochs: u32, step: u64) -> RunEventKind {
    RunEventKind::Progress {
        epoch,
        epochs,
        step,
        loss: 0.5,
        samples_per_sec: 100.0,
        val_loss: None,
        val_accuracy: None,
    }
}
