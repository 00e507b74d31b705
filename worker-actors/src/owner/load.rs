//! How busy the owner keeps this machine (`--when-idle`), as pure functions on snapshots of
//! `/proc`, and the hysteresis that turns readings into "idle" or "busy".
//!
//! The CPU share the owner uses is the machine's busy CPU time (the `cpu` line of `/proc/stat`)
//! less what this worker's own process tree used (the agent and its trainers, each
//! `/proc/<pid>/stat`), over the time between two snapshots, as a fraction of all cores. Ticks
//! stolen by a hypervisor count neither as busy nor as time: they are nobody's use of this
//! machine. A trainer that exits between two snapshots moves its time into its parent's
//! `cutime`/`cstime`, which the tree counts too, so the share does not jump when a run ends.

use std::collections::VecDeque;
use std::fmt;

/// CPU time of the whole machine, in clock ticks (`USER_HZ`), since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq.
    pub busy: u64,
    /// `busy` + idle + iowait.
    pub total: u64,
}

/// One process's line of `/proc/<pid>/stat`, as much as the tree needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    /// utime + stime + cutime + cstime, clock ticks: its own time and its reaped children's.
    pub ticks: u64,
}

/// The machine and this worker's process tree at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub cpu: CpuTimes,
    /// Ticks of this worker's process tree.
    pub own: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("/proc/stat has no cpu line")]
    NoCpuLine,
    #[error("/proc/stat's cpu line has {0} fields, fewer than 7")]
    ShortCpuLine(usize),
    #[error("unreadable number {0:?} in /proc")]
    Number(String),
    #[error("a /proc/<pid>/stat line without the fields after its command: {0:?}")]
    ShortPidStat(String),
}

fn number(s: &str) -> Result<u64, LoadError> {
    s.parse::<u64>().map_err(|_| LoadError::Number(s.into()))
}

/// The `cpu` line of `/proc/stat`: `cpu user nice system idle iowait irq softirq steal guest
/// guest_nice` (guest time is already inside user and nice, so it is not added again).
pub fn parse_proc_stat(text: &str) -> Result<CpuTimes, LoadError> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cpu"))
        .ok_or(LoadError::NoCpuLine)?;
    let fields = line
        .split_whitespace()
        .skip(1)
        .map(number)
        .collect::<Result<Vec<u64>, _>>()?;
    if fields.len() < 7 {
        return Err(LoadError::ShortCpuLine(fields.len()));
    }
    let (user, nice, system, idle, iowait, irq, softirq) = (
        fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], fields[6],
    );
    let busy = user
        .saturating_add(nice)
        .saturating_add(system)
        .saturating_add(irq)
        .saturating_add(softirq);
    Ok(CpuTimes {
        busy,
        total: busy.saturating_add(idle).saturating_add(iowait),
    })
}

/// One `/proc/<pid>/stat` line: `pid (comm) state ppid … utime stime cutime cstime …`. The
/// command may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_pid_stat(text: &str) -> Result<ProcStat, LoadError> {
    let short = || LoadError::ShortPidStat(text.chars().take(120).collect());
    let open = text.find(" (").ok_or_else(short)?;
    let close = text.rfind(')').ok_or_else(short)?;
    let pid = text[..open].trim();
    let pid = u32::try_from(number(pid)?).map_err(|_| LoadError::Number(pid.into()))?;
    // After ")": state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17).
    let rest: Vec<&str> = text.get(close + 1..).ok_or_else(short)?.split_whitespace().collect();
    if rest.len() < 15 {
        return Err(short());
    }
    let ppid = u32::try_from(number(rest[1])?).map_err(|_| LoadError::Number(rest[1].into()))?;
    // cutime and cstime are signed in the kernel's format; never negative in practice.
    let signed = |s: &str| {
        s.parse::<i64>()
            .map(|v| v.max(0) as u64)
            .map_err(|_| LoadError::Number(s.into()))
    };
    let ticks = number(rest[11])?
        .saturating_add(number(rest[12])?)
        .saturating_add(signed(rest[13])?)
        .saturating_add(signed(rest[14])?);
    Ok(ProcStat { pid, ppid, ticks })
}

/// The pids of `root` and all its descendants among `procs`.
pub fn tree(procs: &[ProcStat], root: u32) -> Vec<u32> {
    let mut members = vec![root];
    let mut i = 0;
    while i < members.len() {
        let parent = members[i];
        members.extend(
            procs
                .iter()
                .filter(|p| p.ppid == parent && p.pid != root)
                .map(|p| p.pid),
        );
        i += 1;
        if members.len() > procs.len() + 1 {
            break; // a cycle cannot happen in /proc, but a bad snapshot must not loop forever
        }
    }
    members
}

/// Ticks of `root`'s whole tree among `procs`.
pub fn tree_ticks(procs: &[ProcStat], root: u32) -> u64 {
    let members = tree(procs, root);
    procs
        .iter()
        .filter(|p| members.contains(&p.pid))
        .fold(0u64, |sum, p| sum.saturating_add(p.ticks))
}

/// The share of the machine's CPU (0 to 1, of all cores) used by processes other than this
/// worker's tree between snapshots `a` and `b`; `None` when no time passed between them.
pub fn others_share(a: &Snapshot, b: &Snapshot) -> Option<f64> {
    let total = b.cpu.total.checked_sub(a.cpu.total).filter(|t| *t > 0)?;
    let busy = b.cpu.busy.saturating_sub(a.cpu.busy);
    let own = b.own.saturating_sub(a.own);
    Some((busy.saturating_sub(own) as f64 / total as f64).clamp(0.0, 1.0))
}

/// The last few snapshots: a reading is taken over the whole window, so one short burst of the
/// owner's activity weighs less than a sustained one.
#[derive(Debug, Clone)]
pub struct Window {
    snaps: VecDeque<Snapshot>,
    keep: usize,
}

impl Window {
    /// A window over the last `keep` snapshots (at least two).
    pub fn new(keep: usize) -> Self {
        Window {
            snaps: VecDeque::new(),
            keep: keep.max(2),
        }
    }

    /// Adds a snapshot; the others' share between the oldest kept and this one.
    pub fn push(&mut self, snap: Snapshot) -> Option<f64> {
        // A counter that went back (a snapshot from a restarted /proc view) starts afresh.
        if self.snaps.back().is_some_and(|last| snap.cpu.total < last.cpu.total) {
            self.snaps.clear();
        }
        self.snaps.push_back(snap);
        while self.snaps.len() > self.keep {
            self.snaps.pop_front();
        }
        others_share(self.snaps.front()?, self.snaps.back()?)
    }
}

/// What the owner's use is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Gpu,
}

/// How much of one resource others than this worker use, 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    pub resource: Resource,
    pub share: f64,
}

impl Load {
    /// The larger of the CPU and (when measured) the GPU share.
    pub fn of(cpu: f64, gpu: Option<f64>) -> Load {
        match gpu {
            Some(g) if g > cpu => Load {
                resource: Resource::Gpu,
                share: g,
            },
            _ => Load {
                resource: Resource::Cpu,
                share: cpu,
            },
        }
    }
}

impl fmt::Display for Load {
    /// `CPU 85 % busy`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.resource {
            Resource::Cpu => "CPU",
            Resource::Gpu => "GPU",
        };
        write!(f, "{name} {:.0} % busy", self.share * 100.0)
    }
}

/// Whether the owner is using the machine, as the hysteresis last decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Avail {
    /// No reading yet.
    Unknown,
    Idle,
    /// Others used more than the threshold: the last such reading.
    Busy(Load),
}

/// Readings in, "idle" or "busy" out: busy as soon as a reading is above `busy_above`; idle
/// again only once every reading for `idle_after_secs` stayed at or below it.
#[derive(Debug, Clone)]
pub struct Availability {
    busy_above: f64,
    idle_after_secs: f64,
    state: Avail,
    /// Since when readings are at or below the threshold, while busy.
    quiet_since: Option<f64>,
}

impl Availability {
    pub fn new(busy_above: f64, idle_after_secs: f64) -> Self {
        Availability {
            busy_above,
            idle_after_secs,
            state: Avail::Unknown,
            quiet_since: None,
        }
    }

    pub fn state(&self) -> Avail {
        self.state
    }

    pub fn busy_above(&self) -> f64 {
        self.busy_above
    }

    /// Takes a reading at `now_secs` (any monotonic clock); returns the new state when it
    /// changed between unknown, idle and busy.
    pub fn observe(&mut self, load: Load, now_secs: f64) -> Option<Avail> {
        let before = self.state;
        if load.share > self.busy_above {
            self.quiet_since = None;
            self.state = Avail::Busy(load);
        } else {
            match self.state {
                // The first reading decides at once: the owner started the worker on a quiet machine.
                Avail::Unknown => self.state = Avail::Idle,
                Avail::Idle => {}
                Avail::Busy(_) => {
                    let since = *self.quiet_since.get_or_insert(now_secs);
                    if now_secs - since >= self.idle_after_secs {
                        self.state = Avail::Idle;
                        self.quiet_since = None;
                    }
                }
            }
        }
        let changed = std::mem::discriminant(&before) != std::mem::discriminant(&self.state);
        changed.then_some(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A /proc/stat as the kernel writes it: user nice system idle iowait irq softirq steal
    /// guest guest_nice.
    fn proc_stat(user: u64, system: u64, idle: u64, steal: u64) -> String {
        format!("cpu  {user} 0 {system} {idle} 0 0 0 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1 2 3\nctxt 99\n")
    }

    fn pid_stat(pid: u32, comm: &str, ppid: u32, utime: u64, stime: u64, cutime: i64) -> String {
        format!("{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 100 0 0 0 {utime} {stime} {cutime} 0 20 0 1 0 100 1000 50")
    }

    fn snap(text: &str, procs: &[String], root: u32) -> Snapshot {
        let procs: Vec<ProcStat> = procs.iter().map(|p| parse_pid_stat(p).unwrap()).collect();
        Snapshot {
            cpu: parse_proc_stat(text).unwrap(),
            own: tree_ticks(&procs, root),
        }
    }

    #[test]
    fn proc_stat_counts_busy_and_idle_and_leaves_out_steal() {
        let t = parse_proc_stat(&proc_stat(300, 100, 600, 50)).unwrap();
        assert_eq!(t, CpuTimes { busy: 400, total: 1000 });
        // An old kernel's shorter line still reads.
        assert_eq!(
            parse_proc_stat("cpu 1 2 3 4 5 6 7\n").unwrap(),
            CpuTimes {
                busy: 1 + 2 + 3 + 6 + 7,
                total: 28
            }
        );
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4 5 6 7\n"), Err(LoadError::NoCpuLine));
        assert_eq!(parse_proc_stat("cpu 1 2 3\n"), Err(LoadError::ShortCpuLine(3)));
        assert_eq!(
            parse_proc_stat("cpu 1 2 x 4 5 6 7\n"),
            Err(LoadError::Number("x".into()))
        );
    }

    #[test]
    fn pid_stat_reads_past_a_command_with_spaces_and_parentheses() {
        let p = parse_pid_stat(&pid_stat(42, "a) (b c", 7, 10, 5, 3)).unwrap();
        assert_eq!(
            p,
            ProcStat {
                pid: 42,
                ppid: 7,
                ticks: 18
            }
        );
        assert!(matches!(
            parse_pid_stat("42 (x) S 1 2"),
            Err(LoadError::ShortPidStat(_))
        ));
        assert!(matches!(parse_pid_stat("garbage"), Err(LoadError::ShortPidStat(_))));
    }

    #[test]
    fn the_tree_is_the_root_and_every_descendant() {
        let procs: Vec<ProcStat> = [
            (1, 0, 1000),
            (10, 1, 5),
            (11, 10, 7),
            (12, 11, 11),
            (13, 1, 10_000),
            (14, 13, 3),
        ]
        .into_iter()
        .map(|(pid, ppid, ticks)| ProcStat { pid, ppid, ticks })
        .collect();
        let mut t = tree(&procs, 10);
        t.sort();
        assert_eq!(t, [10, 11, 12]);
        assert_eq!(tree_ticks(&procs, 10), 5 + 7 + 11);
        assert_eq!(tree_ticks(&procs, 99), 0);
    }

    /// Two cores over one second (200 ticks): the worker's trainer used one core, another
    /// process 0.6 of the other. The owner's share is 0.3 of the machine, not 0.8.
    #[test]
    fn the_workers_own_tree_is_subtracted() {
        let root = 100;
        let a = snap(
            &proc_stat(1000, 0, 1000, 0),
            &[
                pid_stat(100, "helium-worker", 1, 50, 0, 0),
                pid_stat(101, "helium-worker train", 100, 10, 0, 0),
                pid_stat(300, "python", 1, 0, 0, 0),
            ],
            root,
        );
        let b = snap(
            &proc_stat(1160, 0, 1040, 0),
            &[
                pid_stat(100, "helium-worker", 1, 50, 0, 0),
                pid_stat(101, "helium-worker train", 100, 110, 0, 0),
                pid_stat(300, "python", 1, 60, 0, 0),
            ],
            root,
        );
        let share = others_share(&a, &b).unwrap();
        assert!((share - 0.3).abs() < 1e-9, "{share}");
        // A trainer that exited and was reaped: its ticks moved to the agent's cutime.
        let c = snap(
            &proc_stat(1160 + 100, 0, 1040 + 100, 0),
            &[
                pid_stat(100, "helium-worker", 1, 50, 0, 110),
                pid_stat(300, "python", 1, 60, 0, 0),
            ],
            root,
        );
        assert_eq!(
            others_share(&b, &c),
            Some(0.5),
            "the owner's 100 ticks of 200, none of ours"
        );
        // No time passed: no reading. Time went back: none either.
        assert_eq!(others_share(&b, &b), None);
        assert_eq!(others_share(&b, &a), None);
    }

    #[test]
    fn the_share_stays_within_zero_and_one() {
        let a = Snapshot {
            cpu: CpuTimes { busy: 0, total: 0 },
            own: 0,
        };
        // The tree's ticks are sampled a moment after /proc/stat: ours may exceed the machine's.
        let b = Snapshot {
            cpu: CpuTimes { busy: 100, total: 200 },
            own: 150,
        };
        assert_eq!(others_share(&a, &b), Some(0.0));
    }

    #[test]
    fn the_window_measures_from_its_oldest_snapshot() {
        let at = |busy: u64, total: u64| Snapshot {
            cpu: CpuTimes { busy, total },
            own: 0,
        };
        let mut w = Window::new(3);
        assert_eq!(w.push(at(0, 0)), None);
        assert_eq!(w.push(at(0, 100)), Some(0.0));
        // A burst: the whole of the last interval, half of the window.
        assert_eq!(w.push(at(100, 200)), Some(0.5));
        // The quiet interval fell out of the window: all busy.
        assert_eq!(w.push(at(200, 300)), Some(1.0));
        // A counter that went back restarts the window.
        assert_eq!(w.push(at(0, 10)), None);
    }

    fn cpu(share: f64) -> Load {
        Load {
            resource: Resource::Cpu,
            share,
        }
    }

    #[test]
    fn busy_at_once_and_idle_only_after_a_quiet_spell() {
        let mut a = Availability::new(0.5, 30.0);
        assert_eq!(a.state(), Avail::Unknown);
        assert_eq!(a.observe(cpu(0.1), 0.0), Some(Avail::Idle));
        assert_eq!(a.observe(cpu(0.5), 2.0), None, "at the threshold is not above it");
        assert_eq!(a.observe(cpu(0.85), 4.0), Some(Avail::Busy(cpu(0.85))));
        assert_eq!(a.observe(cpu(0.9), 6.0), None);
        assert_eq!(a.state(), Avail::Busy(cpu(0.9)), "the last busy reading is shown");
        assert_eq!(a.observe(cpu(0.1), 8.0), None);
        assert_eq!(a.observe(cpu(0.1), 30.0), None, "22 s quiet of 30");
        // A burst restarts the quiet spell.
        assert_eq!(a.observe(cpu(0.7), 32.0), None);
        assert_eq!(a.observe(cpu(0.0), 34.0), None);
        assert_eq!(a.observe(cpu(0.0), 63.9), None);
        assert_eq!(a.observe(cpu(0.0), 64.0), Some(Avail::Idle));
        assert_eq!(a.state(), Avail::Idle);
    }

    #[test]
    fn a_first_busy_reading_is_busy() {
        let mut a = Availability::new(0.2, 10.0);
        assert_eq!(a.observe(cpu(0.3), 0.0), Some(Avail::Busy(cpu(0.3))));
    }

    #[test]
    fn the_busier_resource_names_the_load() {
        assert_eq!(
            Load::of(0.2, Some(0.9)),
            Load {
                resource: Resource::Gpu,
                share: 0.9
            }
        );
        assert_eq!(Load::of(0.4, Some(0.1)), cpu(0.4));
        assert_eq!(Load::of(0.4, None), cpu(0.4));
        assert_eq!(Load::of(0.854, None).to_string(), "CPU 85 % busy");
    }
}
