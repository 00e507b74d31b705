//! Fuzzing what the broker reads from untrusted bytes (see `helium_test_support::fuzz`;
//! docs/ARCHITECTURE.md §10): the safetensors headers of uploaded data
//! ([`inspect`], through [`Store::inspect_data`]) and of workers' results and checkpoints
//! ([`state_check::check`]), journal entries ([`journal::decode_entry`]) and job records (as
//! `JobManager` reads them back from the KV bucket). None may panic or hold heap out of
//! proportion to the input; a header the broker accepts must be one the `safetensors` crate
//! (what tch, and so the worker, loads files with) accepts too, with the same tensors.

use std::sync::Arc;

use helium_broker_actors::{
    artifacts::{
        state_check::{self, Expect, StateKind},
        store::Store,
    },
    jobs::record::{AwardRecord, CheckpointRecord, JobRecord},
    ledger::journal,
};
use helium_protocol::{
    api::JobView,
    artifacts::ArtifactInfo,
    encode,
    job::*,
    ledger::Transfer,
    state::{self, Role, TensorSpec},
    PROTOCOL_VERSION,
};
use helium_test_support::fuzz::{bytes, mutated, one_of, CountingAlloc, Target, JSON_TOKENS, MSGPACK_TOKENS};
use object_store::ObjectStoreExt;
use proptest::{collection::vec, option, prelude::*};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn target(name: &'static str, cases: u32) -> Target {
    Target::new(env!("CARGO_MANIFEST_DIR"), env!("CARGO_TARGET_TMPDIR"), name, cases)
}

// ---- safetensors files ----

/// One tensor of a generated file: name, dtype, shape.
type Tensor = (String, String, Vec<u64>);

/// A safetensors file of `tensors` laid out back to back (so valid, unless a dtype is unknown
/// or a shape overflows), each entry's offsets perturbed by `shift`.
fn file(tensors: &[Tensor], shifts: &[(u64, u64)], pad: usize, metadata: bool) -> Vec<u8> {
    let mut at = 0u64;
    let mut entries = Vec::new();
    for (i, (name, dtype, shape)) in tensors.iter().enumerate() {
        let n = shape
            .iter()
            .try_fold(state::dtype_bytes(dtype).unwrap_or(1), |a, &d| a.checked_mul(d))
            .unwrap_or(0);
        let (ds, de) = shifts.get(i).copied().unwrap_or((0, 0));
        let (start, end) = (at.wrapping_add(ds), at.wrapping_add(n).wrapping_add(de));
        entries.push(format!(
            r#"{}:{{"dtype":{},"shape":{shape:?},"data_offsets":[{start},{end}]}}"#,
            serde_json::to_string(name).unwrap_or_default(),
            serde_json::to_string(dtype).unwrap_or_default(),
        ));
        at = at.saturating_add(n);
    }
    if metadata {
        entries.push(r#""__metadata__":{"format":"pt"}"#.to_string());
    }
    let mut header = format!("{{{}}}", entries.join(","));
    header.extend(std::iter::repeat_n(' ', pad));
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    // Bodies stay small: a tensor claiming more than this makes the file too short.
    out.resize(out.len() + at.min(1 << 12) as usize, 0);
    out
}

fn dtype() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => proptest::sample::select(vec!["F32", "F64", "I64", "I32", "F16", "BF16", "I16", "I8", "U8", "BOOL", "U16", "U32", "U64"]).prop_map(String::from),
        1 => Just("F8_E4M3".to_string()),
        1 => ".{0,4}",
    ]
}
fn shape() -> impl Strategy<Value = Vec<u64>> {
    prop_oneof![
        8 => vec(0u64..5, 0..4),
        1 => vec(prop_oneof![Just(u64::MAX), Just(1 << 32), Just(1 << 62), 0u64..5], 1..4),
    ]
}
fn shifts() -> impl Strategy<Value = Vec<(u64, u64)>> {
    let shift = prop_oneof![8 => Just(0u64), 1 => 1u64..9, 1 => Just(u64::MAX), 1 => Just(1 << 40)];
    vec((shift.clone(), shift), 0..6)
}

fn data_file() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        4 => proptest::sample::select(vec!["x", "y", "x_val", "y_val"]).prop_map(String::from),
        1 => ".{0,6}",
    ];
    let rows = 1u64..4;
    (rows, vec((name, dtype(), shape()), 0..3), shifts(), 0usize..9, any::<bool>(), any::<bool>()).prop_map(
        |(rows, extra, shifts, pad, metadata, val)| {
            let mut t: Vec<Tensor> = vec![("x".into(), "F32".into(), vec![rows, 2]), ("y".into(), "I64".into(), vec![rows])];
            if val {
                t.push(("x_val".into(), "F32".into(), vec![1, 2]));
                t.push(("y_val".into(), "I64".into(), vec![1]));
            }
            t.extend(extra);
            file(&t, &shifts, pad, metadata)
        },
    )
}

/// The tensors of a file as the `safetensors` crate reads it: `(name, dtype, shape)`, sorted.
fn reference(bytes: &[u8]) -> Result<Vec<Tensor>, String> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| format!("{e:?}"))?;
    let mut out: Vec<Tensor> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, format!("{:?}", view.dtype()), view.shape().iter().map(|&d| d as u64).collect()))
        .collect();
    out.sort();
    Ok(out)
}

#[test]
fn fuzz_data_header() {
    let t = target("data_header", 4_000);
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let store = Store::open("memory://").expect("memory store");
    let strategy = prop_oneof![
        1 => bytes(48),
        3 => data_file(),
        6 => mutated(prop_oneof![data_file(), one_of(t.seeds())], JSON_TOKENS),
    ];
    t.run(strategy, |input| {
        let key = "jobs/fuzz/data.safetensors";
        let summary = rt.block_on(async {
            store
                .raw()
                .put(&store.path(key), input.to_vec().into())
                .await
                .map_err(|e| e.to_string())?;
            store.inspect_data(key).await.map_err(|e| e.to_string())
        })?;
        let Ok(summary) = summary else { return Ok(()) };
        // Accepted: the worker's loader must read the same file, with these x and y.
        let tensors = reference(input).map_err(|e| format!("accepted data that safetensors refuses: {e}"))?;
        let find = |name: &str| tensors.iter().find(|(n, _, _)| n == name);
        match (find("x"), find("y")) {
            (Some(x), Some(y)) if x.1 == summary.x_dtype && y.1 == summary.y_dtype && x.2.first() == Some(&summary.rows) => Ok(()),
            _ => Err(format!("accepted data as {summary:?}, safetensors reads {tensors:?}")),
        }
    });
}

/// A manifest as `job.submit` accepts it (files are only ever checked against those).
fn manifest() -> impl Strategy<Value = Vec<TensorSpec>> {
    let name = prop_oneof![4 => "[a-z]{1,3}(\\.[a-z]{1,3})?", 1 => ".{1,5}"];
    let role = prop_oneof![3 => Just(Role::Param), 1 => Just(Role::Buffer)];
    let dtype = proptest::sample::select(vec!["F32", "F64", "I64", "F16", "BF16", "U8", "BOOL"]).prop_map(String::from);
    vec((name, role, dtype, shape()), 1..4)
        .prop_map(|specs| {
            let mut seen = std::collections::HashSet::new();
            let mut out: Vec<TensorSpec> = specs
                .into_iter()
                .map(|(name, role, dtype, shape)| TensorSpec { name, role, dtype, shape })
                .filter(|e| seen.insert(e.key()))
                .collect();
            out[0].role = Role::Param;
            out
        })
        .prop_filter("a manifest job.submit accepts", |m| state::validate_manifest(m).is_ok())
}

/// A manifest, a kind, and a file written for it (entries dropped, added or renamed at times).
fn state_case() -> impl Strategy<Value = (Vec<TensorSpec>, StateKind, Vec<u8>)> {
    let kind = prop_oneof![Just(StateKind::Result), Just(StateKind::Checkpoint)];
    let slot = proptest::sample::select(state::OPTIM_SLOTS.to_vec());
    (manifest(), kind, shifts(), any::<bool>(), vec(any::<prop::sample::Index>(), 0..2), option::of((slot, dtype(), shape())), 0usize..9).prop_map(
        |(manifest, kind, shifts, metadata, drop, extra, pad)| {
            let mut t: Vec<Tensor> = manifest.iter().map(|e| (e.key(), e.dtype.clone(), e.shape.clone())).collect();
            if kind == StateKind::Checkpoint {
                t.push((state::META_STEP.into(), "I64".into(), vec![]));
                t.push((state::META_EPOCH.into(), "I64".into(), vec![]));
                t.push((state::META_LOSS_SUM.into(), "F64".into(), vec![]));
            }
            if let (Some((slot, dtype, shape)), Some(first)) = (extra, manifest.first()) {
                t.push((state::optim_key(slot, &first.name), dtype, shape));
            }
            for i in drop {
                if !t.is_empty() {
                    t.remove(i.index(t.len()));
                }
            }
            let bytes = file(&t, &shifts, pad, metadata);
            (manifest, kind, bytes)
        },
    )
}

/// The broker's check of a state file as the Artifacts actor runs it: on the first
/// `head_bytes` of the upload.
fn check_state(manifest: &[TensorSpec], kind: StateKind, bytes: &[u8]) -> Result<(), String> {
    let expect = Expect { kind, manifest: Arc::new(manifest.to_vec()) };
    let head = &bytes[..bytes.len().min(usize::try_from(expect.head_bytes()).unwrap_or(usize::MAX))];
    if state_check::check(head, bytes.len() as u64, &expect).is_err() {
        return Ok(());
    }
    // Accepted: safetensors reads it, with exactly the entries the model's state may have.
    let tensors = reference(bytes).map_err(|e| format!("accepted a state file that safetensors refuses: {e}"))?;
    for e in manifest {
        if !tensors.iter().any(|(n, d, s)| *n == e.key() && *d == e.dtype && *s == e.shape) {
            return Err(format!("accepted a state file without {} as declared; safetensors reads {tensors:?}", e.key()));
        }
    }
    for (name, _, _) in &tensors {
        let known = manifest.iter().any(|e| e.key() == *name)
            || (kind == StateKind::Checkpoint && (name.starts_with("meta/") || state::parse_optim_key(name).is_some()));
        if !known {
            return Err(format!("accepted a state file with the stray entry {name}"));
        }
    }
    Ok(())
}

/// The manifest of the state corpus files, as `state_check`'s own tests declare it.
fn corpus_manifest() -> Vec<TensorSpec> {
    let spec = |name: &str, role, dtype: &str, shape: &[u64]| TensorSpec { name: name.into(), role, dtype: dtype.into(), shape: shape.to_vec() };
    vec![
        spec("fc.weight", Role::Param, "F32", &[3, 2]),
        spec("fc.bias", Role::Param, "F32", &[3]),
        spec("bn.num_batches_tracked", Role::Buffer, "I64", &[]),
    ]
}

#[test]
fn fuzz_state_header() {
    let t = target("state_header", 4_000);
    let corpus = t.seeds();
    let corpus_case = (one_of(corpus), prop_oneof![Just(StateKind::Result), Just(StateKind::Checkpoint)])
        .prop_map(|(bytes, kind)| (corpus_manifest(), kind, bytes));
    let cases = prop_oneof![
        3 => state_case(),
        1 => corpus_case,
    ];
    let strategy = prop_oneof![
        1 => cases.clone(),
        3 => cases.prop_flat_map(|(m, k, bytes)| mutated(Just(bytes), JSON_TOKENS).prop_map(move |b| (m.clone(), k, b))),
    ]
    .prop_map(|(m, k, bytes)| StateInput::new(m, k, bytes));
    // The corpus files replay against the corpus manifest, as results and as checkpoints.
    for (file, bytes) in t.corpus() {
        for kind in [StateKind::Result, StateKind::Checkpoint] {
            if let Err(e) = t.guard(&bytes, &|b| check_state(&corpus_manifest(), kind, b)) {
                panic!("corpus file {file}: {e}");
            }
        }
    }
    t.run_values(strategy, |i: &StateInput| check_state(&i.manifest, i.kind, &i.bytes));
}

/// A state file with the manifest and kind it is checked against.
#[derive(Debug, Clone)]
struct StateInput {
    manifest: Vec<TensorSpec>,
    kind: StateKind,
    bytes: Vec<u8>,
}

impl StateInput {
    fn new(manifest: Vec<TensorSpec>, kind: StateKind, bytes: Vec<u8>) -> Self {
        Self { manifest, kind, bytes }
    }
}

impl AsRef<[u8]> for StateInput {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

// ---- journal entries and job records ----

fn transfer() -> impl Strategy<Value = Transfer> {
    ("[a-z0-9.:_-]{0,12}", "[a-z:]{0,8}", "[a-z:]{0,8}", any::<u64>(), ".{0,6}").prop_map(|(id, debit, credit, amount, memo)| Transfer {
        v: PROTOCOL_VERSION,
        id,
        debit,
        credit,
        amount,
        memo,
    })
}

#[test]
fn fuzz_journal_entries() {
    let t = target("journal", 10_000);
    let entries = vec(transfer(), 1..4).prop_map(|group| journal::encode_entry(&group).0);
    let strategy = prop_oneof![
        1 => bytes(64),
        6 => mutated(prop_oneof![entries, one_of(t.seeds())], MSGPACK_TOKENS),
    ];
    t.run(strategy, |input| {
        // A decoded entry is a group of transfers that encodes back to an entry of the same.
        if let Ok(group) = journal::decode_entry(input) {
            if group.is_empty() {
                return Ok(());
            }
            let again = journal::decode_entry(&journal::encode_entry(&group).0).map_err(|e| format!("re-encoded entry: {e}"))?;
            if again != group {
                return Err(format!("{group:?} came back as {again:?}"));
            }
        }
        Ok(())
    });
    // Every group survives the trip.
    t.run_values(vec(transfer(), 1..5).prop_map(GroupInput), |g: &GroupInput| {
        match journal::decode_entry(&journal::encode_entry(&g.0).0) {
            Ok(back) if back == g.0 => Ok(()),
            other => Err(format!("{:?} came back as {other:?}", g.0)),
        }
    });
}

#[derive(Debug, Clone)]
struct GroupInput(Vec<Transfer>);

impl AsRef<[u8]> for GroupInput {
    fn as_ref(&self) -> &[u8] {
        &[]
    }
}

fn info(name: &str) -> ArtifactInfo {
    ArtifactInfo { name: name.into(), size: 44, sha256: "ab".repeat(32) }
}

/// A job record with an award and a checkpoint, as the broker writes them.
fn record(epochs: u32, price: u64, eta_secs: f64) -> JobRecord {
    let training = TrainingSpec {
        epochs,
        batch_size: 32,
        loss: Loss::CrossEntropy,
        optimizer: OptimizerSpec {
            kind: OptimizerKind::Adam,
            lr: 1e-3,
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        seed: 7,
        shuffle: true,
        checkpoint_every: CheckpointEvery::Steps(100),
    };
    JobRecord {
        view: JobView {
            job_id: "j1".into(),
            principal: "alice".into(),
            name: Some("mnist".into()),
            state: JobState::Running,
            reason: None,
            reason_code: None,
            worker: Some("w1".into()),
            price: Some(price),
            paid: 0,
            epochs,
            epochs_done: 1,
            last_loss: Some(0.5),
            result: None,
            created_ms: 1,
            updated_ms: 2,
        },
        training,
        requirements: Requirements { device: DeviceKind::Cuda, min_memory_bytes: 1 << 30, max_price_per_hour: 10, budget: 1000, deadline_ms: 0 },
        work: DeclaredWork { parameters: 10, samples: 100, epochs },
        model: info("model"),
        data: info("data"),
        awards: 1,
        accepted_awards: 1,
        award: Some(AwardRecord {
            award_id: "a1".into(),
            n: 1,
            worker_id: "w1".into(),
            owner: "bob".into(),
            price,
            eta_secs,
            throughput: 1e6,
            start_epoch: 0,
            start_step: 0,
            held: true,
            elapsed_ms: 1,
            settled: false,
            settle_steps: Some(3),
            stored_result: None,
            stored_checkpoints: vec![info("checkpoints/3")],
            checkpoint_uploads: 1,
        }),
        checkpoint: Some(CheckpointRecord { epoch: 1, step: 3, artifact: info("checkpoints/3") }),
        excluded_workers: vec!["w0".into()],
        state: corpus_manifest(),
        reason: None,
        swept: false,
    }
}

#[test]
fn fuzz_job_records() {
    let t = target("job_record", 10_000);
    let records = (any::<u32>(), any::<u64>(), any::<f64>()).prop_map(|(e, p, eta)| encode(&record(e, p, eta)));
    let strategy = prop_oneof![
        1 => bytes(64),
        6 => mutated(prop_oneof![records, one_of(t.seeds())], MSGPACK_TOKENS),
    ];
    // What JobManager does with each value of the jobs bucket at start-up.
    let read = |b: &[u8]| rmp_serde::from_slice::<JobRecord>(b);
    t.run(strategy, |input| {
        if let Ok(r) = read(input) {
            let again = read(&encode(&r)).map_err(|e| format!("a record's own encoding does not read back: {e}"))?;
            if encode(&again) != encode(&r) {
                return Err("a record does not round-trip".into());
            }
        }
        Ok(())
    });
}
