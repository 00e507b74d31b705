//! The trainer's seccomp filter: a deny list of what a trainer never needs, installed on every
//! thread of the process (TSYNC) after Landlock and before the model loads.
//!
//! Guarantee, once [`install`] returned `Ok`: the trainer cannot
//! - open a socket (any family) or connect, bind, listen, accept;
//! - start a program or a process: `execve`, `fork`, `vfork`, and `clone` without
//!   `CLONE_THREAD` are refused (threads still start; `clone3` answers ENOSYS, so glibc falls
//!   back to `clone`, whose flags the filter can see);
//! - inspect or change another process: `ptrace`, `process_vm_readv/writev`, `kcmp`,
//!   `pidfd_getfd`, `pidfd_open`, `pidfd_send_signal`, `process_madvise`; and, a second wall
//!   behind its pid namespace, address any process but itself: `prlimit64` only on pid 0,
//!   `setpriority`/`getpriority` and `ioprio_set`/`ioprio_get` only on itself (who 0),
//!   `sched_setaffinity`/`sched_setscheduler`/`sched_setparam`/`sched_setattr` and
//!   `migrate_pages`/`move_pages` only on pid 0 (so a thread pinning itself by tid, as
//!   `OMP_PROC_BIND` does, is refused: libgomp then runs unpinned), `kill`,
//!   `rt_sigqueueinfo`, `tgkill`, `rt_tgsigqueueinfo` only into its own process (its pid
//!   when the filter is installed), `tkill` never; nor leave its process group or session
//!   (`setsid`, `setpgid`), which would take it out of the agent's `killpg`;
//! - use SysV IPC (`shm*`, `sem*`, `msg*`) or POSIX message queues (`mq_*`): libtorch's CPU
//!   training uses none (CUDA's inter-process paths are untested here);
//! - push input into a terminal: `ioctl` `TIOCSTI`, `TIOCLINUX`;
//! - change namespaces or mounts: `unshare`, `setns`, `mount` and the new mount API,
//!   `pivot_root`, `chroot`;
//! - reach kernel facilities with a history of privilege escalation: `bpf`,
//!   `perf_event_open`, `userfaultfd`, `io_uring_*` (whose operations bypass seccomp),
//!   `keyctl`/`add_key`/`request_key`, modules, `kexec`, `reboot`, swap, `acct`, `quotactl`,
//!   `syslog`, clocks, host names, `open_by_handle_at`, `fanotify_init`, `personality`
//!   (except the query), `iopl`/`ioperm`.
//!
//! Each denied call fails with EPERM rather than killing the process: a denied call does
//! nothing either way, and an error is what the researcher reads ("Operation not permitted"
//! in the job's failure reason), where a SIGSYS would end the run without one.

use std::collections::BTreeMap;

use seccompiler::{
    apply_filter_all_threads, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

/// Installs the filters (see the module's guarantee) on every thread of this process.
pub fn install() -> Result<(), String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| format!("seccomp: {e}"))?;
    // SAFETY: getpid cannot fail.
    let own_pid = unsafe { libc::getpid() };
    let deny = filter(denied(own_pid)?, libc::EPERM, arch)?;
    let clone3 = filter(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        libc::ENOSYS,
        arch,
    )?;
    for program in [deny, clone3] {
        apply_filter_all_threads(&program).map_err(|e| format!("seccomp: {e}"))?;
    }
    Ok(())
}

fn filter(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32, arch: TargetArch) -> Result<BpfProgram, String> {
    let errno = u32::try_from(errno).map_err(|e| e.to_string())?;
    SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(errno), arch)
        .and_then(BpfProgram::try_from)
        .map_err(|e| format!("seccomp: {e}"))
}

/// The deny list: an empty rule list denies the call outright; a call with rules is denied
/// when any rule matches (the conditions of one rule all hold). `own_pid` is this process's.
fn denied(own_pid: libc::pid_t) -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALWAYS.iter().map(|&nr| (nr, Vec::new())).collect();
    let when = |conditions: Vec<(u8, SeccompCmpArgLen, SeccompCmpOp, u64)>| {
        conditions
            .into_iter()
            .map(|(arg, len, op, value)| SeccompCondition::new(arg, len, op, value))
            .collect::<Result<Vec<_>, _>>()
            .and_then(SeccompRule::new)
            .map_err(|e| format!("seccomp: {e}"))
    };
    // A pid or "who" argument: an int, so only its low 32 bits count.
    let not = |arg: u8, value: u64| (arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, value);
    // A new process, not a thread.
    let flags = u64::try_from(libc::CLONE_THREAD).map_err(|e| e.to_string())?;
    rules.insert(
        libc::SYS_clone,
        vec![when(vec![(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flags), 0)])?],
    );
    // personality(0xffffffff) only reads the persona.
    rules.insert(libc::SYS_personality, vec![when(vec![not(0, 0xffff_ffff)])?]);
    // Only on itself: pid 0.
    for nr in ON_SELF_ONLY {
        rules.insert(*nr, vec![when(vec![not(0, 0)])?]);
    }
    // (which, who): PRIO_PROCESS 0 and IOPRIO_WHO_PROCESS 0 are the caller.
    let prio_process = u64::from(libc::PRIO_PROCESS);
    for nr in [libc::SYS_setpriority, libc::SYS_getpriority] {
        rules.insert(nr, vec![when(vec![not(0, prio_process)])?, when(vec![not(1, 0)])?]);
    }
    for nr in [libc::SYS_ioprio_set, libc::SYS_ioprio_get] {
        rules.insert(nr, vec![when(vec![not(0, IOPRIO_WHO_PROCESS)])?, when(vec![not(1, 0)])?]);
    }
    // Signals only into its own process (a thread group id, as the kernel sees it from here).
    let own = u64::from(own_pid.unsigned_abs());
    for nr in [
        libc::SYS_kill,
        libc::SYS_rt_sigqueueinfo,
        libc::SYS_tgkill,
        libc::SYS_rt_tgsigqueueinfo,
    ] {
        rules.insert(nr, vec![when(vec![not(0, own)])?]);
    }
    // Terminal input injection, whatever the descriptor.
    rules.insert(
        libc::SYS_ioctl,
        [TIOCSTI, TIOCLINUX]
            .iter()
            .map(|&request| when(vec![(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request)]))
            .collect::<Result<_, _>>()?,
    );
    Ok(rules)
}

const IOPRIO_WHO_PROCESS: u64 = 1;
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;

/// Calls whose first argument is a pid, allowed on pid 0 (the caller) only.
const ON_SELF_ONLY: &[i64] = &[
    libc::SYS_prlimit64,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_setparam,
    libc::SYS_sched_setattr,
    libc::SYS_migrate_pages,
    libc::SYS_move_pages,
];

const ALWAYS: &[i64] = &[
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_execve,
    libc::SYS_execveat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_fork,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_vfork,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    libc::SYS_pidfd_getfd,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_process_madvise,
    libc::SYS_tkill,
    libc::SYS_setsid,
    libc::SYS_setpgid,
    libc::SYS_shmget,
    libc::SYS_shmat,
    libc::SYS_shmdt,
    libc::SYS_shmctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semtimedop,
    libc::SYS_semctl,
    libc::SYS_msgget,
    libc::SYS_msgsnd,
    libc::SYS_msgrcv,
    libc::SYS_msgctl,
    libc::SYS_mq_open,
    libc::SYS_mq_unlink,
    libc::SYS_mq_timedsend,
    libc::SYS_mq_timedreceive,
    libc::SYS_mq_notify,
    libc::SYS_mq_getsetattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_fanotify_init,
    libc::SYS_vhangup,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_for_this_architecture() {
        let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
        let rules = denied(1).unwrap();
        assert!(rules.contains_key(&libc::SYS_socket) && rules.contains_key(&libc::SYS_ptrace));
        assert!(rules.contains_key(&libc::SYS_prlimit64) && rules.contains_key(&libc::SYS_shmget));
        assert!(
            !rules.contains_key(&libc::SYS_clone3),
            "clone3 answers ENOSYS, in its own filter"
        );
        assert!(filter(rules, libc::EPERM, arch).is_ok_and(|p| !p.is_empty()));
    }
}
