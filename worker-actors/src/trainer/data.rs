//! Training data and the order the trainer visits it in.
//!
//! The batch order is a pure function of `(seed, epoch)` (DESIGN §7) so that a run resumed on
//! another worker from an epoch's checkpoint sees exactly the batches the uninterrupted run
//! would have seen. It therefore uses its own small PRNG (splitmix64) and Fisher–Yates shuffle
//! rather than torch's global generator, whose state is not in the checkpoint. The algorithm
//! is short enough to port: a researcher can reproduce the grid's order at home (the e2e test
//! does so in Python).

use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::error::{TorchContext, TrainError};

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's output function: a bijective mix of 64 bits.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, and every seed gives a good stream.
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The stream for one epoch (1-based) of a job seeded with `seed`.
    pub fn for_epoch(seed: u64, epoch: u32) -> Self {
        Self {
            state: seed ^ mix64(u64::from(epoch).wrapping_add(1).wrapping_mul(GOLDEN_GAMMA)),
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// Uniform in `0..bound` (bound > 0), without modulo bias: draws below
    /// `2^64 mod bound` are rejected.
    pub fn below(&mut self, bound: u64) -> u64 {
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let r = self.next_u64();
            if r >= threshold {
                return r % bound;
            }
        }
    }
}

/// The order of the `n` training rows in `epoch` (1-based): natural order without shuffle,
/// else a Fisher–Yates shuffle driven by [`SplitMix64::for_epoch`].
pub fn epoch_order(n: usize, seed: u64, epoch: u32, shuffle: bool) -> Vec<i64> {
    let mut order: Vec<i64> = (0..n as i64).collect();
    if shuffle {
        let mut rng = SplitMix64::for_epoch(seed, epoch);
        for i in (1..n).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
    }
    order
}

/// The seed given to torch's own generator before optimizer step `step` (0-based, counted
/// over the whole job), for what the model draws itself (dropout): a function of
/// `(seed, step)`, so a run resumed from any checkpoint, mid-epoch included, draws the same.
pub fn step_seed(seed: u64, step: u64) -> i64 {
    const STEP_STREAM: u64 = 0x5EED_0F57_E955_7E95;
    let mut rng = SplitMix64 {
        state: seed ^ mix64(step.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA) ^ STEP_STREAM),
    };
    (rng.next_u64() >> 1) as i64
}

/// Inputs and targets with the same number of rows, on the training device.
pub struct Split {
    pub x: Tensor,
    pub y: Tensor,
}

impl Split {
    pub fn rows(&self) -> i64 {
        self.x.size().first().copied().unwrap_or(0)
    }

    /// Rows `order[start..start+len]`, or a view of the contiguous range when unshuffled.
    pub fn batch(&self, order: &Tensor, start: i64, len: i64, shuffled: bool) -> Result<(Tensor, Tensor), TrainError> {
        if shuffled {
            let idx = order.f_narrow(0, start, len).ctx("selecting a batch")?;
            Ok((
                self.x.f_index_select(0, &idx).ctx("selecting a batch of x")?,
                self.y.f_index_select(0, &idx).ctx("selecting a batch of y")?,
            ))
        } else {
            Ok((
                self.x.f_narrow(0, start, len).ctx("selecting a batch of x")?,
                self.y.f_narrow(0, start, len).ctx("selecting a batch of y")?,
            ))
        }
    }
}

/// `data.safetensors` checked and moved to the device once.
pub struct Dataset {
    pub train: Split,
    pub val: Option<Split>,
}

impl Dataset {
    pub fn load(path: &Path, device: Device) -> Result<Self, TrainError> {
        if !path.exists() {
            return Err(TrainError::Data(format!("the job has no {}", file_name(path))));
        }
        let mut tensors = Tensor::read_safetensors(path).map_err(|e| {
            TrainError::Data(format!(
                "{} is not a readable safetensors file: {}",
                file_name(path),
                super::error::torch_reason(&e)
            ))
        })?;
        let mut take = |name: &str| {
            tensors
                .iter()
                .position(|(n, _)| n == name)
                .map(|i| tensors.swap_remove(i).1)
        };
        let (x, y) = (take("x"), take("y"));
        let (x_val, y_val) = (take("x_val"), take("y_val"));
        let (Some(x), Some(y)) = (x, y) else {
            return Err(TrainError::Data(format!(
                "{} must hold tensors named `x` and `y`",
                file_name(path)
            )));
        };
        let train = split("x", x, "y", y, device)?;
        if train.rows() == 0 {
            return Err(TrainError::Data("x has no rows".into()));
        }
        let val = match (x_val, y_val) {
            (None, None) => None,
            (Some(x), Some(y)) => Some(split("x_val", x, "y_val", y, device)?),
            _ => return Err(TrainError::Data("x_val and y_val must be given together".into())),
        };
        Ok(Self { train, val })
    }
}

fn split(xn: &str, x: Tensor, yn: &str, y: Tensor, device: Device) -> Result<Split, TrainError> {
    let rows = |name: &str, t: &Tensor| {
        t.size()
            .first()
            .copied()
            .ok_or_else(|| TrainError::Data(format!("{name} is a scalar; it needs one row per sample")))
    };
    let (xr, yr) = (rows(xn, &x)?, rows(yn, &y)?);
    if xr != yr {
        return Err(TrainError::Data(format!("{xn} has {xr} rows but {yn} has {yr}")));
    }
    for (name, t) in [(xn, &x), (yn, &y)] {
        if matches!(t.kind(), Kind::ComplexFloat | Kind::ComplexDouble | Kind::ComplexHalf) {
            return Err(TrainError::Data(format!("{name} is complex, which is not supported")));
        }
    }
    Ok(Split {
        x: x.f_to_device(device).ctx("moving x to the device")?,
        y: y.f_to_device(device).ctx("moving y to the device")?,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_permutation(order: &[i64]) -> bool {
        let mut sorted = order.to_vec();
        sorted.sort_unstable();
        sorted.iter().enumerate().all(|(i, &v)| v == i as i64)
    }

    #[test]
    fn order_is_a_pure_function_of_seed_and_epoch() {
        assert_eq!(epoch_order(1000, 7, 3, true), epoch_order(1000, 7, 3, true));
        assert_ne!(epoch_order(1000, 7, 3, true), epoch_order(1000, 7, 4, true));
        assert_ne!(epoch_order(1000, 7, 3, true), epoch_order(1000, 8, 3, true));
    }

    #[test]
    fn order_is_a_permutation_and_shuffles() {
        for n in [0, 1, 2, 5, 1797] {
            let order = epoch_order(n, 42, 1, true);
            assert_eq!(order.len(), n);
            assert!(is_permutation(&order), "n={n}");
        }
        let order = epoch_order(1797, 42, 1, true);
        let fixed = order.iter().enumerate().filter(|(i, &v)| *i as i64 == v).count();
        assert!(fixed < 20, "{fixed} rows stayed in place");
    }

    #[test]
    fn no_shuffle_is_natural_order() {
        assert_eq!(epoch_order(4, 42, 2, false), vec![0, 1, 2, 3]);
    }

    #[test]
    fn known_values_pin_the_algorithm() {
        // splitmix64 reference: seed 1234567 gives 6457827717110365317 first.
        let mut rng = SplitMix64 { state: 1_234_567 };
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        // The e2e test ports the shuffle to Python (and researchers may); this pins it.
        assert_eq!(epoch_order(10, 42, 1, true), vec![1, 4, 6, 8, 5, 2, 7, 3, 9, 0]);
        assert_eq!(epoch_order(10, 42, 2, true), vec![9, 0, 2, 5, 6, 4, 3, 7, 8, 1]);
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut rng = SplitMix64::for_epoch(3, 1);
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[rng.below(3) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
    }

    #[test]
    fn mismatched_rows_are_named() {
        let x = Tensor::zeros([100, 2], (Kind::Float, Device::Cpu));
        let y = Tensor::zeros([99], (Kind::Int64, Device::Cpu));
        let err = split("x", x, "y", y, Device::Cpu).err().unwrap();
        assert_eq!(err.to_string(), "x has 100 rows but y has 99");
    }
}
