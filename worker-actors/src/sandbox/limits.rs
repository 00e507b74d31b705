//! The limits one job's trainer runs under, and why a trainer ended, in words.
//!
//! Pure functions: what the agent applies is computed here from the award and this worker's
//! measured speed, so the numbers are testable without a child.

use std::process::ExitStatus;
use std::time::Duration;

use helium_protocol::job::DeclaredWork;

/// A job may run this many times the worker's own estimate for its declared work…
pub const WALL_FACTOR: f64 = 10.0;
/// …plus this much (start-up, fetching, a slow first epoch), before it is killed.
pub const WALL_SLACK_SECS: f64 = 60.0;
/// No run is limited to less than this (a deadline a second away still gets to start).
pub const MIN_WALL_SECS: f64 = 5.0;
/// The broker expires a running job at its deadline and cancels the award; the trainer's own
/// deadline limit is a backstop for a broker that cannot say so, and fires this much later.
pub const DEADLINE_GRACE_SECS: f64 = 15.0;
/// Nor runs longer than this without its deadline saying so.
pub const MAX_WALL_SECS: f64 = 7.0 * 24.0 * 3600.0;
/// CPU seconds allowed on top of `threads × wall-clock`, so RLIMIT_CPU is a backstop that
/// binds only if the agent's wall clock could not act.
pub const CPU_SLACK_SECS: u64 = 30;
/// Every file the trainer writes may be this large…
pub const FILE_FLOOR_BYTES: u64 = 1 << 30;
/// …plus this many bytes per declared parameter (a checkpoint holds parameters, buffers and
/// two optimizer moments, in at most 8-byte dtypes).
pub const FILE_BYTES_PER_PARAMETER: u64 = 32;
/// A job directory may hold the job's inputs (model, data, a checkpoint to resume from) plus
/// this many files of the largest size a trainer may write: at most two checkpoints (one
/// uploading, one waiting, `uploader.rs`), the one being written, and the result.
pub const JOB_DIR_FILE_SLOTS: u64 = 4;
/// Entries (files, directories, links…) a job directory may hold. A run needs about ten:
/// its inputs, `spec.json`, `checkpoints/` and its few files, the result.
pub const JOB_DIR_ENTRIES: u64 = 1024;
/// How often the agent measures a running trainer's job directory (besides at every
/// checkpoint and at the end). A bounded walk: at most [`JOB_DIR_ENTRIES`] + 1 entries.
pub const JOB_DIR_CHECK_PERIOD: Duration = Duration::from_secs(1);
/// Open files of a trainer (libtorch opens a few dozen libraries and files at most).
pub const OPEN_FILES: u64 = 1024;
/// Address space a CPU trainer needs besides the job's own memory: libtorch maps about
/// 2.7 GiB of libraries before it allocates anything, and each thread reserves a stack and a
/// malloc arena.
pub const ADDRESS_SPACE_OVERHEAD_BYTES: u64 = 4 << 30;
pub const ADDRESS_SPACE_PER_THREAD_BYTES: u64 = 128 << 20;

/// Which bound set a run's wall-clock limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WallBound {
    /// The researcher's deadline.
    Deadline,
    /// [`WALL_FACTOR`] × this worker's estimate for the declared work, plus [`WALL_SLACK_SECS`].
    DeclaredWork,
}

/// The limits of one job's trainer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobLimits {
    /// The agent kills the trainer's process group after this long.
    pub wall: Duration,
    pub wall_bound: WallBound,
    /// RLIMIT_CPU (soft; SIGXCPU), summed over threads. The hard limit is a few seconds more.
    pub cpu_secs: u64,
    /// RLIMIT_FSIZE: the largest file the trainer may write.
    pub file_bytes: u64,
    /// The job directory's total bytes (each entry's size or allocated bytes, the larger);
    /// the agent kills the trainer past it.
    pub dir_bytes: u64,
    /// Entries in the job directory, likewise.
    pub dir_entries: u64,
}

/// The limits of a job declaring `work`, due by `deadline_ms` (unix ms, 0 = none), on a
/// worker measuring `throughput` parameter-samples/s with `threads` trainer threads, whose
/// inputs (model, data, resume checkpoint) are `input_bytes` long.
pub fn job_limits(
    work: &DeclaredWork,
    input_bytes: u64,
    deadline_ms: u64,
    now_ms: u64,
    throughput: f64,
    threads: i32,
) -> JobLimits {
    let by_work = work.eta_secs(throughput) * WALL_FACTOR + WALL_SLACK_SECS;
    let by_work = if by_work.is_finite() {
        by_work.min(MAX_WALL_SECS)
    } else {
        MAX_WALL_SECS
    };
    let by_deadline =
        (deadline_ms != 0).then(|| deadline_ms.saturating_sub(now_ms) as f64 / 1000.0 + DEADLINE_GRACE_SECS);
    let (secs, wall_bound) = match by_deadline {
        Some(d) if d < by_work => (d, WallBound::Deadline),
        _ => (by_work, WallBound::DeclaredWork),
    };
    let secs = secs.max(MIN_WALL_SECS);
    let threads = u64::try_from(threads.max(1)).unwrap_or(1);
    let cpu_secs = (secs.ceil() as u64)
        .saturating_mul(threads.saturating_add(1))
        .saturating_add(CPU_SLACK_SECS);
    let file_bytes = FILE_FLOOR_BYTES.saturating_add(work.parameters.saturating_mul(FILE_BYTES_PER_PARAMETER));
    JobLimits {
        wall: Duration::from_secs_f64(secs),
        wall_bound,
        cpu_secs,
        file_bytes,
        dir_bytes: input_bytes.saturating_add(file_bytes.saturating_mul(JOB_DIR_FILE_SLOTS)),
        dir_entries: JOB_DIR_ENTRIES,
    }
}

/// Which bound of its job directory a trainer passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirExceeded {
    /// At least `used` bytes, over `limit`.
    Bytes { used: u64, limit: u64 },
    /// More than `limit` entries.
    Entries { limit: u64 },
}

/// RLIMIT_AS of a CPU trainer: the memory this worker offers a job (`--memory-gb`, or the
/// machine's RAM) plus what libtorch itself needs, but never more than the machine's RAM
/// (`machine_bytes`, 0 if unknown), so a memory bomb meets the limit before the OOM killer.
pub fn address_space_bytes(offered_memory_bytes: u64, threads: i32, machine_bytes: u64) -> u64 {
    let threads = u64::try_from(threads.max(1)).unwrap_or(1);
    let wanted = offered_memory_bytes
        .saturating_add(ADDRESS_SPACE_OVERHEAD_BYTES)
        .saturating_add(threads.saturating_mul(ADDRESS_SPACE_PER_THREAD_BYTES));
    if machine_bytes > ADDRESS_SPACE_OVERHEAD_BYTES {
        wanted.min(machine_bytes)
    } else {
        wanted
    }
}

/// How a trainer process ended, as the agent saw it.
#[derive(Debug, Clone, Copy)]
pub enum Ended {
    Exited(ExitStatus),
    /// The run was stopped (its actor ended) and killed the trainer.
    Killed,
    /// The broker cancelled the award.
    Cancelled,
    /// The wall-clock limit passed and the agent killed the trainer's process group.
    WallClock,
    /// Waiting for the child failed (the agent lost track of it).
    WaitFailed,
    /// The job directory passed a bound and the agent killed the trainer's process group.
    JobDir(DirExceeded),
}

/// Why a run that did not finish failed, when the trainer gave no reason itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitReason {
    pub reason: String,
    /// This worker's fault (the job may move elsewhere) rather than the job's.
    pub worker_fault: bool,
}

/// The reason for a trainer that ended as `ended` under `limits` without a `failed` line.
pub fn exit_reason(ended: Ended, limits: &JobLimits) -> ExitReason {
    use std::os::unix::process::ExitStatusExt;
    let job = |reason: String| ExitReason {
        reason,
        worker_fault: false,
    };
    let worker = |reason: String| ExitReason {
        reason,
        worker_fault: true,
    };
    match ended {
        Ended::WallClock => job(format!(
            "the trainer exceeded its wall-clock limit of {} s ({}) and was killed",
            limits.wall.as_secs(),
            match limits.wall_bound {
                WallBound::Deadline => "the job's deadline".to_string(),
                WallBound::DeclaredWork => format!("{WALL_FACTOR}× this worker's estimate for the declared work"),
            }
        )),
        Ended::JobDir(DirExceeded::Bytes { used, limit }) => job(format!(
            "the trainer filled its job directory past its limit of {limit} bytes (at least {used}) and was killed"
        )),
        Ended::JobDir(DirExceeded::Entries { limit }) => job(format!(
            "the trainer created more than {limit} files in its job directory and was killed"
        )),
        Ended::Killed => worker("the run was stopped and its trainer killed".into()),
        Ended::Cancelled => worker("the run was cancelled".into()),
        Ended::WaitFailed => worker("the worker lost track of its trainer process".into()),
        Ended::Exited(status) => match (status.code(), status.signal()) {
            (Some(code), _) if code == i32::from(super::EXIT_NO_SANDBOX) => {
                worker("the trainer could not enter its sandbox on this worker".into())
            }
            (_, Some(libc::SIGXCPU)) => job(format!(
                "the trainer exceeded its CPU-time limit of {} s and was killed",
                limits.cpu_secs
            )),
            // As pid 1 of its namespace the trainer ignores the soft limit's SIGXCPU, so the
            // hard limit's SIGKILL is what a CPU-time limit looks like.
            (_, Some(libc::SIGKILL)) => job(
                "the trainer was killed (SIGKILL): it reached its CPU-time limit or the machine ran out of memory"
                    .into(),
            ),
            (_, Some(signal)) => worker(format!("the trainer crashed ({})", signal_name(signal))),
            _ => worker(format!("the trainer exited ({status}) without finishing")),
        },
    }
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGSYS => "SIGSYS, a system call the sandbox forbids".into(),
        libc::SIGXFSZ => "SIGXFSZ, a file over its size limit".into(),
        other => format!("signal {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    const WORK: DeclaredWork = DeclaredWork {
        parameters: 1_000,
        samples: 1_000,
        epochs: 10,
    };

    #[test]
    fn the_declared_work_bounds_a_run_without_deadline() {
        // 1e7 parameter-samples at 1e6/s = 10 s, plus the 5 s overhead of every estimate.
        let l = job_limits(&WORK, 5_000, 0, 1_000, 1e6, 2);
        assert_eq!(l.wall_bound, WallBound::DeclaredWork);
        assert_eq!(l.wall, Duration::from_secs_f64(15.0 * WALL_FACTOR + WALL_SLACK_SECS));
        assert_eq!(l.cpu_secs, 210 * 3 + CPU_SLACK_SECS);
        assert_eq!(l.file_bytes, FILE_FLOOR_BYTES + 32_000);
        assert_eq!(l.dir_bytes, 5_000 + JOB_DIR_FILE_SLOTS * l.file_bytes);
        assert_eq!(l.dir_entries, JOB_DIR_ENTRIES);
    }

    #[test]
    fn a_nearer_deadline_wins_and_a_passed_one_still_lets_it_start() {
        let l = job_limits(&WORK, 0, 21_000, 1_000, 1e6, 1);
        let by_deadline = Duration::from_secs_f64(20.0 + DEADLINE_GRACE_SECS);
        assert_eq!((l.wall, l.wall_bound), (by_deadline, WallBound::Deadline));
        let l = job_limits(&WORK, 0, 500, 1_000, 1e6, 1);
        assert_eq!(l.wall, Duration::from_secs_f64(DEADLINE_GRACE_SECS.max(MIN_WALL_SECS)));
        let l = job_limits(&WORK, 0, 10_000_000_000, 1_000, 1e6, 1);
        assert_eq!(l.wall_bound, WallBound::DeclaredWork, "a far deadline is no bound");
    }

    #[test]
    fn nonsense_inputs_saturate_instead_of_overflowing() {
        let huge = DeclaredWork {
            parameters: u64::MAX,
            samples: u64::MAX,
            epochs: u32::MAX,
        };
        let l = job_limits(&huge, u64::MAX, 0, 0, 0.0, i32::MAX);
        assert_eq!(l.wall, Duration::from_secs_f64(MAX_WALL_SECS));
        assert_eq!(l.file_bytes, u64::MAX);
        assert_eq!(l.dir_bytes, u64::MAX);
        assert!(l.cpu_secs > 0);
        assert_eq!(address_space_bytes(u64::MAX, 8, 0), u64::MAX);
        assert_eq!(
            address_space_bytes(0, 0, 0),
            ADDRESS_SPACE_OVERHEAD_BYTES + ADDRESS_SPACE_PER_THREAD_BYTES
        );
        // A worker offering all its RAM gets the RAM, not more.
        assert_eq!(address_space_bytes(16 << 30, 4, 16 << 30), 16 << 30);
        assert_eq!(address_space_bytes(1 << 30, 1, 16 << 30), (5 << 30) + (128 << 20));
    }

    #[test]
    fn limits_blame_the_job_and_crashes_blame_the_worker() {
        let l = job_limits(&WORK, 0, 21_000, 1_000, 1e6, 1);
        let wall = exit_reason(Ended::WallClock, &l);
        assert!(!wall.worker_fault);
        assert!(
            wall.reason.contains("wall-clock limit of 35 s (the job's deadline)"),
            "{}",
            wall.reason
        );
        let xcpu = exit_reason(Ended::Exited(ExitStatus::from_raw(libc::SIGXCPU)), &l);
        assert!(!xcpu.worker_fault && xcpu.reason.contains("CPU-time limit"));
        let segv = exit_reason(Ended::Exited(ExitStatus::from_raw(libc::SIGSEGV)), &l);
        assert!(segv.worker_fault && segv.reason.contains("SIGSEGV"));
        let no_sandbox = exit_reason(
            Ended::Exited(ExitStatus::from_raw(i32::from(crate::sandbox::EXIT_NO_SANDBOX) << 8)),
            &l,
        );
        assert!(no_sandbox.worker_fault && no_sandbox.reason.contains("sandbox"));
        let files = exit_reason(Ended::JobDir(DirExceeded::Entries { limit: 1024 }), &l);
        assert!(!files.worker_fault && files.reason.contains("more than 1024 files"));
        let bytes = exit_reason(Ended::JobDir(DirExceeded::Bytes { used: 9, limit: 8 }), &l);
        assert!(!bytes.worker_fault && bytes.reason.contains("limit of 8 bytes"));
    }
}
