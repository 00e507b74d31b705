//! Tensor state files: what a checkpoint or a result holds, and the model's state manifest the
//! broker checks them against. No program crosses from one machine to another in these files
//! (DESIGN §7): a worker loads the researcher's own `model.pt` and copies tensors into it, and
//! `job.result()` does the same on the researcher's machine.
//!
//! A state file is safetensors. Tensor names, by prefix:
//! - `param/<name>`: each parameter, named as in the scripted module's `named_parameters()`;
//! - `buffer/<name>`: each buffer (BatchNorm statistics…), as in `named_buffers()`;
//! - `optim/<slot>/<name>` (checkpoints only): optimizer state of parameter `<name>`, `<slot>`
//!   one of [`OPTIM_SLOTS`] as in torch.optim's `state_dict()`; `step` is an int64 scalar, the
//!   others have the parameter's shape and dtype;
//! - `meta/step`, `meta/epoch` (int64 scalars) and `meta/loss_sum` (float64 scalar), checkpoints
//!   only: optimizer steps taken, epochs complete, and the size-weighted loss sum of the epoch
//!   in progress.
//!
//! A result holds exactly the `param/` and `buffer/` entries; a checkpoint holds them, the
//! three `meta/` entries, and any `optim/` entries of known slots and parameters. Nothing else.

use serde::{Deserialize, Serialize};

pub const PARAM: &str = "param/";
pub const BUFFER: &str = "buffer/";
pub const OPTIM: &str = "optim/";
pub const META_STEP: &str = "meta/step";
pub const META_EPOCH: &str = "meta/epoch";
pub const META_LOSS_SUM: &str = "meta/loss_sum";
/// Optimizer state slots, as torch.optim names them.
pub const OPTIM_SLOTS: [&str; 4] = ["step", "exp_avg", "exp_avg_sq", "momentum_buffer"];

/// Most parameters and buffers a model may declare.
pub const MAX_STATE_ENTRIES: usize = 4096;
/// Longest parameter or buffer name, in bytes.
pub const MAX_STATE_NAME_BYTES: usize = 256;
/// Most bytes all names of one manifest may take together (it lives in the job record).
pub const MAX_STATE_NAMES_TOTAL: usize = 128 * 1024;
/// Most dimensions of one tensor.
pub const MAX_STATE_RANK: usize = 16;

/// Whether an entry of the manifest is a parameter or a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Param,
    Buffer,
}

/// One parameter or buffer of the researcher's model. `dtype` is safetensors' spelling
/// (`F32`, `I64`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub role: Role,
    pub dtype: String,
    pub shape: Vec<u64>,
}

impl TensorSpec {
    /// The entry's name in a state file.
    pub fn key(&self) -> String {
        match self.role {
            Role::Param => param_key(&self.name),
            Role::Buffer => buffer_key(&self.name),
        }
    }
}

pub fn param_key(name: &str) -> String {
    format!("{PARAM}{name}")
}
pub fn buffer_key(name: &str) -> String {
    format!("{BUFFER}{name}")
}
pub fn optim_key(slot: &str, param: &str) -> String {
    format!("{OPTIM}{slot}/{param}")
}
/// `(slot, parameter)` of an `optim/<slot>/<parameter>` name with a known slot.
pub fn parse_optim_key(key: &str) -> Option<(&'static str, &str)> {
    let (slot, param) = key.strip_prefix(OPTIM)?.split_once('/')?;
    let slot = OPTIM_SLOTS.iter().find(|s| **s == slot)?;
    Some((slot, param))
}

/// Dtypes a state tensor may have, with their element sizes.
pub fn dtype_bytes(dtype: &str) -> Option<u64> {
    match dtype {
        "F64" | "I64" | "U64" => Some(8),
        "F32" | "I32" | "U32" => Some(4),
        "F16" | "BF16" | "I16" | "U16" => Some(2),
        "I8" | "U8" | "BOOL" => Some(1),
        _ => None,
    }
}

/// Why a manifest is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the model declares no parameters")]
    Empty,
    #[error("the model declares {0} parameters and buffers, over the limit of {MAX_STATE_ENTRIES}")]
    TooMany(usize),
    #[error("a parameter or buffer name is empty, longer than {MAX_STATE_NAME_BYTES} bytes, or holds '/' or a control character")]
    BadName,
    #[error("the model's parameter and buffer names take over {MAX_STATE_NAMES_TOTAL} bytes")]
    NamesTooLong,
    #[error("`{0}` is declared twice")]
    Duplicate(String),
    #[error("`{name}` has dtype {dtype}, which state files do not carry")]
    Dtype { name: String, dtype: String },
    #[error("`{0}` has more than {MAX_STATE_RANK} dimensions")]
    Rank(String),
}

/// Checks a submitted manifest: bounded, names unique and usable as keys, dtypes known.
pub fn validate_manifest(entries: &[TensorSpec]) -> Result<(), ManifestError> {
    if !entries.iter().any(|e| e.role == Role::Param) {
        return Err(ManifestError::Empty);
    }
    if entries.len() > MAX_STATE_ENTRIES {
        return Err(ManifestError::TooMany(entries.len()));
    }
    let mut total = 0usize;
    let mut seen = std::collections::HashSet::new();
    for e in entries {
        let ok = !e.name.is_empty()
            && e.name.len() <= MAX_STATE_NAME_BYTES
            && !e.name.contains('/')
            && !e.name.chars().any(char::is_control);
        if !ok {
            return Err(ManifestError::BadName);
        }
        total += e.name.len();
        if total > MAX_STATE_NAMES_TOTAL {
            return Err(ManifestError::NamesTooLong);
        }
        if !seen.insert(e.key()) {
            return Err(ManifestError::Duplicate(e.name.clone()));
        }
        if dtype_bytes(&e.dtype).is_none() {
            return Err(ManifestError::Dtype {
                name: e.name.clone(),
                dtype: e.dtype.clone(),
            });
        }
        if e.shape.len() > MAX_STATE_RANK {
            return Err(ManifestError::Rank(e.name.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, role: Role) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            role,
            dtype: "F32".into(),
            shape: vec![2],
        }
    }

    #[test]
    fn manifests_are_bounded_and_unambiguous() {
        assert!(validate_manifest(&[spec("fc.weight", Role::Param), spec("bn.running_mean", Role::Buffer)]).is_ok());
        assert_eq!(validate_manifest(&[spec("b", Role::Buffer)]), Err(ManifestError::Empty));
        assert_eq!(validate_manifest(&[spec("a/b", Role::Param)]), Err(ManifestError::BadName));
        assert_eq!(validate_manifest(&[spec(&"a".repeat(257), Role::Param)]), Err(ManifestError::BadName));
        assert!(matches!(
            validate_manifest(&[spec("w", Role::Param), spec("w", Role::Param)]),
            Err(ManifestError::Duplicate(_))
        ));
        let mut odd = spec("w", Role::Param);
        odd.dtype = "F8_E4M3".into();
        assert!(matches!(validate_manifest(&[odd]), Err(ManifestError::Dtype { .. })));
        let many: Vec<_> = (0..=MAX_STATE_ENTRIES).map(|i| spec(&format!("p{i}"), Role::Param)).collect();
        assert!(matches!(validate_manifest(&many), Err(ManifestError::TooMany(_))));
    }

    #[test]
    fn optim_keys_round_trip() {
        assert_eq!(optim_key("exp_avg", "fc.weight"), "optim/exp_avg/fc.weight");
        assert_eq!(parse_optim_key("optim/exp_avg/fc.weight"), Some(("exp_avg", "fc.weight")));
        assert_eq!(parse_optim_key("optim/other/fc.weight"), None);
        assert_eq!(parse_optim_key("param/fc.weight"), None);
    }
}
