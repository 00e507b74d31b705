//! What the probe trainer tries, one function per thing a layer forbids. Each returns `Ok`
//! only if the attempt failed the way that layer makes it fail; `Err` says what got through.
//! They run inside the real sandbox, as the hostile native code they stand for would.

use std::path::Path;

use super::limits::OPEN_FILES;
use super::pidns;

/// Where the agent that started the probe lives, to aim at.
#[derive(Debug, Clone, Default)]
pub struct Outside {
    /// The agent's pid, as the agent sees it.
    pub agent_pid: libc::pid_t,
    /// The agent's IPC namespace (`ipc:[…]`).
    pub agent_ipc: String,
}

/// What a trainer must never have, whatever the machine: each is a bug of the agent.
pub fn exposures() -> Vec<String> {
    let mut found: Vec<String> = std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| !super::env::passed(name))
        .map(|name| format!("the environment variable {} reached the trainer", name.to_string_lossy()))
        .collect();
    for fd in 0..3 {
        // SAFETY: isatty on a descriptor number; an invalid one is just "no".
        if unsafe { libc::isatty(fd) } == 1 {
            found.push(format!("descriptor {fd} is a terminal"));
        }
    }
    match controlling_tty() {
        Ok(0) => {}
        Ok(tty) => found.push(format!("the trainer has a controlling terminal (tty_nr {tty})")),
        Err(e) => found.push(format!("cannot read its terminal from /proc/self/stat: {e}")),
    }
    found
}

/// Field 7 of `/proc/self/stat`: the controlling terminal's device, 0 for none.
fn controlling_tty() -> Result<i64, String> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
    // "pid (comm) state ppid pgrp session tty_nr …"; comm may hold spaces and parentheses.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or("no comm")?;
    after
        .split_whitespace()
        .nth(4)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| "no tty_nr".to_string())
}

/// The initial user namespace maps every uid: `0 0 4294967295`.
pub fn own_user_namespace() -> Result<(), String> {
    let map = std::fs::read_to_string("/proc/self/uid_map").map_err(|e| format!("reading uid_map: {e}"))?;
    let full = map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
    if full {
        Err("the trainer is in the worker's user namespace (user namespaces unavailable?)".into())
    } else {
        Ok(())
    }
}

/// A fresh network namespace has one interface: `lo`.
pub fn own_network_namespace() -> Result<(), String> {
    let dev = std::fs::read_to_string("/proc/self/net/dev").map_err(|e| format!("reading /proc/self/net/dev: {e}"))?;
    let others: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .filter(|name| *name != "lo")
        .collect();
    if others.is_empty() {
        Ok(())
    } else {
        Err(format!("the trainer sees the network ({})", others.join(", ")))
    }
}

/// Pid 1 of a namespace of its own, and the agent not there to signal. Run before Landlock
/// and seccomp, so only the namespace can make the signal fail.
pub fn own_pid_namespace(outside: &Outside) -> Result<(), String> {
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    if pid != 1 {
        return Err(format!("the trainer is pid {pid}, in the worker's pid namespace"));
    }
    if outside.agent_pid > 1 {
        match errno_of(|| unsafe { libc::kill(outside.agent_pid, 0) }.into()) {
            Some(libc::ESRCH) => {}
            None => return Err(format!("the trainer can signal the agent (pid {})", outside.agent_pid)),
            Some(e) => return Err(format!("signalling the agent failed with errno {e}, not ESRCH")),
        }
    }
    Ok(())
}

pub fn own_ipc_namespace(outside: &Outside) -> Result<(), String> {
    match pidns::namespace("ipc") {
        Some(own) if !outside.agent_ipc.is_empty() && own != outside.agent_ipc => Ok(()),
        Some(own) => Err(format!("the trainer shares the agent's IPC namespace ({own})")),
        None => Err("cannot read /proc/self/ns/ipc".into()),
    }
}

pub fn landlock_holds(job_dir: &Path) -> Result<(), String> {
    std::fs::write(job_dir.join("probe"), b"inside").map_err(|e| format!("cannot write its job directory: {e}"))?;
    match std::fs::read_dir("/") {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(format!("listing / failed, but not for Landlock: {e}")),
        Ok(_) => Err("the trainer could list /".into()),
    }
}

/// The errno of a call that returned -1, or `None` if it succeeded.
fn errno_of(call: impl FnOnce() -> i64) -> Option<i32> {
    if call() == -1 {
        Some(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        None
    }
}

/// Everything the filter denies that hostile native code would try first, each refused with
/// the filter's EPERM, and what it must still allow (its own limits, signals to itself).
pub fn seccomp_holds(outside: &Outside) -> Result<(), String> {
    let agent = outside.agent_pid;
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let old_ptr: *mut libc::rlimit = &mut old;
    let stolen: u8 = b'x';
    // SAFETY (every call): constant or valid pointer arguments; a socket or segment that is
    // made anyway is closed or removed below.
    let attempts: [Attempt; 6] = [
        ("open a socket", Made::Fd, Box::new(|| unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) }.into())),
        (
            "read the agent's rlimits (prlimit64)",
            Made::Nothing,
            Box::new(move || unsafe { libc::prlimit(agent, libc::RLIMIT_NOFILE, std::ptr::null(), old_ptr) }.into()),
        ),
        (
            "read the agent's priority (getpriority)",
            Made::Nothing,
            Box::new(move || unsafe { libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, agent) }),
        ),
        ("signal the agent (kill)", Made::Nothing, Box::new(move || unsafe { libc::kill(agent, 0) }.into())),
        (
            "make a SysV shared memory segment",
            Made::Shm,
            Box::new(|| unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) }.into()),
        ),
        (
            "push a keystroke into a terminal (TIOCSTI)",
            Made::Nothing,
            Box::new(move || unsafe { libc::ioctl(0, libc::TIOCSTI, &stolen) }.into()),
        ),
    ];
    let mut through = Vec::new();
    for (what, made, call) in attempts {
        let result = call();
        if result >= 0 {
            through.push(format!("could {what}"));
            made.remove(result);
        } else {
            let errno = std::io::Error::last_os_error().raw_os_error();
            if errno != Some(libc::EPERM) {
                through.push(format!("{what} failed with errno {errno:?}, not the filter's EPERM"));
            }
        }
    }
    // SAFETY: valid pointers; the trainer's own limits and a null signal to itself.
    let own_limits = unsafe { libc::prlimit(0, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    let own_signal = unsafe { libc::kill(libc::getpid(), 0) };
    if own_limits != 0 || own_signal != 0 {
        through.push("the filter refuses the trainer its own limits or signals".into());
    }
    if through.is_empty() {
        Ok(())
    } else {
        Err(through.join("; "))
    }
}

/// What to try, what it makes if it gets through, and the call.
type Attempt = (&'static str, Made, Box<dyn FnOnce() -> i64>);

/// What an attempt that got through made, to undo.
enum Made {
    Nothing,
    Fd,
    Shm,
}

impl Made {
    fn remove(self, id: i64) {
        let Ok(id) = i32::try_from(id) else {
            return;
        };
        // SAFETY: closes or removes the object the attempt just made.
        unsafe {
            match self {
                Made::Nothing => {}
                Made::Fd => {
                    libc::close(id);
                }
                Made::Shm => {
                    libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
                }
            }
        }
    }
}

pub fn rlimits_hold() -> Result<(), String> {
    let get = |resource| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid out-pointer.
        unsafe { libc::getrlimit(resource, &mut limit) };
        limit.rlim_cur
    };
    match (get(libc::RLIMIT_CORE), get(libc::RLIMIT_NOFILE)) {
        (0, n) if n == OPEN_FILES => Ok(()),
        (core, files) => Err(format!(
            "core {core}, open files {files}: the spawn limits did not apply"
        )),
    }
}
