//! The start-up benchmark behind a worker's bids: how many parameter-samples per second this
//! machine trains, so that a job's ETA is its declared parameter-samples divided by this
//! (DESIGN §4). It runs the trainer's own optimizer on a small MLP (64→128→10, Adam, batch
//! 64) with synthetic data, so it measures the same kind of work a small job does.

use std::time::Instant;

use helium_protocol::job::{OptimizerKind, OptimizerSpec};
use tch::{Device, Kind, Reduction, TchError, Tensor};

use super::optim::Optimizer;

const INPUTS: i64 = 64;
const HIDDEN: i64 = 128;
const CLASSES: i64 = 10;
const BATCH: i64 = 64;
const ROWS: i64 = 4096;

/// Parameter-samples per second on `device` over about `seconds`; 0 if the device cannot
/// train at all (the failure is logged).
pub fn benchmark(device: Device, seconds: f64) -> f64 {
    match measure(device, seconds) {
        Ok(rate) => rate,
        Err(e) => {
            tracing::warn!(?device, error = %super::error::torch_reason(&e), "benchmark failed");
            0.0
        }
    }
}

fn measure(device: Device, seconds: f64) -> Result<f64, TchError> {
    let opts = (Kind::Float, device);
    let init = |rows: i64, cols: i64| -> Result<Tensor, TchError> {
        let scale = 1.0 / (rows as f64).sqrt();
        Ok(Tensor::f_randn([rows, cols], opts)?
            .f_mul_scalar(scale)?
            .set_requires_grad(true))
    };
    let params = [
        init(INPUTS, HIDDEN)?,
        Tensor::f_zeros([HIDDEN], opts)?.set_requires_grad(true),
        init(HIDDEN, CLASSES)?,
        Tensor::f_zeros([CLASSES], opts)?.set_requires_grad(true),
    ];
    let parameters: i64 = params.iter().map(|p| p.numel() as i64).sum();
    let x = Tensor::f_randn([ROWS, INPUTS], opts)?;
    let y = Tensor::f_randint(CLASSES, [ROWS], (Kind::Int64, device))?;
    let spec = OptimizerSpec {
        kind: OptimizerKind::Adam,
        lr: 1e-3,
        momentum: 0.0,
        weight_decay: 0.0,
        nesterov: false,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let mut optimizer = Optimizer::new(&spec, params.len()).map_err(|e| TchError::Torch(e.to_string()))?;

    let started = Instant::now();
    let mut samples = 0i64;
    let mut start = 0;
    loop {
        let (xb, yb) = (x.f_narrow(0, start, BATCH)?, y.f_narrow(0, start, BATCH)?);
        let hidden = xb.f_matmul(&params[0])?.f_add(&params[1])?.f_relu()?;
        let logits = hidden.f_matmul(&params[2])?.f_add(&params[3])?;
        let loss = logits.f_cross_entropy_loss::<Tensor>(&yb, None, Reduction::Mean, -100, 0.0)?;
        let grads = Tensor::f_run_backward(&[&loss], &params, false, false)?;
        optimizer
            .step(&params, &grads)
            .map_err(|e| TchError::Torch(e.to_string()))?;
        samples += BATCH;
        start = (start + BATCH) % ROWS;
        if samples % (BATCH * 16) == 0 {
            if let Device::Cuda(index) = device {
                tch::Cuda::synchronize(index as i64);
            }
            if started.elapsed().as_secs_f64() >= seconds {
                break;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    Ok((parameters * samples) as f64 / elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_benchmark_reports_a_positive_rate() {
        let rate = benchmark(Device::Cpu, 0.2);
        assert!(rate > 1e5, "{rate} parameter-samples/s");
    }
}
