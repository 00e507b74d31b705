//! How much of the GPU others than this worker use, through NVML (`libnvidia-ml.so.1`,
//! opened at run time by `nvml-wrapper`: a machine without the NVIDIA driver runs the same
//! binary and measures its CPU only).
//!
//! NVML names the processes using the GPU by their pid in the host's pid namespace. This
//! worker's own trainers are recognised among them by pid; where they cannot be (the worker runs
//! in a container with its own pid namespace, so none of the GPU's pids is one of ours while a
//! job trains), the GPU reading is left out rather than mistaking our own job for the owner's.

use std::collections::HashSet;

use nvml_wrapper::error::NvmlError;

/// One look at the GPU.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GpuReading {
    /// The device's utilisation (time a kernel ran) over NVML's last sample period, 0 to 1.
    pub device: f64,
    /// SM utilisation of each process since the previous look (0 to 1, averaged over its
    /// samples), when the device reports it.
    pub per_process: Option<Vec<(u32, f64)>>,
    /// Pids of the processes holding a compute or graphics context on it.
    pub users: Vec<u32>,
}

/// The share of the GPU others than `own` (this worker's process tree) use, 0 to 1; `None`
/// when it cannot be told apart from this worker's own use.
pub fn others_share(r: &GpuReading, own: &HashSet<u32>, training: bool) -> Option<f64> {
    let ours = |pid: &u32| own.contains(pid);
    if let Some(per_process) = &r.per_process {
        // While a job trains, at least one of the GPU's processes must be ours, or the pids are
        // from another namespace and ours may be among the "others".
        let attributable = !training || r.users.iter().any(ours) || per_process.iter().any(|(p, _)| ours(p));
        if !attributable {
            return None;
        }
        let others: f64 = per_process.iter().filter(|(p, _)| !ours(p)).map(|(_, u)| u).sum();
        return Some(others.clamp(0.0, 1.0));
    }
    if !training {
        // Nothing of ours runs kernels: all the device's use is someone else's.
        return Some(r.device.clamp(0.0, 1.0));
    }
    // Training, and no per-process figures: others' use shows only if ours is not there at all.
    let theirs = r.users.iter().any(|p| !ours(p));
    let ours_seen = r.users.iter().any(ours);
    match (theirs, ours_seen) {
        (false, true) => Some(0.0),
        _ => None,
    }
}

/// Averages NVML's per-process samples (percent) into one share per pid.
pub fn per_process_shares(samples: &[(u32, u32)]) -> Vec<(u32, f64)> {
    let mut sums: Vec<(u32, u64, u64)> = Vec::new();
    for &(pid, util) in samples {
        match sums.iter_mut().find(|(p, ..)| *p == pid) {
            Some((_, sum, n)) => {
                *sum += u64::from(util);
                *n += 1;
            }
            None => sums.push((pid, u64::from(util), 1)),
        }
    }
    sums.into_iter()
        .map(|(pid, sum, n)| (pid, (sum as f64 / n as f64 / 100.0).clamp(0.0, 1.0)))
        .collect()
}

/// NVML, opened once; the device this worker trains on.
pub struct Gpu {
    nvml: nvml_wrapper::Nvml,
    device: Selector,
    /// NVML's timestamp of the newest per-process sample seen.
    last_seen: u64,
}

enum Selector {
    Index(u32),
    Uuid(String),
}

impl Gpu {
    /// Opens NVML; `Err` says why not (no driver, no library), and the caller measures the CPU only.
    pub fn open() -> Result<Gpu, String> {
        let nvml = nvml_wrapper::Nvml::init().map_err(|e| e.to_string())?;
        // The trainer uses cuda:0, the first device CUDA_VISIBLE_DEVICES leaves visible.
        let first = std::env::var("CUDA_VISIBLE_DEVICES")
            .ok()
            .and_then(|v| v.split(',').next().map(str::trim).map(String::from))
            .filter(|v| !v.is_empty());
        let device = match first {
            Some(v) if v.starts_with("GPU-") || v.starts_with("MIG-") => Selector::Uuid(v),
            Some(v) => Selector::Index(
                v.parse()
                    .map_err(|_| format!("CUDA_VISIBLE_DEVICES={v} is not an index or a UUID"))?,
            ),
            None => Selector::Index(0),
        };
        let gpu = Gpu {
            nvml,
            device,
            last_seen: 0,
        };
        gpu.with_device(|_| Ok(())).map_err(|e| e.to_string())?;
        Ok(gpu)
    }

    fn with_device<T>(
        &self,
        f: impl FnOnce(&nvml_wrapper::Device<'_>) -> Result<T, NvmlError>,
    ) -> Result<T, NvmlError> {
        let device = match &self.device {
            Selector::Index(i) => self.nvml.device_by_index(*i),
            Selector::Uuid(u) => self.nvml.device_by_uuid(u.as_str()),
        }?;
        f(&device)
    }

    /// Reads the device; `Err` when NVML fails (the caller then goes on with the CPU alone).
    pub fn read(&mut self) -> Result<GpuReading, String> {
        let device = self
            .with_device(|d| d.utilization_rates())
            .map_err(|e| e.to_string())?
            .gpu;
        let mut users: Vec<u32> = Vec::new();
        if let Ok(procs) = self.with_device(|d| d.running_compute_processes()) {
            users.extend(procs.iter().map(|p| p.pid));
        }
        if let Ok(procs) = self.with_device(|d| d.running_graphics_processes()) {
            users.extend(procs.iter().map(|p| p.pid));
        }
        let last_seen = self.last_seen;
        let per_process = match self.with_device(|d| d.process_utilization_stats(last_seen)) {
            Ok(samples) => {
                self.last_seen = samples.iter().map(|s| s.timestamp).max().unwrap_or(self.last_seen);
                let pairs: Vec<(u32, u32)> = samples.iter().map(|s| (s.pid, s.sm_util)).collect();
                Some(per_process_shares(&pairs))
            }
            // NotFound: no process ran a kernel since the last look. NotSupported (older
            // devices) and the rest: no per-process figures.
            Err(NvmlError::NotFound) => Some(Vec::new()),
            Err(_) => None,
        };
        Ok(GpuReading {
            device: f64::from(device) / 100.0,
            per_process,
            users,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(pids: &[u32]) -> HashSet<u32> {
        pids.iter().copied().collect()
    }

    #[test]
    fn per_process_figures_leave_our_trainer_out() {
        let r = GpuReading {
            device: 0.99,
            per_process: Some(vec![(10, 0.7), (500, 0.25)]),
            users: vec![10, 500],
        };
        assert_eq!(others_share(&r, &own(&[1, 10]), true), Some(0.25));
        // Idle: the game is all of it.
        let r = GpuReading {
            device: 0.4,
            per_process: Some(vec![(500, 0.4)]),
            users: vec![500],
        };
        assert_eq!(others_share(&r, &own(&[1, 2]), false), Some(0.4));
    }

    #[test]
    fn pids_from_another_namespace_are_not_blamed_on_the_owner() {
        // Training in a container: NVML's pid 7001 is our trainer under its host pid.
        let r = GpuReading {
            device: 0.95,
            per_process: Some(vec![(7001, 0.95)]),
            users: vec![7001],
        };
        assert_eq!(others_share(&r, &own(&[1, 12]), true), None);
        let without = GpuReading { per_process: None, ..r };
        assert_eq!(others_share(&without, &own(&[1, 12]), true), None);
    }

    #[test]
    fn without_per_process_figures() {
        let mine = GpuReading {
            device: 0.9,
            per_process: None,
            users: vec![12],
        };
        assert_eq!(others_share(&mine, &own(&[1, 12]), true), Some(0.0));
        assert_eq!(
            others_share(
                &GpuReading {
                    device: 0.3,
                    ..mine.clone()
                },
                &own(&[1]),
                false
            ),
            Some(0.3)
        );
        let shared = GpuReading {
            users: vec![12, 900],
            ..mine
        };
        assert_eq!(
            others_share(&shared, &own(&[1, 12]), true),
            None,
            "the device's use is ours and theirs"
        );
    }

    #[test]
    fn samples_average_per_process() {
        let mut got = per_process_shares(&[(5, 100), (6, 20), (5, 50), (6, 40)]);
        got.sort_by_key(|(p, _)| *p);
        assert_eq!(got, [(5, 0.75), (6, 0.3)]);
        assert_eq!(per_process_shares(&[(5, 250)]), [(5, 1.0)]);
    }

    /// Where there is no NVIDIA driver (this machine, CI) opening NVML fails with a reason,
    /// without loading anything at link time.
    #[test]
    fn opening_nvml_without_a_driver_fails_softly() {
        if std::path::Path::new("/dev/nvidiactl").exists() {
            return;
        }
        assert!(Gpu::open().is_err());
    }
}
