//! The agent's side of the sandbox: what a trainer gets between `fork` and `exec`, the
//! per-job limits, and killing its process group.
//!
//! Guarantees, for a trainer spawned through [`prepare`] in [`Mode::Enforce`]:
//! - it leads its own session (`setsid`): no controlling terminal, so no `TIOCSTI` into the
//!   owner's terminal even through a descriptor it should never have; its session and
//!   process group are its own, so [`kill_group`] reaches everything it started;
//! - it is killed (SIGKILL) when the thread of the agent that spawned it dies;
//! - it lives in its own user namespace, as uid/gid [`TRAINER_ID`] there (never 0, so it
//!   holds no capability once it has exec'd), its own network namespace (a loopback that is
//!   down: no network at all), its own IPC namespace (no SysV or POSIX IPC object of the
//!   owner's), and a new pid namespace whose pid 1 it forks ([`super::pidns`]); the spawn
//!   fails if any cannot be created;
//! - rlimits: no core dumps, [`OPEN_FILES`] open files, a bounded number of processes (see
//!   [`nproc_limit`]), and on CPU workers an address-space limit; with a job, its CPU-time
//!   and file-size limits ([`JobLimits`]); a spare gets them from its job line and sets them
//!   on itself ([`limit_self`]) before the job's code runs;
//! - SIGXFSZ is ignored, so a write over the file-size limit fails with EFBIG, which the
//!   trainer reports, instead of killing it silently; its OOM score is the highest, so the
//!   kernel picks it first if the machine runs out of memory.
//!
//! In [`Mode::BestEffort`] a namespace that cannot be created is skipped (the start-up probe
//! has already said so).

use std::ffi::CString;
use std::io;

use tokio::process::{Child, Command};

use super::limits::{JobLimits, OPEN_FILES};
use super::Mode;

/// The trainer's uid and gid inside its user namespace.
pub const TRAINER_ID: u32 = 1000;

/// RLIMIT_NPROC of a trainer with `threads` intra-op threads: libtorch's OpenMP and inter-op
/// pools, plus a margin. It counts threads of the trainer's uid *in its user namespace* (set
/// after the namespace is made, so the owner's other processes do not count). The kernel
/// exempts uid 0 from it, so a root worker relies on seccomp, which forbids new processes
/// (only threads may be cloned), and on the address-space limit, which bounds threads.
pub fn nproc_limit(threads: i32) -> u64 {
    u64::try_from(threads.max(1))
        .unwrap_or(1)
        .saturating_mul(2)
        .saturating_add(64)
}

/// Everything the closure between fork and exec needs, prepared before the fork: the child
/// may only make async-signal-safe calls, so nothing is allocated or formatted there.
struct PreExec {
    mode: Mode,
    setgroups: CString,
    uid_map_path: CString,
    gid_map_path: CString,
    oom_path: CString,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    nproc: u64,
    address_space: Option<u64>,
    job: Option<JobLimits>,
}

/// Sets up `command` to start a sandboxed trainer (see the module's guarantees).
pub fn prepare(command: &mut Command, mode: Mode, address_space: Option<u64>, threads: i32, job: Option<&JobLimits>) {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let cstr = |s: &str| CString::new(s).unwrap_or_default();
    let plan = PreExec {
        mode,
        setgroups: cstr("/proc/self/setgroups"),
        uid_map_path: cstr("/proc/self/uid_map"),
        gid_map_path: cstr("/proc/self/gid_map"),
        oom_path: cstr("/proc/self/oom_score_adj"),
        uid_map: format!("{TRAINER_ID} {uid} 1\n").into_bytes(),
        gid_map: format!("{TRAINER_ID} {gid} 1\n").into_bytes(),
        nproc: nproc_limit(threads),
        address_space,
        job: job.copied(),
    };
    // SAFETY: the closure makes only async-signal-safe calls (setsid, unshare, open, write,
    // close, prctl, setrlimit, signal) on data prepared before the fork.
    unsafe {
        command.pre_exec(move || plan.run());
    }
}

impl PreExec {
    fn run(&self) -> io::Result<()> {
        let required = self.mode == Mode::Enforce;
        // SAFETY: plain system calls on valid pointers (see `prepare`).
        unsafe {
            // A fresh fork is never a group leader, so this cannot fail; if it did, the
            // trainer would share the agent's terminal.
            if libc::setsid() < 0 && required {
                return Err(io::Error::last_os_error());
            }
            // Enforce takes the first choice (with a user namespace) or fails; best effort
            // takes what it can, and the probe reports each missing layer.
            let mut user = false;
            for flags in NAMESPACES {
                if libc::unshare(flags) == 0 {
                    user = flags & libc::CLONE_NEWUSER != 0;
                    break;
                }
                if required {
                    return Err(io::Error::last_os_error());
                }
            }
            if user {
                let mapped = write_file(&self.setgroups, b"deny")
                    .and_then(|()| write_file(&self.uid_map_path, &self.uid_map))
                    .and_then(|()| write_file(&self.gid_map_path, &self.gid_map));
                if let Err(e) = mapped {
                    if required {
                        return Err(e);
                    }
                }
            }
            // After the namespace change, which may reset it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let _ = write_file(&self.oom_path, b"1000");
            for (resource, value) in fixed_limits(self).iter().flatten() {
                if set_limit(*resource, *value, *value).is_err() && required {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(job) = &self.job {
                for (resource, soft, hard) in job_rlimits(job) {
                    if set_limit(resource, soft, hard).is_err() && required {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
        }
        Ok(())
    }
}

/// The namespaces a trainer gets, best first: [`Mode::Enforce`] takes only the first; best
/// effort falls back (root without user namespaces can still leave the network, pids, IPC).
const NAMESPACES: [libc::c_int; 4] = [
    libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWPID,
    libc::CLONE_NEWUSER | libc::CLONE_NEWNET,
    libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

/// The job-independent rlimits, as a fixed array (no allocation between fork and exec).
fn fixed_limits(plan: &PreExec) -> [Option<(Resource, u64)>; 4] {
    [
        Some((libc::RLIMIT_CORE, 0)),
        Some((libc::RLIMIT_NOFILE, OPEN_FILES)),
        Some((libc::RLIMIT_NPROC, plan.nproc)),
        plan.address_space.map(|bytes| (libc::RLIMIT_AS, bytes)),
    ]
}

#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

/// RLIMIT_CPU (soft: SIGXCPU, hard a little later: SIGKILL) and RLIMIT_FSIZE of a job.
fn job_rlimits(job: &JobLimits) -> [(Resource, u64, u64); 2] {
    [
        (libc::RLIMIT_CPU, job.cpu_secs, job.cpu_secs.saturating_add(5)),
        (libc::RLIMIT_FSIZE, job.file_bytes, job.file_bytes),
    ]
}

fn set_limit(resource: Resource, soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(resource, &limit) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes `data` to an existing file with raw system calls (safe between fork and exec).
unsafe fn write_file(path: &CString, data: &[u8]) -> io::Result<()> {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let written = libc::write(fd, data.as_ptr().cast(), data.len());
    let error = io::Error::last_os_error();
    libc::close(fd);
    if usize::try_from(written).ok() == Some(data.len()) {
        Ok(())
    } else {
        Err(error)
    }
}

/// Gives this process (a spare trainer that just read its job line, before it runs any of
/// the job's code) the job's CPU-time and file-size limits. Only lowers limits: the spare
/// started without them, and an unprivileged process cannot raise a hard limit again.
pub fn limit_self(cpu_secs: u64, file_bytes: u64) -> io::Result<()> {
    let job = JobLimits {
        wall: std::time::Duration::ZERO,
        wall_bound: super::limits::WallBound::DeclaredWork,
        cpu_secs,
        file_bytes,
        dir_bytes: u64::MAX,
        dir_entries: u64::MAX,
    };
    for (resource, soft, hard) in job_rlimits(&job) {
        set_limit(resource, soft, hard)?;
    }
    Ok(())
}

/// Kills the trainer's whole process group, then the trainer itself, and reaps it.
pub async fn kill_group(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: signals the group the trainer leads (`setsid`); it has not been reaped
        // (its id is still known), so the id is not reused.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
    let _ = child.kill().await;
}
