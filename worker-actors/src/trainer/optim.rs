//! SGD, Adam and AdamW as in-place tensor updates, following torch.optim's single-tensor code
//! path (`_single_tensor_sgd`, `_single_tensor_adam`; foreach/fused off, `maximize=False`,
//! `amsgrad=False`, `dampening=0`) line by line.
//!
//! tch's libtorch optimizers cannot export or import their state, and a checkpoint must carry
//! it to resume the same trajectory on another worker (DESIGN §7), hence this module. Like
//! torch.optim, a parameter without a gradient this step (not used by the loss) is skipped,
//! and its state is created lazily at its first gradient.
//!
//! tch exposes `addcmul_`/`addcdiv_` without torch's `value=` scalar; `t.addcmul_(a * v, b)`
//! computes the same `t + v * a * b` the kernel does.

use std::collections::HashMap;

use helium_protocol::job::{OptimizerKind, OptimizerSpec};
use helium_protocol::state;
use tch::Tensor;

use super::error::{TorchContext, TrainError};

/// Per-parameter state, named as in torch.optim's `state_dict()`.
#[derive(Debug, Default)]
struct ParamState {
    /// Steps this parameter took (torch keeps it per parameter for Adam).
    step: i64,
    exp_avg: Option<Tensor>,
    exp_avg_sq: Option<Tensor>,
    momentum_buffer: Option<Tensor>,
}

pub struct Optimizer {
    spec: OptimizerSpec,
    state: Vec<ParamState>,
}


impl Optimizer {
    /// An optimizer for `params` parameters, once [`check`] accepts the settings.
    pub fn new(spec: &OptimizerSpec, params: usize) -> Result<Self, TrainError> {
        check(spec)?;
        Ok(Self {
            spec: spec.clone(),
            state: (0..params).map(|_| ParamState::default()).collect(),
        })
    }

    /// One update of every parameter that has a gradient; `grads[i]` belongs to `params[i]`
    /// and is undefined when the loss does not depend on that parameter.
    pub fn step(&mut self, params: &[Tensor], grads: &[Tensor]) -> Result<(), TrainError> {
        let _guard = tch::no_grad_guard();
        for ((param, grad), state) in params.iter().zip(grads).zip(&mut self.state) {
            if !grad.defined() {
                continue;
            }
            let mut param = param.shallow_clone();
            match self.spec.kind {
                OptimizerKind::Sgd => sgd(&self.spec, &mut param, grad, state),
                OptimizerKind::Adam => adam(&self.spec, false, &mut param, grad, state),
                OptimizerKind::Adamw => adam(&self.spec, true, &mut param, grad, state),
            }
            .ctx("updating a parameter")?;
        }
        Ok(())
    }

    /// The state as named tensors, `optim/<slot>/<parameter name>`; `names[i]` names
    /// `params[i]` of [`Optimizer::step`].
    pub fn state_tensors(&self, names: &[String]) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (name, st) in names.iter().zip(&self.state) {
            out.push((state::optim_key("step", name), Tensor::from(st.step)));
            for (what, t) in [
                ("exp_avg", &st.exp_avg),
                ("exp_avg_sq", &st.exp_avg_sq),
                ("momentum_buffer", &st.momentum_buffer),
            ] {
                if let Some(t) = t {
                    out.push((state::optim_key(what, name), t.shallow_clone()));
                }
            }
        }
        out
    }

    /// Restores what [`Optimizer::state_tensors`] wrote, moving tensors next to `params`.
    pub fn load_state(
        &mut self,
        names: &[String],
        params: &[Tensor],
        mut saved: HashMap<String, Tensor>,
    ) -> Result<(), TrainError> {
        for ((name, param), st) in names.iter().zip(params).zip(&mut self.state) {
            let step = saved
                .remove(&state::optim_key("step", name))
                .ok_or_else(|| TrainError::Resume(format!("it has no optimizer step for {name}")))?;
            st.step = step.f_int64_value(&[]).ctx("reading an optimizer step")?;
            let mut take = |what: &str| -> Result<Option<Tensor>, TrainError> {
                let Some(t) = saved.remove(&state::optim_key(what, name)) else {
                    return Ok(None);
                };
                if t.size() != param.size() {
                    return Err(TrainError::Resume(format!(
                        "optimizer {what} of {name} has shape {:?}, the parameter {:?}",
                        t.size(),
                        param.size()
                    )));
                }
                Ok(Some(t.f_to_device(param.device()).ctx("moving optimizer state")?))
            };
            st.exp_avg = take("exp_avg")?;
            st.exp_avg_sq = take("exp_avg_sq")?;
            st.momentum_buffer = take("momentum_buffer")?;
            let needs = match self.spec.kind {
                OptimizerKind::Adam | OptimizerKind::Adamw => st.exp_avg.is_some() && st.exp_avg_sq.is_some(),
                OptimizerKind::Sgd => self.spec.momentum == 0.0 || st.momentum_buffer.is_some(),
            };
            if st.step > 0 && !needs {
                return Err(TrainError::Resume(format!(
                    "its optimizer state for {name} is not that of {:?} with these settings",
                    self.spec.kind
                )));
            }
        }
        if let Some(extra) = saved.keys().next() {
            return Err(TrainError::Resume(format!("unexpected optimizer tensor {extra}")));
        }
        Ok(())
    }
}

/// Checks the hyper-parameters the way torch.optim's constructors do, so that a bad setting
/// is refused before any data is loaded.
pub fn check(s: &OptimizerSpec) -> Result<(), TrainError> {
    let bad = |what: String| Err(TrainError::Optimizer(what));
    for (name, v) in [
        ("lr", s.lr),
        ("momentum", s.momentum),
        ("weight_decay", s.weight_decay),
        ("eps", s.eps),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return bad(format!("{name} must be a finite number ≥ 0, got {v}"));
        }
    }
    if matches!(s.kind, OptimizerKind::Adam | OptimizerKind::Adamw) {
        for (name, v) in [("beta1", s.beta1), ("beta2", s.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return bad(format!("{name} must be in [0, 1), got {v}"));
            }
        }
    }
    if s.kind == OptimizerKind::Sgd && s.nesterov && s.momentum <= 0.0 {
        return bad("nesterov momentum requires a momentum > 0".into());
    }
    Ok(())
}

/// `torch.optim.sgd._single_tensor_sgd` with dampening 0, maximize off.
// In-place ops return a second handle to the tensor they updated; it is simply dropped.
#[allow(unused_must_use)]
fn sgd(s: &OptimizerSpec, param: &mut Tensor, grad: &Tensor, st: &mut ParamState) -> Result<(), tch::TchError> {
    st.step += 1;
    let mut grad = grad.shallow_clone();
    if s.weight_decay != 0.0 {
        grad = grad.f_add(&param.f_mul_scalar(s.weight_decay)?)?;
    }
    if s.momentum != 0.0 {
        let buf = match st.momentum_buffer.take() {
            None => grad.f_detach_copy()?,
            Some(mut buf) => {
                buf.f_mul_scalar_(s.momentum)?;
                buf.f_add_(&grad)?;
                buf
            }
        };
        grad = if s.nesterov {
            grad.f_add(&buf.f_mul_scalar(s.momentum)?)?
        } else {
            buf.shallow_clone()
        };
        st.momentum_buffer = Some(buf);
    }
    param.f_add_(&grad.f_mul_scalar(-s.lr)?)?;
    Ok(())
}

/// `torch.optim.adam._single_tensor_adam` (AdamW = `decoupled_weight_decay=True`), not
/// capturable, not differentiable, amsgrad off.
// In-place ops return a second handle to the tensor they updated; it is simply dropped.
#[allow(unused_must_use)]
fn adam(
    s: &OptimizerSpec,
    decoupled: bool,
    param: &mut Tensor,
    grad: &Tensor,
    st: &mut ParamState,
) -> Result<(), tch::TchError> {
    st.step += 1;
    let mut grad = grad.shallow_clone();
    if s.weight_decay != 0.0 {
        if decoupled {
            param.f_mul_scalar_(1.0 - s.lr * s.weight_decay)?;
        } else {
            grad = grad.f_add(&param.f_mul_scalar(s.weight_decay)?)?;
        }
    }
    if st.exp_avg.is_none() {
        st.exp_avg = Some(param.f_zeros_like()?);
        st.exp_avg_sq = Some(param.f_zeros_like()?);
    }
    let (Some(exp_avg), Some(exp_avg_sq)) = (st.exp_avg.as_mut(), st.exp_avg_sq.as_mut()) else {
        return Err(tch::TchError::Torch("Adam state half initialised".into()));
    };
    exp_avg.f_lerp_(&grad, 1.0 - s.beta1)?;
    exp_avg_sq.f_mul_scalar_(s.beta2)?;
    exp_avg_sq.f_addcmul_(&grad.f_mul_scalar(1.0 - s.beta2)?, &grad)?;
    // Python computes these on floats: `beta ** step` is C's pow, as is Rust's powf.
    let step = st.step as f64;
    let bias_correction1 = 1.0 - s.beta1.powf(step);
    let bias_correction2 = 1.0 - s.beta2.powf(step);
    let step_size = s.lr / bias_correction1;
    let bias_correction2_sqrt = bias_correction2.powf(0.5);
    let mut denom = exp_avg_sq.f_sqrt()?.f_div_scalar(bias_correction2_sqrt)?;
    denom.f_add_scalar_(s.eps)?;
    param.f_addcdiv_(&exp_avg.f_mul_scalar(-step_size)?, &denom)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn spec(kind: OptimizerKind) -> OptimizerSpec {
        OptimizerSpec {
            kind,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    fn param() -> Tensor {
        Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true)
    }

    #[test]
    fn adam_first_step_moves_each_weight_by_lr() {
        // At step 1 Adam's update is lr * g/|g| (bias-corrected), whatever the gradient scale.
        let mut s = spec(OptimizerKind::Adam);
        s.weight_decay = 0.0;
        let p = param();
        let mut opt = Optimizer::new(&s, 1).unwrap();
        opt.step(&[p.shallow_clone()], &[Tensor::from_slice(&[0.5f32, -3.0, 1e-3])])
            .unwrap();
        let got: Vec<f32> = Vec::try_from(&p.detach()).unwrap();
        for (g, want) in got.iter().zip([0.9f32, -1.9, 2.9]) {
            assert!((g - want).abs() < 1e-4, "{got:?}");
        }
    }

    #[test]
    fn sgd_momentum_matches_hand_computation() {
        let s = OptimizerSpec {
            weight_decay: 0.0,
            ..spec(OptimizerKind::Sgd)
        };
        let p = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let mut opt = Optimizer::new(&s, 1).unwrap();
        let g = Tensor::from_slice(&[1.0f32]);
        opt.step(&[p.shallow_clone()], &[g.shallow_clone()]).unwrap(); // buf 1, p = 0.9
        opt.step(&[p.shallow_clone()], &[g]).unwrap(); // buf 1.9, p = 0.71
        assert!((p.double_value(&[0]) - 0.71).abs() < 1e-6);
    }

    #[test]
    fn parameters_without_gradient_are_skipped() {
        let p = param();
        let mut opt = Optimizer::new(&spec(OptimizerKind::Adamw), 1).unwrap();
        opt.step(&[p.shallow_clone()], &[Tensor::new()]).unwrap();
        assert_eq!(Vec::<f32>::try_from(&p.detach()).unwrap(), vec![1.0, -2.0, 3.0]);
        let state = opt.state_tensors(&["w".into()]);
        assert_eq!(state.len(), 1, "only the step, no moments yet");
    }

    #[test]
    fn state_round_trips_through_named_tensors() {
        for kind in [OptimizerKind::Sgd, OptimizerKind::Adam, OptimizerKind::Adamw] {
            let names = vec!["fc.weight".to_string()];
            let (a, b) = (param(), param());
            let mut first = Optimizer::new(&spec(kind), 1).unwrap();
            let grad = || Tensor::from_slice(&[0.3f32, -0.2, 0.1]);
            for _ in 0..3 {
                first.step(&[a.shallow_clone()], &[grad()]).unwrap();
            }
            let state = first.state_tensors(&names);
            assert!(state.iter().all(|(k, _)| helium_protocol::state::parse_optim_key(k).is_some()), "{state:?}");
            let file = tempfile::NamedTempFile::new().unwrap();
            Tensor::write_safetensors(&state, file.path()).unwrap();
            let saved: HashMap<_, _> = Tensor::read_safetensors(file.path()).unwrap().into_iter().collect();
            assert_eq!(saved.len(), state.len());
            let mut second = Optimizer::new(&spec(kind), 1).unwrap();
            second.load_state(&names, &[b.shallow_clone()], saved).unwrap();
            tch::no_grad(|| b.shallow_clone().copy_(&a));
            first.step(&[a.shallow_clone()], &[grad()]).unwrap();
            second.step(&[b.shallow_clone()], &[grad()]).unwrap();
            assert_eq!(
                Vec::<f32>::try_from(&a.detach()).unwrap(),
                Vec::<f32>::try_from(&b.detach()).unwrap(),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn state_of_another_optimizer_is_refused() {
        let names = vec!["w".to_string()];
        let p = param();
        let mut sgd = Optimizer::new(&spec(OptimizerKind::Sgd), 1).unwrap();
        sgd.step(&[p.shallow_clone()], &[Tensor::ones([3], (Kind::Float, Device::Cpu))])
            .unwrap();
        let saved = sgd.state_tensors(&names).into_iter().collect();
        let mut adam = Optimizer::new(&spec(OptimizerKind::Adam), 1).unwrap();
        let err = adam.load_state(&names, &[p], saved).err().unwrap();
        assert!(err.to_string().contains("not that of Adam"), "{err}");
    }

    #[test]
    fn invalid_settings_are_refused_like_torch() {
        let mut s = spec(OptimizerKind::Adam);
        s.beta2 = 1.0;
        assert!(Optimizer::new(&s, 1).is_err());
        let s = OptimizerSpec {
            lr: -1.0,
            ..spec(OptimizerKind::Sgd)
        };
        assert!(Optimizer::new(&s, 1).is_err());
        let s = OptimizerSpec {
            momentum: 0.0,
            nesterov: true,
            ..spec(OptimizerKind::Sgd)
        };
        assert!(Optimizer::new(&s, 1).is_err());
    }
}
