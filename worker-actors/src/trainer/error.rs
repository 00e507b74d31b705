//! Why a training run stopped, in words a researcher can act on.
//!
//! The `Display` text becomes the `reason` of the `failed` event and is shown in the notebook,
//! so each variant names the file or setting at fault. libtorch's messages carry a C++
//! backtrace after the first lines; [`torch_reason`] keeps only the human part.

use std::path::PathBuf;

use tch::TchError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("spec.json is not a valid training spec: {0}")]
    Spec(String),
    /// `torch.jit.load` failed: not an archive, or the model's own code (its `__setstate__`,
    /// which runs while loading) failed, e.g. refused by the sandbox.
    #[error("model.pt cannot be loaded (not a TorchScript archive, or its code failed while loading): {0}")]
    NotTorchScript(String),
    /// The model loaded but cannot be trained as asked (forward fails, no parameters, …).
    #[error("{0}")]
    Model(String),
    /// `data.safetensors` is missing tensors or they do not fit together.
    #[error("{0}")]
    Data(String),
    /// The loss cannot be computed from the model output and `y`.
    #[error("{0}")]
    Loss(String),
    #[error("invalid optimizer setting: {0}")]
    Optimizer(String),
    #[error(
        "the training loss became {value} in epoch {epoch}; try a lower learning rate or check the data for NaN/inf"
    )]
    NonFinite { epoch: u32, value: f64 },
    #[error("resume.safetensors does not fit this job: {0}")]
    Resume(String),
    #[error("{0}")]
    Device(String),
    /// The worker's own checkpoint machinery failed (not the model's fault).
    #[error("checkpointing failed: {0}")]
    Checkpoint(String),
    /// A libtorch call failed where no better explanation is known.
    #[error("{context}: {reason}")]
    Torch { context: String, reason: String },
    #[error("cannot report to the worker agent on stdout: {0}")]
    Report(std::io::Error),
}

impl TrainError {
    /// Wraps a libtorch failure with what the trainer was doing.
    pub fn torch(context: impl Into<String>, err: TchError) -> Self {
        Self::Torch {
            context: context.into(),
            reason: torch_reason(&err),
        }
    }
}

/// Adds `.ctx("what was being done")` to tch results.
pub trait TorchContext<T> {
    fn ctx(self, context: &str) -> Result<T, TrainError>;
}

impl<T> TorchContext<T> for Result<T, TchError> {
    fn ctx(self, context: &str) -> Result<T, TrainError> {
        self.map_err(|e| TrainError::torch(context, e))
    }
}

/// The message of a libtorch error without its C++ backtrace and frame list. For an error
/// inside TorchScript code it is the final `SomeError: message` line under the traceback.
pub fn torch_reason(err: &TchError) -> String {
    let text = match err {
        TchError::Torch(msg) => msg.clone(),
        other => other.to_string(),
    };
    if text.contains("Traceback of TorchScript") {
        let raised = text.lines().rev().find_map(|line| {
            let (kind, message) = line.trim().split_once(": ")?;
            let is_kind = kind.ends_with("Error") || kind.ends_with("Exception");
            (is_kind && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')).then_some(message)
        });
        if let Some(message) = raised {
            return message.trim().to_owned();
        }
    }
    let mut lines = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("Exception raised from")
            || trimmed.starts_with("frame #")
            || trimmed.starts_with("Traceback of TorchScript")
        {
            break;
        }
        if !trimmed.is_empty() {
            lines.push(trimmed);
        }
    }
    if lines.is_empty() {
        text.lines()
            .next()
            .unwrap_or("unknown libtorch error")
            .trim()
            .to_owned()
    } else {
        lines.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_message_and_drops_the_backtrace() {
        let err = TchError::Torch(
            "PytorchStreamReader failed reading zip archive: failed finding central directory\n\
             Exception raised from valid at ../caffe2/serialize/inline_container.cc:236\n\
             frame #0: c10::Error::Error(...)"
                .into(),
        );
        assert_eq!(
            torch_reason(&err),
            "PytorchStreamReader failed reading zip archive: failed finding central directory"
        );
    }

    #[test]
    fn torchscript_errors_keep_the_raised_message() {
        let err = TchError::Torch(
            "The following operation failed in the TorchScript interpreter.\n\
             Traceback of TorchScript, serialized code (most recent call last):\n  \
             File \"code/__torch__/m.py\", line 12, in forward\n    \
             return torch.linear(input, weight, bias)\n           ~~~~~~~~~~~~ <--- HERE\n\
             RuntimeError: mat1 and mat2 shapes cannot be multiplied (8x5 and 8x4)\n"
                .into(),
        );
        assert_eq!(
            torch_reason(&err),
            "mat1 and mat2 shapes cannot be multiplied (8x5 and 8x4)"
        );
    }
}
