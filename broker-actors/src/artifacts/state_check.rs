//! The check a worker's result or checkpoint passes before it is stored: a safetensors state
//! file ([`helium_protocol::state`]) whose names, shapes and dtypes match the job's model, as
//! the researcher's client declared them at submit. Only the header is read (the Artifacts
//! actor keeps the first bytes of such an upload, at most [`Expect::head_bytes`]); every
//! number in it comes from the worker, so arithmetic is checked and offsets are never trusted:
//! the tensors must tile the body exactly, which also leaves no room for anything else (a
//! module archive, say) between them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use helium_protocol::state::{self, Role, TensorSpec};
use serde::Deserialize;

/// Which kind of state file an upload must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// `param/…` and `buffer/…`, exactly.
    Result,
    /// Those, the `meta/` scalars, and `optim/` entries of known slots and parameters.
    Checkpoint,
}

/// What an upload is checked against.
#[derive(Debug, Clone)]
pub struct Expect {
    pub kind: StateKind,
    pub manifest: Arc<Vec<TensorSpec>>,
}

/// Why a state file is refused; the text is what the worker reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the job has no state manifest to check it against")]
    NoManifest,
    #[error("it is not safetensors: {0}")]
    NotSafetensors(String),
    #[error("its header of {got} bytes is longer than this model's state needs ({limit})")]
    HeaderTooLong { got: u64, limit: u64 },
    #[error("its tensor {0} has a malformed header entry")]
    Malformed(String),
    #[error("its tensor {name} has dtype {dtype}, which state files do not carry")]
    UnknownDtype { name: String, dtype: String },
    #[error("its tensors do not tile the file exactly (overlapping, out of range or with gaps)")]
    Layout,
    #[error("it lacks {0}")]
    Missing(String),
    #[error("it has {0}, which the model does not")]
    Unexpected(String),
    #[error("its {name} is {got_dtype} {got_shape:?}, the model's is {dtype} {shape:?}")]
    Mismatch {
        name: String,
        dtype: String,
        shape: Vec<u64>,
        got_dtype: String,
        got_shape: Vec<u64>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorHeader {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Entry {
    Tensor(TensorHeader),
    Metadata(#[allow(dead_code)] BTreeMap<String, String>),
}

/// Header bytes one entry named `key` of rank `rank` can take, generously.
fn entry_bytes(key_len: usize, rank: usize) -> u64 {
    (key_len + 128 + 24 * rank) as u64
}

impl Expect {
    /// The most bytes the header (with its 8-byte length) of a file matching the manifest
    /// takes: what the upload buffers, and the longest header accepted.
    pub fn head_bytes(&self) -> u64 {
        let slots = state::OPTIM_SLOTS.iter().map(|s| s.len() + state::OPTIM.len() + 1).max().unwrap_or(0);
        let per: u64 = self
            .manifest
            .iter()
            .map(|e| {
                let key = e.name.len() + state::PARAM.len().max(state::BUFFER.len());
                let optim = match (self.kind, e.role) {
                    (StateKind::Checkpoint, Role::Param) => {
                        state::OPTIM_SLOTS.len() as u64 * entry_bytes(e.name.len() + slots, e.shape.len())
                    }
                    _ => 0,
                };
                entry_bytes(key, e.shape.len()) + optim
            })
            .sum();
        // The meta scalars, a `__metadata__` map, the braces and alignment padding.
        8 + per + 3 * entry_bytes(16, 0) + 4096
    }

    fn expected(&self) -> HashMap<String, (String, Vec<u64>)> {
        let mut out: HashMap<String, (String, Vec<u64>)> = self
            .manifest
            .iter()
            .map(|e| (e.key(), (e.dtype.clone(), e.shape.clone())))
            .collect();
        if self.kind == StateKind::Checkpoint {
            out.insert(state::META_STEP.into(), ("I64".into(), vec![]));
            out.insert(state::META_EPOCH.into(), ("I64".into(), vec![]));
            out.insert(state::META_LOSS_SUM.into(), ("F64".into(), vec![]));
        }
        out
    }

    /// The dtype and shape an `optim/<slot>/<param>` entry must have, if it may be there.
    fn optim_entry(&self, key: &str) -> Option<(String, Vec<u64>)> {
        if self.kind != StateKind::Checkpoint {
            return None;
        }
        let (slot, param) = state::parse_optim_key(key)?;
        let spec = self.manifest.iter().find(|e| e.role == Role::Param && e.name == param)?;
        Some(match slot {
            "step" => ("I64".into(), vec![]),
            _ => (spec.dtype.clone(), spec.shape.clone()),
        })
    }
}

/// Checks a state file of `file_size` bytes whose first bytes are `head`.
pub fn check(head: &[u8], file_size: u64, expect: &Expect) -> Result<(), StateError> {
    if expect.manifest.is_empty() {
        return Err(StateError::NoManifest);
    }
    let not = |why: &str| StateError::NotSafetensors(why.to_string());
    let len_bytes: [u8; 8] = head
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| not("shorter than a safetensors header"))?;
    let header_len = u64::from_le_bytes(len_bytes);
    let limit = expect.head_bytes().saturating_sub(8);
    if header_len > limit {
        return Err(StateError::HeaderTooLong { got: header_len, limit });
    }
    let body = file_size
        .checked_sub(8)
        .and_then(|rest| rest.checked_sub(header_len))
        .ok_or_else(|| not("the header runs past the end of the file"))?;
    let header = usize::try_from(header_len)
        .ok()
        .and_then(|n| head.get(8..8 + n))
        .ok_or_else(|| not("the header runs past the end of the file"))?;
    // As the safetensors readers (the worker's, the client's) demand.
    if header.first() != Some(&b'{') {
        return Err(not("the header does not start with `{`"));
    }
    let entries: BTreeMap<String, Entry> =
        serde_json::from_slice(header).map_err(|e| StateError::NotSafetensors(format!("the header is not a safetensors header ({e})")))?;

    let mut expected = expect.expected();
    let mut ranges = Vec::with_capacity(entries.len());
    for (name, entry) in entries {
        let t = match entry {
            Entry::Metadata(_) if name == "__metadata__" => continue,
            Entry::Metadata(_) => return Err(StateError::Malformed(name)),
            Entry::Tensor(t) => t,
        };
        let Some(item) = state::dtype_bytes(&t.dtype) else {
            return Err(StateError::UnknownDtype { name, dtype: t.dtype });
        };
        let (start, end) = t.data_offsets;
        let bytes = t.shape.iter().try_fold(item, |acc, &d| acc.checked_mul(d));
        if start > end || end > body || bytes != Some(end - start) {
            return Err(StateError::Layout);
        }
        ranges.push((start, end));
        let want = match expected.remove(&name) {
            Some(want) => want,
            None => expect.optim_entry(&name).ok_or_else(|| StateError::Unexpected(name.clone()))?,
        };
        if want.0 != t.dtype || want.1 != t.shape {
            return Err(StateError::Mismatch {
                name,
                dtype: want.0,
                shape: want.1,
                got_dtype: t.dtype,
                got_shape: t.shape,
            });
        }
    }
    if let Some(missing) = expected.into_keys().min() {
        return Err(StateError::Missing(missing));
    }
    // The tensors tile the body: sorted, each starts where the previous ended, the last ends
    // at the end of the file.
    ranges.sort_unstable();
    let mut at = 0u64;
    for (start, end) in ranges {
        if start != at {
            return Err(StateError::Layout);
        }
        at = end;
    }
    if at != body {
        return Err(StateError::Layout);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, role: Role, dtype: &str, shape: &[u64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            role,
            dtype: dtype.into(),
            shape: shape.to_vec(),
        }
    }

    fn expect(kind: StateKind) -> Expect {
        Expect {
            kind,
            manifest: Arc::new(vec![
                spec("fc.weight", Role::Param, "F32", &[3, 2]),
                spec("fc.bias", Role::Param, "F32", &[3]),
                spec("bn.num_batches_tracked", Role::Buffer, "I64", &[]),
            ]),
        }
    }

    /// A safetensors file of `(name, dtype, shape)` tensors laid out back to back.
    fn file(tensors: &[(&str, &str, &[u64])]) -> Vec<u8> {
        let mut at = 0u64;
        let entries: Vec<String> = tensors
            .iter()
            .map(|(name, dtype, shape)| {
                let n = shape.iter().product::<u64>() * state::dtype_bytes(dtype).unwrap_or(1);
                let e = format!(r#""{name}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{at},{}]}}"#, at + n);
                at += n;
                e
            })
            .collect();
        raw(&format!("{{{}}}", entries.join(",")), at)
    }

    fn raw(header: &str, body: u64) -> Vec<u8> {
        let mut header = header.to_string();
        while header.len() % 8 != 0 {
            header.push(' ');
        }
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + body as usize, 0);
        bytes
    }

    fn run(bytes: &[u8], kind: StateKind) -> Result<(), StateError> {
        check(bytes, bytes.len() as u64, &expect(kind))
    }

    const RESULT: [(&str, &str, &[u64]); 3] = [
        ("param/fc.weight", "F32", &[3, 2]),
        ("param/fc.bias", "F32", &[3]),
        ("buffer/bn.num_batches_tracked", "I64", &[]),
    ];

    #[test]
    fn a_matching_result_passes() {
        assert_eq!(run(&file(&RESULT), StateKind::Result), Ok(()));
    }

    #[test]
    fn a_matching_checkpoint_passes_with_meta_and_optimizer_state() {
        let mut t = RESULT.to_vec();
        t.extend_from_slice(&[
            ("meta/step", "I64", &[]),
            ("meta/epoch", "I64", &[]),
            ("meta/loss_sum", "F64", &[]),
            ("optim/step/fc.weight", "I64", &[]),
            ("optim/exp_avg/fc.weight", "F32", &[3, 2]),
        ]);
        assert_eq!(run(&file(&t), StateKind::Checkpoint), Ok(()));
        // The same file is no result, and a result is no checkpoint.
        assert_eq!(
            run(&file(&t), StateKind::Result),
            Err(StateError::Unexpected("meta/epoch".into()))
        );
        assert_eq!(
            run(&file(&RESULT), StateKind::Checkpoint),
            Err(StateError::Missing("meta/epoch".into()))
        );
    }

    #[test]
    fn wrong_shape_or_dtype_is_refused() {
        let mut t = RESULT.to_vec();
        t[0] = ("param/fc.weight", "F32", &[2, 3]);
        assert!(matches!(run(&file(&t), StateKind::Result), Err(StateError::Mismatch { name, .. }) if name == "param/fc.weight"));
        t[0] = ("param/fc.weight", "F64", &[3, 2]);
        assert!(matches!(run(&file(&t), StateKind::Result), Err(StateError::Mismatch { got_dtype, .. }) if got_dtype == "F64"));
        let mut c = RESULT.to_vec();
        c.extend_from_slice(&[("meta/step", "F32", &[]), ("meta/epoch", "I64", &[]), ("meta/loss_sum", "F64", &[])]);
        assert!(matches!(run(&file(&c), StateKind::Checkpoint), Err(StateError::Mismatch { .. })));
        let mut o = RESULT.to_vec();
        o.extend_from_slice(&[("meta/step", "I64", &[]), ("meta/epoch", "I64", &[]), ("meta/loss_sum", "F64", &[])]);
        o.push(("optim/exp_avg/fc.bias", "F32", &[4]));
        assert!(matches!(run(&file(&o), StateKind::Checkpoint), Err(StateError::Mismatch { .. })));
    }

    #[test]
    fn missing_or_extra_names_are_refused() {
        assert_eq!(
            run(&file(&RESULT[1..]), StateKind::Result),
            Err(StateError::Missing("param/fc.weight".into()))
        );
        let mut t = RESULT.to_vec();
        t.push(("module.torchscript", "U8", &[64]));
        assert_eq!(
            run(&file(&t), StateKind::Result),
            Err(StateError::Unexpected("module.torchscript".into()))
        );
        // Optimizer state only for declared parameters, only known slots, only in checkpoints.
        let mut c = RESULT.to_vec();
        c.extend_from_slice(&[("meta/step", "I64", &[]), ("meta/epoch", "I64", &[]), ("meta/loss_sum", "F64", &[])]);
        for extra in ["optim/exp_avg/bn.num_batches_tracked", "optim/evil/fc.bias", "optim/exp_avg/nope"] {
            let mut bad = c.clone();
            bad.push((extra, "F32", &[3]));
            assert_eq!(run(&file(&bad), StateKind::Checkpoint), Err(StateError::Unexpected(extra.into())));
        }
        let mut r = RESULT.to_vec();
        r.push(("optim/exp_avg/fc.bias", "F32", &[3]));
        assert!(matches!(run(&file(&r), StateKind::Result), Err(StateError::Unexpected(_))));
    }

    #[test]
    fn hostile_offsets_and_sizes_are_refused() {
        let w = r#""param/fc.bias":{"dtype":"F32","shape":[3],"data_offsets":[24,36]},"buffer/bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[36,44]}"#;
        let ok = raw(&format!(r#"{{"param/fc.weight":{{"dtype":"F32","shape":[3,2],"data_offsets":[0,24]}},{w}}}"#), 44);
        assert_eq!(run(&ok, StateKind::Result), Ok(()));
        for weight in [
            r#"[0,18446744073709551615]"#, // past the end
            r#"[24,0]"#,                   // backwards
            r#"[12,36]"#,                  // overlaps fc.bias
            r#"[4,28]"#,                   // a gap before it
        ] {
            let h = format!(r#"{{"param/fc.weight":{{"dtype":"F32","shape":[3,2],"data_offsets":{weight}}},{w}}}"#);
            assert_eq!(run(&raw(&h, 44), StateKind::Result), Err(StateError::Layout), "{weight}");
        }
        // Bytes after the last tensor (room for a hidden archive) are refused.
        let mut longer = file(&RESULT);
        longer.extend_from_slice(b"PK\x03\x04 hidden");
        assert_eq!(run(&longer, StateKind::Result), Err(StateError::Layout));
        // A shape whose size overflows never wraps.
        let h = format!(r#"{{"param/fc.weight":{{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,24]}},{w}}}"#);
        assert_eq!(run(&raw(&h, 44), StateKind::Result), Err(StateError::Layout));
        // Length prefixes that lie.
        assert!(matches!(run(&u64::MAX.to_le_bytes(), StateKind::Result), Err(StateError::HeaderTooLong { .. })));
        assert!(matches!(run(&[1, 2, 3], StateKind::Result), Err(StateError::NotSafetensors(_))));
        let mut short = 100u64.to_le_bytes().to_vec();
        short.extend_from_slice(b"{}");
        assert!(matches!(run(&short, StateKind::Result), Err(StateError::NotSafetensors(_))));
        assert!(matches!(check(&ok, 10, &expect(StateKind::Result)), Err(StateError::NotSafetensors(_))));
        let spaced = raw(&format!(" {}", std::str::from_utf8(&ok[8..]).unwrap_or_default().trim_end()), 44);
        assert!(matches!(run(&spaced, StateKind::Result), Err(StateError::NotSafetensors(_))));
        let mut not_json = 8u64.to_le_bytes().to_vec();
        not_json.extend_from_slice(b"not json");
        assert!(matches!(run(&not_json, StateKind::Result), Err(StateError::NotSafetensors(_))));
        // Unknown dtypes and malformed entries.
        let h = r#"{"param/fc.weight":{"dtype":"F8_E4M3","shape":[3,2],"data_offsets":[0,6]}}"#;
        assert!(matches!(run(&raw(h, 6), StateKind::Result), Err(StateError::UnknownDtype { .. })));
        let h = r#"{"param/fc.weight":{"dtype":"F32","shape":[3,2],"data_offsets":[0,24],"code":"x"}}"#;
        assert!(matches!(run(&raw(h, 24), StateKind::Result), Err(StateError::NotSafetensors(_))));
        let h = r#"{"param/fc.weight":{"code":"x"}}"#;
        assert_eq!(run(&raw(h, 0), StateKind::Result), Err(StateError::Malformed("param/fc.weight".into())));
    }

    #[test]
    fn the_header_bound_follows_the_model() {
        let e = expect(StateKind::Result);
        let padded = raw(&format!("{{{}}}", " ".repeat(e.head_bytes() as usize)), 0);
        assert!(matches!(run(&padded, StateKind::Result), Err(StateError::HeaderTooLong { .. })));
        assert!(expect(StateKind::Checkpoint).head_bytes() > e.head_bytes());
        let none = Expect {
            kind: StateKind::Result,
            manifest: Arc::new(vec![]),
        };
        assert_eq!(check(&file(&RESULT), 100, &none), Err(StateError::NoManifest));
    }
}
