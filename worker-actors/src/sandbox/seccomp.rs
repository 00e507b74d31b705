//! The trainer's seccomp filter: a deny list of what a trainer never needs, installed on every
//! thread of the process (TSYNC) after Landlock and before the model loads.
//!
//! Guarantee, once [`install`] returned `Ok`: the trainer cannot
//! - open a socket (any family) or connect, bind, listen, accept;
//! - start a program or a process: `execve`, `fork`, `vfork`, and `clone` without
//!   `CLONE_THREAD` are refused (threads still start; `clone3` answers ENOSYS, so glibc falls
//!   back to `clone`, whose flags the filter can see);
//! - inspect or change another process: `ptrace`, `process_vm_readv/writev`, `kcmp`,
//!   `pidfd_getfd`, `pidfd_open`;
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
    let deny = filter(denied()?, libc::EPERM, arch)?;
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

/// The deny list: an empty rule list denies the call outright.
fn denied() -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALWAYS.iter().map(|&nr| (nr, Vec::new())).collect();
    let rule = |arg: u8, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(|e| format!("seccomp: {e}"))
    };
    // A new process, not a thread.
    let flags = u64::try_from(libc::CLONE_THREAD).map_err(|e| e.to_string())?;
    rules.insert(libc::SYS_clone, vec![rule(0, SeccompCmpOp::MaskedEq(flags), 0)?]);
    // personality(0xffffffff) only reads the persona.
    let query = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, 0xffff_ffff)
        .and_then(|c| SeccompRule::new(vec![c]))
        .map_err(|e| format!("seccomp: {e}"))?;
    rules.insert(libc::SYS_personality, vec![query]);
    Ok(rules)
}

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
        let rules = denied().unwrap();
        assert!(rules.contains_key(&libc::SYS_socket) && rules.contains_key(&libc::SYS_ptrace));
        assert!(
            !rules.contains_key(&libc::SYS_clone3),
            "clone3 answers ENOSYS, in its own filter"
        );
        assert!(filter(rules, libc::EPERM, arch).is_ok_and(|p| !p.is_empty()));
    }
}
