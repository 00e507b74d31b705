//! The start-up probe against the real binary: a trainer started as the agent starts one
//! enters its sandbox, and each layer holds when tried.
//!
//! This machine is expected to offer every layer (Linux with Landlock ≥ ABI 6, seccomp, user
//! and network namespaces); set `HELIUM_SANDBOX_OPTIONAL=1` where it does not, and the test
//! then checks only that every missing layer comes with a reason.

use helium_protocol::worker::SandboxLayer;
use helium_worker_actors::{child::ChildSpec, sandbox, trainer::DeviceChoice};

#[tokio::test]
async fn a_probe_trainer_finds_every_layer_in_force() {
    let spec = ChildSpec {
        exe: env!("CARGO_BIN_EXE_helium-worker").into(),
        device: DeviceChoice::Cpu,
        threads: 1,
        memory_bytes: Some(8 << 30),
        sandbox: sandbox::Mode::Enforce,
    };
    let report = sandbox::probe::run(&spec).await.expect("the probe reports");
    for layer in SandboxLayer::ALL {
        let explained = report.missing.iter().any(|m| m.starts_with(layer.name()));
        assert!(
            report.layers.contains(&layer) != explained,
            "{layer:?} is neither in force nor explained: {report:?}"
        );
    }
    if std::env::var("HELIUM_SANDBOX_OPTIONAL").as_deref() != Ok("1") {
        assert!(
            report.complete(),
            "this machine should sandbox fully: {:?}",
            report.missing
        );
    }
}
