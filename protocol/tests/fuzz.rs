//! Fuzzing the wire decoders, subject/key parsers and credentials (see
//! `helium_test_support::fuzz`; docs/ARCHITECTURE.md §10). Every message type is decoded from
//! arbitrary bytes and from mutated valid encodings: `decode` never panics, never holds heap
//! out of proportion to its input, and a decoded message encodes to a form that decodes back
//! to itself; every generated message round-trips byte for byte. A user JWT that was tampered
//! with never verifies.

use helium_protocol::{
    api::*,
    artifacts::*,
    auth::{self, creds, jwt, permissions, Role as AuthRole},
    decode, encode,
    envelope::{ErrorCode, Reply, WireError},
    job::*,
    ledger::Transfer,
    state::{Role, TensorSpec},
    subjects::{self, keys},
    worker::*,
    PROTOCOL_VERSION,
};
use helium_test_support::fuzz::{bytes, mutated, one_of, CountingAlloc, Target, JSON_TOKENS, MSGPACK_TOKENS};
use proptest::{collection::vec, option, prelude::*};
use serde::{de::DeserializeOwned, Serialize};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn target(name: &'static str, cases: u32) -> Target {
    Target::new(env!("CARGO_MANIFEST_DIR"), env!("CARGO_TARGET_TMPDIR"), name, cases)
}

// ---- Strategies for every wire type (valid values, hostile numbers included) ----

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9_-]{0,12}", ".{0,8}", Just("../../etc".to_string())]
}
fn num() -> impl Strategy<Value = f64> {
    prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(-0.0), Just(1e308)]
}
fn v() -> impl Strategy<Value = u32> {
    prop_oneof![9 => Just(PROTOCOL_VERSION), 1 => any::<u32>()]
}

fn job_state() -> impl Strategy<Value = JobState> {
    use JobState::*;
    proptest::sample::select(vec![Queued, Auctioning, Assigned, Running, Completed, Failed, Cancelled, Expired])
}
fn device() -> impl Strategy<Value = DeviceKind> {
    proptest::sample::select(vec![DeviceKind::Any, DeviceKind::Cpu, DeviceKind::Cuda])
}
fn sandbox() -> impl Strategy<Value = Vec<SandboxLayer>> {
    vec(proptest::sample::select(SandboxLayer::ALL.to_vec()), 0..6)
}
fn info() -> impl Strategy<Value = ArtifactInfo> {
    (text(), any::<u64>(), text()).prop_map(|(name, size, sha256)| ArtifactInfo { name, size, sha256 })
}
fn training() -> impl Strategy<Value = TrainingSpec> {
    let loss = proptest::sample::select(vec![Loss::CrossEntropy, Loss::Mse, Loss::L1, Loss::BceWithLogits, Loss::Nll, Loss::Module]);
    let kind = proptest::sample::select(vec![OptimizerKind::Sgd, OptimizerKind::Adam, OptimizerKind::Adamw]);
    let optimizer = (kind, num(), num(), num(), any::<bool>(), num(), num(), num()).prop_map(
        |(kind, lr, momentum, weight_decay, nesterov, beta1, beta2, eps)| OptimizerSpec {
            kind,
            lr,
            momentum,
            weight_decay,
            nesterov,
            beta1,
            beta2,
            eps,
        },
    );
    let every = prop_oneof![num().prop_map(CheckpointEvery::Secs), any::<u64>().prop_map(CheckpointEvery::Steps)];
    (any::<u32>(), any::<u32>(), loss, optimizer, any::<u64>(), any::<bool>(), every).prop_map(
        |(epochs, batch_size, loss, optimizer, seed, shuffle, checkpoint_every)| TrainingSpec {
            epochs,
            batch_size,
            loss,
            optimizer,
            seed,
            shuffle,
            checkpoint_every,
        },
    )
}
fn requirements() -> impl Strategy<Value = Requirements> {
    (device(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(device, min_memory_bytes, max_price_per_hour, budget, deadline_ms)| Requirements {
            device,
            min_memory_bytes,
            max_price_per_hour,
            budget,
            deadline_ms,
        },
    )
}
fn work() -> impl Strategy<Value = DeclaredWork> {
    (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(parameters, samples, epochs)| DeclaredWork { parameters, samples, epochs })
}
fn tensor_spec() -> impl Strategy<Value = TensorSpec> {
    let role = proptest::sample::select(vec![Role::Param, Role::Buffer]);
    (text(), role, text(), vec(any::<u64>(), 0..4)).prop_map(|(name, role, dtype, shape)| TensorSpec { name, role, dtype, shape })
}
fn job_view() -> impl Strategy<Value = JobView> {
    (
        (text(), text(), option::of(text()), job_state(), option::of(text()), option::of(text())),
        (option::of(any::<u64>()), any::<u64>(), any::<u32>(), any::<u32>(), option::of(num())),
        (option::of(info()), any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |((job_id, principal, name, state, reason, worker), (price, paid, epochs, epochs_done, last_loss), (result, created_ms, updated_ms))| JobView {
                job_id,
                principal,
                name,
                state,
                reason_code: reason.as_ref().map(|r| r.chars().take(16).collect()),
                reason,
                worker,
                price,
                paid,
                epochs,
                epochs_done,
                last_loss,
                result,
                created_ms,
                updated_ms,
            },
        )
}
fn ask() -> impl Strategy<Value = Ask> {
    (any::<u64>(), device(), text(), any::<u64>(), num(), sandbox()).prop_map(
        |(price_per_hour, device, device_name, memory_bytes, throughput, sandbox)| Ask {
            price_per_hour,
            device,
            device_name,
            memory_bytes,
            throughput,
            sandbox,
        },
    )
}
fn worker_view() -> impl Strategy<Value = WorkerView> {
    let record = (num(), any::<[u32; 2]>(), option::of(any::<[u32; 3]>()), option::of(text()), option::of(text()));
    (text(), text(), ask(), option::of(text()), any::<bool>(), record).prop_map(
        |(worker_id, owner, a, busy_with, alive, (reputation, [completed, failed], tally, last_auction, paused))| WorkerView {
            worker_id,
            owner,
            device: a.device,
            device_name: a.device_name,
            memory_bytes: a.memory_bytes,
            price_per_hour: a.price_per_hour,
            throughput: a.throughput,
            busy_with,
            alive,
            sandbox: a.sandbox,
            reputation,
            completed,
            failed,
            won: tally.map(|t| t[0]),
            lost: tally.map(|t| t[1]),
            declined: tally.map(|t| t[2]),
            last_auction,
            paused,
        },
    )
}
fn auction_note() -> impl Strategy<Value = AuctionNote> {
    let verdict = proptest::sample::select(vec![Verdict::Won, Verdict::Lost, Verdict::Declined, Verdict::Refused, Verdict::NoAnswer]);
    let money = (option::of(any::<u64>()), option::of(any::<u64>()), option::of(any::<u64>()), option::of(any::<u64>()));
    (v(), text(), any::<u64>(), verdict, text(), money).prop_map(
        |(v, job_id, at_ms, verdict, reason, (price_per_hour, cost, winning_price_per_hour, winning_cost))| AuctionNote {
            v,
            job_id,
            at_ms,
            verdict,
            reason,
            price_per_hour,
            cost,
            winning_price_per_hour,
            winning_cost,
        },
    )
}
fn transfer_kind() -> impl Strategy<Value = helium_protocol::ledger::TransferKind> {
    use helium_protocol::ledger::TransferKind::*;
    proptest::sample::select(vec![Grant, Hold, Pay, Refund, Sweep, Other])
}
fn statement() -> impl Strategy<Value = Statement> {
    let line = (any::<u64>(), any::<i64>(), text(), option::of(text()), text(), transfer_kind(), any::<i128>(), any::<i128>(), text())
        .prop_map(|(seq, time_ms, transfer, job, counterparty, kind, micro, balance, memo)| StatementLine {
            seq, time_ms, transfer, job, counterparty, kind, micro, balance, memo,
        });
    (text(), vec(line, 0..3), any::<bool>(), any::<i128>())
        .prop_map(|(principal, lines, more, balance)| Statement { principal, lines, more, balance })
}
fn job_event() -> impl Strategy<Value = JobEvent> {
    let kind = prop_oneof![
        (job_state(), option::of(text())).prop_map(|(state, reason)| JobEventKind::State { state, reason }),
        (text(), any::<u32>(), any::<u64>(), num()).prop_map(|(worker, bids, price, eta_secs)| JobEventKind::Awarded { worker, bids, price, eta_secs }),
        (any::<u32>(), any::<u32>(), option::of(any::<u64>()), num(), num(), option::of(num()), option::of(num())).prop_map(
            |(epoch, epochs, step, loss, samples_per_sec, val_loss, val_accuracy)| JobEventKind::Progress {
                epoch,
                epochs,
                step,
                loss,
                samples_per_sec,
                val_loss,
                val_accuracy
            }
        ),
        (any::<u64>(), any::<u32>()).prop_map(|(step, epoch)| JobEventKind::Checkpointed { step, epoch }),
    ];
    (v(), text(), any::<u64>(), kind).prop_map(|(v, job_id, at_ms, kind)| JobEvent { v, job_id, at_ms, kind })
}
fn run_event() -> impl Strategy<Value = RunEvent> {
    let kind = prop_oneof![
        (text(), option::of(any::<u64>())).prop_map(|(device, parameters)| RunEventKind::Started { device, parameters }),
        (any::<u32>(), any::<u32>(), any::<u64>(), num(), num(), option::of(num()), option::of(num())).prop_map(
            |(epoch, epochs, step, loss, samples_per_sec, val_loss, val_accuracy)| RunEventKind::Progress {
                epoch,
                epochs,
                step,
                loss,
                samples_per_sec,
                val_loss,
                val_accuracy
            }
        ),
        (any::<u64>(), any::<u32>(), info()).prop_map(|(step, epoch, checkpoint)| RunEventKind::Checkpoint { step, epoch, checkpoint }),
        info().prop_map(|result| RunEventKind::Completed { result }),
        (text(), any::<bool>()).prop_map(|(reason, worker_fault)| RunEventKind::Failed { reason, worker_fault }),
        Just(RunEventKind::Cancelled),
    ];
    (v(), text(), text(), kind).prop_map(|(v, job_id, award_id, kind)| RunEvent { v, job_id, award_id, kind })
}
fn wire_error() -> impl Strategy<Value = WireError> {
    use ErrorCode::*;
    let code = proptest::sample::select(vec![
        BadRequest, UnsupportedVersion, Unauthorized, NotFound, TooLarge, Conflict, InsufficientFunds, InvalidModel, InvalidData,
        InvalidState, DigestMismatch, Unavailable, Internal,
    ]);
    (code, text()).prop_map(|(code, message)| WireError { code, message })
}
fn reply<T: std::fmt::Debug + Clone>(body: impl Strategy<Value = T>) -> impl Strategy<Value = Reply<T>> {
    prop_oneof![
        (body, v()).prop_map(|(b, v)| Reply { v, ok: Some(b), error: None }),
        (wire_error(), v()).prop_map(|(e, v)| Reply { v, ok: None, error: Some(e) }),
    ]
}

/// A valid message of some type, encoded, with the round-trip check of that type.
#[derive(Clone)]
struct Msg {
    bytes: Vec<u8>,
    round_trip: fn(&[u8]) -> Result<(), String>,
}

impl AsRef<[u8]> for Msg {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x?}", self.bytes)
    }
}

/// The encoding of a `T` decodes (unless its `v` is another version) and encodes to the same bytes.
fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<(), String> {
    let name = std::any::type_name::<T>();
    match decode::<T>(bytes) {
        Ok(back) if encode(&back) == bytes => Ok(()),
        Ok(_) => Err(format!("{name} does not round-trip")),
        Err(e) if e.code == ErrorCode::UnsupportedVersion => Ok(()),
        Err(e) => Err(format!("{name} does not decode its own encoding: {e}")),
    }
}

/// One valid message of any type.
fn any_message() -> BoxedStrategy<Msg> {
    fn enc<T: Serialize + DeserializeOwned + std::fmt::Debug + 'static>(s: impl Strategy<Value = T> + 'static) -> BoxedStrategy<Msg> {
        s.prop_map(|m| Msg { bytes: encode(&m), round_trip: round_trip::<T> }).boxed()
    }
    let submit = (v(), text(), text(), training(), requirements(), work(), option::of(text()), vec(tensor_spec(), 0..4)).prop_map(
        |(v, model_upload, data_upload, training, requirements, work, name, state)| SubmitJob {
            v,
            model_upload,
            data_upload,
            training,
            requirements,
            work,
            name,
            state,
        },
    );
    let award = ((v(), text(), text(), training(), work()), (info(), info(), any::<u64>(), any::<u64>(), option::of(info()))).prop_map(
        |((v, job_id, award_id, training, work), (model, data, price, deadline_ms, resume))| Award {
            v,
            job_id,
            award_id,
            training,
            work,
            model,
            data,
            price,
            deadline_ms,
            resume,
        },
    );
    let invite = (v(), text(), text(), requirements(), work()).prop_map(|(v, job_id, auction_id, requirements, work)| Invite {
        v,
        job_id,
        auction_id,
        requirements: (&requirements).into(),
        work,
    });
    let bid_reply = (option::of((any::<u64>(), num()).prop_map(|(price_per_hour, eta_secs)| Bid { price_per_hour, eta_secs })), option::of(text()))
        .prop_map(|(bid, decline)| BidReply { bid, decline });
    prop_oneof![
        enc(submit),
        enc(award),
        enc(invite),
        enc(job_event()),
        enc(run_event()),
        enc((v(), text()).prop_map(|(v, job_id)| JobRef { v, job_id })),
        enc(v().prop_map(|v| Empty { v })),
        enc((v(), any::<u64>(), option::of(any::<u32>())).prop_map(|(v, since_seq, limit)| ReadStatement { v, since_seq, limit })),
        enc((v(), text(), any::<u64>(), text()).prop_map(|(v, to, micro, id)| Grant { v, to, micro, id })),
        enc((v(), option::of(text()), text(), any::<u64>(), text()).prop_map(|(v, job_id, name, size, sha256)| BeginUpload { v, job_id, name, size, sha256 })),
        enc((v(), text(), any::<u64>(), bytes(64)).prop_map(|(v, upload_id, offset, data)| UploadChunk { v, upload_id, offset, data })),
        enc((v(), text()).prop_map(|(v, upload_id)| CommitUpload { v, upload_id })),
        enc((v(), text(), text(), any::<u64>(), any::<u64>()).prop_map(|(v, job_id, name, offset, len)| ReadArtifact { v, job_id, name, offset, len })),
        enc((v(), text(), text(), ask()).prop_map(|(v, owner, credential, ask)| Register { v, owner, credential, ask, incarnation: String::new() })),
        enc((v(), option::of(text()), option::of(text()))
            .prop_map(|(v, running, paused)| Heartbeat { v, running, paused })),
        enc((v(), text(), text()).prop_map(|(v, job_id, award_id)| CancelRun { v, job_id, award_id })),
        enc((v(), text(), text(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(v, job_id, award_id, paid, refunded, paid_steps, steps)| Settled { v, job_id, award_id, paid, refunded, paid_steps, steps }
        )),
        enc((v(), text(), text(), text(), any::<u64>(), text()).prop_map(|(v, id, debit, credit, amount, memo)| Transfer { v, id, debit, credit, amount, memo })),
        enc(reply(job_view())),
        enc(reply(vec(job_view(), 0..3).prop_map(|jobs| JobList { jobs }))),
        enc(reply((text(), any::<i128>()).prop_map(|(principal, micro)| Balance { principal, micro }))),
        enc(reply(vec(worker_view(), 0..3).prop_map(|workers| WorkerList { workers }))),
        enc((v(), text(), any::<u32>()).prop_map(|(v, worker_id, limit)| WorkerLogRequest { v, worker_id, limit })),
        enc(reply((text(), vec(auction_note(), 0..3)).prop_map(|(worker_id, notes)| WorkerLog { worker_id, notes }))),
        enc(auction_note()),
        enc(reply(statement())),
        enc(reply((text(), any::<u64>()).prop_map(|(upload_id, max_chunk)| UploadStarted { upload_id, max_chunk }))),
        enc(reply(any::<u64>().prop_map(|received| ChunkAck { received }))),
        enc(reply(info())),
        enc(reply((any::<u64>(), bytes(64), any::<u64>(), text()).prop_map(|(offset, data, size, sha256)| ArtifactChunk { offset, data, size, sha256 }))),
        enc(reply(any::<u64>().prop_map(|heartbeat_ms| Registered { heartbeat_ms }))),
        enc(reply(bid_reply)),
        enc(reply((any::<bool>(), option::of(text())).prop_map(|(accepted, reason)| AwardAck { accepted, reason }))),
    ]
    .boxed()
}

// ---- The properties ----

/// A decoded message re-encodes to bytes that decode to the same message.
fn stable<T: Serialize + DeserializeOwned>(payload: &[u8]) -> Result<(), String> {
    let Ok(first) = decode::<T>(payload) else { return Ok(()) };
    let bytes = encode(&first);
    let again: T = decode(&bytes).map_err(|e| format!("{}: its own encoding does not decode: {e}", std::any::type_name::<T>()))?;
    if encode(&again) != bytes {
        return Err(format!("{}: encoding is not stable", std::any::type_name::<T>()));
    }
    Ok(())
}

/// Bodies carry no `v` of their own: they are decoded only for not panicking.
fn quiet<T: DeserializeOwned>(payload: &[u8]) -> Result<(), String> {
    let _ = decode::<T>(payload);
    Ok(())
}

/// Every request, event and reply type of the protocol, decoded from `payload`.
fn decode_every_type(payload: &[u8]) -> Result<(), String> {
    stable::<SubmitJob>(payload)?;
    stable::<JobRef>(payload)?;
    stable::<Empty>(payload)?;
    stable::<Grant>(payload)?;
    stable::<ReadStatement>(payload)?;
    stable::<JobEvent>(payload)?;
    stable::<BeginUpload>(payload)?;
    stable::<UploadChunk>(payload)?;
    stable::<CommitUpload>(payload)?;
    stable::<ReadArtifact>(payload)?;
    stable::<Register>(payload)?;
    stable::<Heartbeat>(payload)?;
    stable::<Invite>(payload)?;
    stable::<Award>(payload)?;
    stable::<CancelRun>(payload)?;
    stable::<Settled>(payload)?;
    stable::<RunEvent>(payload)?;
    stable::<Transfer>(payload)?;
    stable::<Reply<JobView>>(payload)?;
    stable::<Reply<JobList>>(payload)?;
    stable::<Reply<Balance>>(payload)?;
    stable::<Reply<WorkerList>>(payload)?;
    stable::<WorkerLogRequest>(payload)?;
    stable::<Reply<WorkerLog>>(payload)?;
    stable::<AuctionNote>(payload)?;
    stable::<Reply<Statement>>(payload)?;
    stable::<Reply<UploadStarted>>(payload)?;
    stable::<Reply<ChunkAck>>(payload)?;
    stable::<Reply<ArtifactInfo>>(payload)?;
    stable::<Reply<ArtifactChunk>>(payload)?;
    stable::<Reply<Registered>>(payload)?;
    stable::<Reply<BidReply>>(payload)?;
    stable::<Reply<AwardAck>>(payload)?;
    quiet::<Reply<serde::de::IgnoredAny>>(payload)?;
    quiet::<JobView>(payload)?;
    quiet::<WorkerView>(payload)?;
    quiet::<Ask>(payload)?;
    quiet::<TensorSpec>(payload)?;
    quiet::<TrainingSpec>(payload)?;
    Ok(())
}

fn seeds(target: &Target) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![3 => any_message().prop_map(|m| m.bytes), 1 => one_of(target.seeds())]
}

#[test]
fn fuzz_wire_decoders() {
    let t = target("wire", 20_000);
    let strategy = prop_oneof![
        1 => bytes(64),
        1 => any_message().prop_map(|m| m.bytes),
        6 => mutated(seeds(&t), MSGPACK_TOKENS),
    ];
    t.run(strategy, decode_every_type);
}

/// Every generated message survives the trip through the wire, byte for byte.
#[test]
fn fuzz_wire_round_trips() {
    let t = target("wire", 5_000);
    t.run_values(any_message(), |m: &Msg| (m.round_trip)(&m.bytes));
}

/// Subject tokens and object keys read back what the builders wrote, and nothing else.
#[test]
fn fuzz_subjects_and_keys() {
    let t = target("subjects", 10_000);
    let strategy = prop_oneof![
        bytes(48),
        one_of(t.seeds()),
        mutated(one_of(t.seeds()), &[b".", b"/", b"*", b">", b"..", b"jobs/", b"checkpoints/", b".safetensors", b"18446744073709551616"]),
    ];
    t.run(strategy, |input| {
        let s = String::from_utf8_lossy(input);
        if let Some(id) = subjects::identity_of(&s) {
            if !subjects::valid_id(id) {
                return Err(format!("identity_of gave the invalid id {id:?}"));
            }
        }
        if let Some((job, name)) = keys::parse_job_key(&s) {
            let back = match name.as_str() {
                "model" => keys::model(&job),
                "data" => keys::data(&job),
                "result" => keys::result(&job),
                other => {
                    let step: u64 = other
                        .strip_prefix(CHECKPOINTS)
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| format!("parse_job_key gave the name {other:?}"))?;
                    keys::checkpoint(&job, step)
                }
            };
            if keys::parse_job_key(&back) != Some((job.clone(), name.clone())) {
                return Err(format!("{s:?} parsed as ({job:?}, {name:?}), which builds {back:?}"));
            }
        }
        let _ = helium_protocol::state::parse_optim_key(&s);
        Ok(())
    });
}

/// Credentials: arbitrary text never panics any reader, and a user JWT changed in any way no
/// longer verifies.
#[test]
fn fuzz_credentials() {
    let t = target("credentials", 5_000);
    let account = nkeys::KeyPair::new_account();
    let other = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let role = AuthRole::Worker { owner: "gpu-owner-1".into() };
    let token = jwt::user(&account, &user.public_key(), "w1", &role, &permissions(&role, "w1"), 1_700_000_000, None).expect("sign");
    let foreign = jwt::user(&other, &user.public_key(), "w1", &role, &permissions(&role, "w1"), 1_700_000_000, None).expect("sign");
    let seed = user.seed().expect("seed");
    let creds_text = creds::render(&token, &seed);
    let account_key = account.public_key();
    let mut seed_inputs = t.seeds();
    seed_inputs.extend([token.clone().into_bytes(), foreign.into_bytes(), creds_text.into_bytes()]);
    let strategy = prop_oneof![
        1 => bytes(96),
        6 => mutated(one_of(seed_inputs), JSON_TOKENS),
        2 => mutated(Just(token.clone().into_bytes()), &[b".", b"=", b"-", b"_", b"A", b"\n", b" "]),
    ];
    t.run(strategy, |input| {
        let text = String::from_utf8_lossy(input);
        let _ = creds::jwt(&text);
        let _ = creds::seed(&text);
        let _ = auth::identity(&text);
        let _ = jwt::read_own_user(&text);
        let _ = jwt::issuer(&text);
        match jwt::verify_user(&text, &account_key, 1_700_000_000) {
            Ok(_) if text.trim() != token => Err(format!("a tampered token verified: {text:?}")),
            Err(e) if text.trim() == token => Err(format!("the real token did not verify: {e}")),
            _ => Ok(()),
        }
    });
}

