//! The sampling task of `--when-idle`: every [`SAMPLE_EVERY`] it reads `/proc` (and the GPU,
//! where NVML opens), and reports the others' share over the last [`WINDOW`] samples.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use super::{
    gpu::{self, Gpu},
    load::{self, Load, LoadError, ProcStat, Snapshot, Window},
};

/// How often the machine is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Snapshots a reading spans: three snapshots, two sampling periods (4 s).
pub const WINDOW: usize = 3;

/// Reads `/proc/stat` and every `/proc/<pid>/stat`: the machine's times, and this process's
/// tree's ticks and pids.
fn snapshot(root: u32) -> Result<(Snapshot, HashSet<u32>), LoadError> {
    let text = std::fs::read_to_string("/proc/stat").map_err(|_| LoadError::NoCpuLine)?;
    let cpu = load::parse_proc_stat(&text)?;
    let mut procs: Vec<ProcStat> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
                continue;
            };
            // A process may end between the listing and the read: it is simply not counted.
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Ok(p) = load::parse_pid_stat(&stat) {
                    procs.push(p);
                }
            }
        }
    }
    let own: HashSet<u32> = load::tree(&procs, root).into_iter().collect();
    let ticks = procs
        .iter()
        .filter(|p| own.contains(&p.pid))
        .fold(0u64, |sum, p| sum.saturating_add(p.ticks));
    Ok((Snapshot { cpu, own: ticks }, own))
}

struct Sampler {
    root: u32,
    window: Window,
    gpu: Option<Gpu>,
}

impl Sampler {
    /// One sample: the others' load over the window, once the window holds two snapshots.
    fn sample(&mut self, training: bool) -> Result<Option<Load>, LoadError> {
        let (snap, own) = snapshot(self.root)?;
        let Some(cpu) = self.window.push(snap) else {
            return Ok(None);
        };
        let gpu = self.gpu.as_mut().and_then(|g| match g.read() {
            Ok(reading) => gpu::others_share(&reading, &own, training),
            Err(e) => {
                tracing::debug!(error = %e, "GPU reading failed; measuring the CPU alone");
                None
            }
        });
        Ok(Some(Load::of(cpu, gpu)))
    }
}

/// Starts sampling; `report` hears each reading and returns `false` to stop. `training` says
/// whether a job runs (the GPU's use is then partly ours). `gpu`: look at the GPU too.
pub fn spawn<R>(gpu: bool, training: Arc<AtomicBool>, report: R) -> tokio::task::JoinHandle<()>
where
    R: Fn(Load) -> bool + Send + 'static,
{
    tokio::spawn(async move {
        let gpu = if gpu {
            match tokio::task::spawn_blocking(Gpu::open).await {
                Ok(Ok(g)) => {
                    tracing::info!("--when-idle: measuring the GPU's use through NVML, and the CPU's");
                    Some(g)
                }
                Ok(Err(e)) => {
                    tracing::info!(reason = %e, "--when-idle: NVML unavailable; measuring the CPU's use only");
                    None
                }
                Err(_) => None,
            }
        } else {
            None
        };
        let mut sampler = Some(Sampler {
            root: std::process::id(),
            window: Window::new(WINDOW),
            gpu,
        });
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned = false;
        loop {
            tick.tick().await;
            let Some(mut s) = sampler.take() else { return };
            let busy = training.load(Ordering::Relaxed);
            let Ok((s, reading)) = tokio::task::spawn_blocking(move || {
                let r = s.sample(busy);
                (s, r)
            })
            .await
            else {
                return;
            };
            sampler = Some(s);
            match reading {
                Ok(Some(load)) => {
                    if !report(load) {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!(error = %e, "--when-idle: cannot read the machine's load");
                }
                Err(_) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On this machine's real /proc: this process is in its own tree, and a reading is a share.
    #[test]
    fn a_real_snapshot_sees_this_process_and_its_child() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let (a, own) = snapshot(std::process::id()).unwrap();
        assert!(own.contains(&std::process::id()));
        assert!(own.contains(&child.id()), "{own:?}");
        let mut spin = 0u64;
        let until = std::time::Instant::now() + Duration::from_millis(200);
        while std::time::Instant::now() < until {
            spin = spin.wrapping_add(1);
        }
        let (b, _) = snapshot(std::process::id()).unwrap();
        assert!(
            b.own > a.own,
            "this test spun the CPU for 0.2 s: {a:?} → {b:?} ({spin})"
        );
        let share = load::others_share(&a, &b).unwrap();
        assert!((0.0..=1.0).contains(&share));
        let _ = child.kill();
        let _ = child.wait();
    }
}
