//! The loss menu with torch.nn.functional's semantics (mean reduction, default arguments).
//!
//! Targets are checked once, before training, so that a mistake such as float labels for
//! cross_entropy is reported in words instead of as a libtorch error mid-epoch.

use helium_protocol::job::Loss;
use tch::{Kind, Reduction, Tensor};

use super::error::{TorchContext, TrainError};
use super::model::ScriptModel;

/// torch's default `ignore_index` for cross_entropy and nll_loss.
const IGNORE_INDEX: i64 = -100;

pub fn name(loss: Loss) -> &'static str {
    match loss {
        Loss::CrossEntropy => "cross_entropy",
        Loss::Mse => "mse",
        Loss::L1 => "l1",
        Loss::BceWithLogits => "bce_with_logits",
        Loss::Nll => "nll",
        Loss::Module => "module",
    }
}

fn is_integer(kind: Kind) -> bool {
    matches!(kind, Kind::Uint8 | Kind::Int8 | Kind::Int16 | Kind::Int | Kind::Int64)
}

fn is_float(kind: Kind) -> bool {
    matches!(kind, Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double)
}

/// Checks `y` against the loss and returns it in the dtype the loss needs: class labels as
/// int64 (what torch requires), regression targets unchanged (cast to the output's float
/// dtype per batch, see [`compute`]).
pub fn prepare_targets(loss: Loss, name_of_y: &str, y: Tensor) -> Result<Tensor, TrainError> {
    let kind = y.kind();
    let labels_needed =
        |what: &str| TrainError::Loss(format!("loss {} needs {what} in {name_of_y}, got {kind:?}", name(loss)));
    match loss {
        Loss::CrossEntropy if is_integer(kind) => y.f_to_kind(Kind::Int64).ctx("converting y"),
        // Class probabilities, one row per sample (torch allows them since 1.10).
        Loss::CrossEntropy if is_float(kind) && y.dim() >= 2 => Ok(y),
        Loss::CrossEntropy => Err(labels_needed("integer class labels")),
        Loss::Nll if is_integer(kind) => y.f_to_kind(Kind::Int64).ctx("converting y"),
        Loss::Nll => Err(labels_needed("integer class labels")),
        Loss::Mse | Loss::L1 | Loss::BceWithLogits if is_float(kind) || is_integer(kind) => Ok(y),
        Loss::Mse | Loss::L1 | Loss::BceWithLogits => Err(labels_needed("numeric targets")),
        Loss::Module => Ok(y),
    }
}

/// The mean loss of one batch, a scalar that `backward` can start from.
pub fn compute(loss: Loss, model: &ScriptModel, x: &Tensor, y: &Tensor) -> Result<Tensor, TrainError> {
    if loss == Loss::Module {
        let value = model.training_loss(x, y)?;
        if value.numel() != 1 || !is_float(value.kind()) {
            return Err(TrainError::Loss(format!(
                "training_loss(x, y) must return a float scalar, got {:?} of shape {:?}",
                value.kind(),
                value.size()
            )));
        }
        return value.f_reshape([]).ctx("reading training_loss");
    }
    let out = model.forward(x)?;
    of_output(loss, &out, y)
}

/// A menu loss of a model output, with torch's mean reduction.
pub fn of_output(loss: Loss, out: &Tensor, y: &Tensor) -> Result<Tensor, TrainError> {
    let what = name(loss);
    if !is_float(out.kind()) {
        return Err(TrainError::Loss(format!(
            "loss {what} needs a float model output, got {:?}",
            out.kind()
        )));
    }
    let same_shape = || {
        if out.size() == y.size() {
            Ok(())
        } else {
            Err(TrainError::Loss(format!(
                "loss {what} needs the model output and y to have the same shape, got {:?} and {:?}",
                out.size(),
                y.size()
            )))
        }
    };
    let as_out = |t: &Tensor| -> Result<Tensor, TrainError> {
        if t.kind() == out.kind() {
            Ok(t.shallow_clone())
        } else {
            t.f_to_kind(out.kind()).ctx("converting y to the output dtype")
        }
    };
    let context = format!("computing loss {what}");
    let value = match loss {
        Loss::CrossEntropy => {
            let target = if is_float(y.kind()) {
                as_out(y)?
            } else {
                y.shallow_clone()
            };
            out.f_cross_entropy_loss::<Tensor>(&target, None, Reduction::Mean, IGNORE_INDEX, 0.0)
        }
        Loss::Nll => out.f_nll_loss::<Tensor>(y, None, Reduction::Mean, IGNORE_INDEX),
        Loss::Mse => {
            same_shape()?;
            out.f_mse_loss(&as_out(y)?, Reduction::Mean)
        }
        Loss::L1 => {
            same_shape()?;
            out.f_l1_loss(&as_out(y)?, Reduction::Mean)
        }
        Loss::BceWithLogits => {
            same_shape()?;
            out.f_binary_cross_entropy_with_logits::<Tensor>(&as_out(y)?, None, None, Reduction::Mean)
        }
        Loss::Module => unreachable!("handled by compute"),
    };
    value.map_err(|e| TrainError::Loss(format!("{context}: {}", super::error::torch_reason(&e))))
}

/// How many predictions in the batch are right, for classification losses; `None` otherwise.
pub fn correct(loss: Loss, out: &Tensor, y: &Tensor) -> Result<Option<f64>, TrainError> {
    let hits = match loss {
        Loss::CrossEntropy | Loss::Nll if out.dim() >= 2 && is_integer(y.kind()) => {
            out.f_argmax(1, false).and_then(|p| p.f_eq_tensor(y))
        }
        Loss::BceWithLogits => out.f_gt(0.0).and_then(|p| y.f_gt(0.5).and_then(|t| p.f_eq_tensor(&t))),
        _ => return Ok(None),
    };
    let hits = hits.and_then(|h| h.f_sum(Kind::Double)).ctx("computing accuracy")?;
    Ok(Some(hits.f_double_value(&[]).ctx("reading accuracy")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    const CPU: (Kind, Device) = (Kind::Float, Device::Cpu);

    #[test]
    fn cross_entropy_rejects_float_labels_in_words() {
        let y = Tensor::zeros([4], CPU);
        let err = prepare_targets(Loss::CrossEntropy, "y", y).err().unwrap();
        assert_eq!(
            err.to_string(),
            "loss cross_entropy needs integer class labels in y, got Float"
        );
        let y = Tensor::zeros([4], (Kind::Int, Device::Cpu));
        assert_eq!(prepare_targets(Loss::CrossEntropy, "y", y).unwrap().kind(), Kind::Int64);
        let err = prepare_targets(Loss::Nll, "y_val", Tensor::zeros([4], CPU))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "loss nll needs integer class labels in y_val, got Float"
        );
    }

    #[test]
    fn mean_reduction_matches_hand_computation() {
        let out = Tensor::from_slice(&[1.0f32, 2.0, 4.0]);
        let y = Tensor::from_slice(&[0.0f32, 0.0, 0.0]);
        let mse = of_output(Loss::Mse, &out, &y).unwrap().double_value(&[]);
        assert!((mse - 7.0).abs() < 1e-6, "{mse}");
        let l1 = of_output(Loss::L1, &out, &y).unwrap().double_value(&[]);
        assert!((l1 - 7.0 / 3.0).abs() < 1e-6, "{l1}");
        // Integer regression targets are cast to the output dtype.
        let yi = Tensor::from_slice(&[1i64, 2, 4]);
        assert_eq!(of_output(Loss::Mse, &out, &yi).unwrap().double_value(&[]), 0.0);
    }

    #[test]
    fn cross_entropy_is_mean_negative_log_softmax() {
        // Two samples, uniform logits over 4 classes: loss = ln 4.
        let out = Tensor::zeros([2, 4], CPU);
        let y = Tensor::from_slice(&[1i64, 3]);
        let ce = of_output(Loss::CrossEntropy, &out, &y).unwrap().double_value(&[]);
        assert!((ce - 4f64.ln()).abs() < 1e-6, "{ce}");
        let acc = correct(Loss::CrossEntropy, &out, &y).unwrap();
        assert_eq!(acc, Some(0.0), "argmax of equal logits is class 0");
    }

    #[test]
    fn bce_with_logits_at_zero_is_ln_2() {
        let out = Tensor::zeros([3, 1], CPU);
        let y = Tensor::from_slice(&[1.0f32, 0.0, 1.0]).view([3, 1]);
        let v = of_output(Loss::BceWithLogits, &out, &y).unwrap().double_value(&[]);
        assert!((v - 2f64.ln()).abs() < 1e-6, "{v}");
    }

    #[test]
    fn shape_mismatch_is_reported_not_broadcast() {
        let out = Tensor::zeros([5, 1], CPU);
        let y = Tensor::zeros([5], CPU);
        let err = of_output(Loss::Mse, &out, &y).err().unwrap();
        assert_eq!(
            err.to_string(),
            "loss mse needs the model output and y to have the same shape, got [5, 1] and [5]"
        );
    }
}
