//! The trainer as pid 1 of its own pid namespace.
//!
//! `unshare(CLONE_NEWPID)` (done between fork and exec, [`super::spawn`]) moves only the
//! caller's *future children* into the new namespace, and forbids the caller to create
//! threads. So the process the agent starts (the *keeper*) forks once, first thing in
//! `helium-worker train`, before any thread exists ([`become_pid_one`]); the fork is the
//! trainer, pid 1 of the namespace, and the keeper waits for it and exits as it did.
//!
//! Guarantees, once [`become_pid_one`] returned [`Role::Trainer`] in a new namespace:
//! - the trainer sees no process outside its namespace: `kill`, `prlimit`, `setpriority`,
//!   `sched_*` on the agent's (or anyone's) pid find nothing (ESRCH); its parent pid is 0;
//! - it dies with the keeper (`PR_SET_PDEATHSIG`, checked against a keeper that died before
//!   it was set), and the keeper dies with the agent; the agent's `killpg` reaches both (the
//!   trainer stays in the keeper's process group: seccomp denies `setsid`/`setpgid`);
//! - when the trainer (pid 1) ends, the kernel kills everything else in the namespace; the
//!   trainer starts threads only (seccomp), so there is nothing for it to reap;
//! - the keeper's exit mirrors the trainer's: the same exit code, or death by the same signal,
//!   so the agent's exit reasons read the same. The keeper holds no end of the trainer's
//!   stdin or stdout (the agent sees their ends as the trainer's), runs none of the job's code
//!   and is not visible from inside.
//!
//! Being pid 1 changes one thing for the trainer: a signal it does not handle is ignored when
//! sent from inside the namespace, and the kernel's SIGXCPU at the soft CPU limit too; the hard
//! CPU limit's SIGKILL still ends it, and `abort()` ends as SIGSEGV (glibc's fallback).

use std::io;

/// What this process is, after [`become_pid_one`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Go on: this is the trainer (pid 1 of a new namespace, or no namespace was pending).
    Trainer,
    /// This was the keeper and the trainer ended: exit with this raw wait status mirrored.
    KeeperDone(i32),
}

/// Whether this process was started into a pid namespace it is not in yet: its children's
/// namespace differs from its own, or (until the namespace's first process exists) cannot be
/// read at all. (A kernel before 4.12 has no such link either; there the keeper's fork is
/// harmless and the probe reports no pid namespace.)
pub fn pending() -> bool {
    let own = std::fs::read_link("/proc/self/ns/pid");
    let children = std::fs::read_link("/proc/self/ns/pid_for_children");
    match (own, children) {
        (Ok(own), Ok(children)) => own != children,
        (Ok(_), Err(e)) => e.kind() == io::ErrorKind::NotFound,
        (Err(_), _) => false,
    }
}

/// Forks the trainer into the pending pid namespace (see the module's guarantees); without
/// one pending, returns [`Role::Trainer`] at once. Call it while the process is one thread.
pub fn become_pid_one() -> io::Result<Role> {
    if !pending() {
        return Ok(Role::Trainer);
    }
    let mut alive = [0; 2];
    // SAFETY: a valid array of two descriptors.
    if unsafe { libc::pipe2(alive.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let [alive_read, alive_write] = alive;
    // SAFETY: the process is one thread (the caller's contract; the kernel refuses threads
    // while a pid namespace is pending), so the child may do anything after the fork.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: plain calls on descriptors this process owns.
            unsafe {
                libc::close(alive_write);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // The keeper holds the write end for its life: a hang-up means it is gone,
                // maybe before the death signal was armed.
                let mut poll = libc::pollfd {
                    fd: alive_read,
                    events: libc::POLLIN,
                    revents: 0,
                };
                if libc::poll(&mut poll, 1, 0) != 0 {
                    libc::_exit(1);
                }
                libc::close(alive_read);
            }
            Ok(Role::Trainer)
        }
        trainer => {
            // SAFETY: plain calls on descriptors this process owns.
            unsafe {
                libc::close(alive_read);
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
                if null >= 0 {
                    libc::dup2(null, 0);
                    libc::dup2(null, 1);
                    libc::close(null);
                }
            }
            Ok(Role::KeeperDone(wait(trainer)))
        }
    }
}

fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: a valid out-pointer; `pid` is this process's child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return status;
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // Cannot happen for our own child; report it as a plain failure.
            return 1 << 8;
        }
    }
}

/// Ends the keeper as the trainer ended: `status` is the raw wait status.
pub fn mirror(status: i32) -> ! {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        // SAFETY: restores the default action and raises the signal on this process.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(signal);
        }
        std::process::exit(128 + signal);
    }
    std::process::exit(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 1 })
}

/// The name of this process's namespace of `kind` (`pid`, `ipc`…), e.g. `ipc:[4026531839]`.
pub fn namespace(kind: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/self/ns/{kind}")).ok().map(|p| p.to_string_lossy().into_owned())
}
