//! Hostile native code against the real spawn path: a probe trainer started exactly as the
//! agent starts one (`ChildSpec`, `sandbox::spawn`, the keeper's fork) from a worker whose
//! environment holds an owner's secret and whose stderr is its owner's terminal, tries what
//! code that escaped libtorch would try first:
//! - see or address the agent: it must be pid 1 of its own pid namespace, `kill(agent, 0)`
//!   must find nothing (ESRCH) before seccomp, and `prlimit64`/`getpriority`/`kill` on the
//!   agent's pid must meet the filter's EPERM after it (while its own limits and signals work);
//! - SysV IPC: its IPC namespace must not be the agent's, and `shmget` must meet EPERM;
//! - the owner's environment: no variable outside the allowlist (`HELIUM_TEST_SECRET`);
//! - the owner's terminal: none of its descriptors a terminal, no controlling terminal, and
//!   `TIOCSTI` refused by the filter.
//!
//! Each of these is reported by the probe ([`sandbox::probe::ProbeReport`]) and asserted here
//! one by one, so a regression names what got through.

use std::ffi::CStr;

use helium_worker_actors::{child::ChildSpec, sandbox, trainer::DeviceChoice};

const SECRET: &str = "HELIUM_TEST_SECRET";

/// Makes a new pseudo-terminal this process's controlling terminal and its stderr, as a
/// worker started from its owner's shell has. Returns the master (kept open, drained), the
/// test's own stderr (to put back for its messages), and whether the terminal became the
/// controlling one (not if this process leads a group).
fn stderr_on_a_terminal() -> (std::fs::File, libc::c_int, bool) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain calls on descriptors this test owns; ptsname's buffer is read at once.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let name = CStr::from_ptr(libc::ptsname(master)).to_owned();
        let session = libc::setsid() >= 0;
        let slave = libc::open(name.as_ptr(), libc::O_RDWR);
        assert!(slave >= 0, "open the pty");
        if session {
            libc::ioctl(slave, libc::TIOCSCTTY, 0);
        }
        let own = libc::dup(2);
        assert!(libc::dup2(slave, 2) == 2);
        libc::close(slave);
        (std::fs::File::from_raw_fd(master), own, session)
    }
}

#[test]
fn hostile_native_code_in_the_trainer_reaches_nothing_of_the_worker() {
    // Before any thread: the owner's secret in the worker's environment.
    std::env::set_var(SECRET, "owner-cloud-key");
    // The terminal hangs up once its last reader is gone; this test is its controlling
    // process and must not die of that.
    // SAFETY: sets a signal's disposition.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    let (master, own_stderr, controlling) = stderr_on_a_terminal();
    // Nobody reads the terminal: drain it so a write to stderr never blocks.
    let drain = master.try_clone().expect("a second handle on the terminal");
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut &drain, &mut std::io::sink());
    });
    // SAFETY: isatty on fd 2.
    assert_eq!(unsafe { libc::isatty(2) }, 1, "the test's stderr is a terminal");

    let spec = ChildSpec {
        exe: env!("CARGO_BIN_EXE_helium-worker").into(),
        device: DeviceChoice::Cpu,
        threads: 1,
        memory_bytes: Some(8 << 30),
        sandbox: sandbox::Mode::Enforce,
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let report = runtime
        .block_on(sandbox::probe::run(&spec))
        .expect("the probe reports");
    // SAFETY: puts the test's own stderr back, for its messages.
    unsafe { libc::dup2(own_stderr, 2) };
    eprintln!("controlling terminal: {controlling}; probe report: {report:?}");

    let exposed = report.exposed.join("; ");
    assert!(!exposed.contains(SECRET), "the owner's secret reached the trainer: {exposed}");
    assert!(!exposed.contains("is a terminal"), "{exposed}");
    if controlling {
        assert!(!exposed.contains("controlling terminal"), "{exposed}");
    }
    assert!(report.exposed.is_empty(), "{exposed}");
    for layer in [
        helium_protocol::worker::SandboxLayer::PidNamespace,
        helium_protocol::worker::SandboxLayer::IpcNamespace,
        helium_protocol::worker::SandboxLayer::Seccomp,
    ] {
        assert!(
            report.layers.contains(&layer),
            "{} does not hold: {:?}",
            layer.name(),
            report.missing
        );
    }
    assert!(report.complete(), "{:?}", report.shortfalls());
    drop(master);
}
