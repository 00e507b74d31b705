//! `helium-worker --grid <url> --price <credits/hour>`: join the grid and train for credits.
//! `helium-worker train --job-dir DIR` is the training child the agent starts for each run.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use helium_worker_actors::{
    agent::{AgentArgs, WorkerAgent},
    child::ChildSpec,
    config::{machine_memory_bytes, WorkerConfig},
    measure_ask,
    sandbox::{self, limits::address_space_bytes},
    trainer,
};
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "train") {
        return trainer::cli_main(std::env::args_os());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,async_nats=warn".into()),
        )
        // Clears the owner's status line on a terminal before each log line.
        .with_writer(|| helium_worker_actors::status::LogWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = WorkerConfig::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("helium-worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helium-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: WorkerConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.price.is_finite() && config.price > 0.0,
        "--price must be a positive number of credits per hour"
    );
    let creds = std::fs::read_to_string(&config.creds)
        .with_context(|| format!("read the worker's credential {}", config.creds.display()))?;
    let (worker_id, role, inbox) =
        helium_protocol::auth::identity(&creds).map_err(|e| anyhow::anyhow!("{}: {e}", config.creds.display()))?;
    let helium_protocol::auth::Role::Worker { owner } = role else {
        anyhow::bail!(
            "{} is a {} credential, not a worker's (helium creds issue worker <id> --owner <principal>)",
            config.creds.display(),
            role.name()
        );
    };
    let credential = helium_protocol::auth::creds::jwt(&creds)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.creds.display()))?
        .to_string();
    let mut options = async_nats::ConnectOptions::with_credentials(&creds)
        .with_context(|| format!("read the worker's credential {}", config.creds.display()))?;
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let servers: Vec<async_nats::ServerAddr> = helium_protocol::servers::server_list(&config.grid).context("--grid")?;
    // Reconnects are unlimited (async-nats' default), to any server of the list or that the
    // cluster announced: a lost node is ridden out, not fatal.
    let nats = options
        .custom_inbox_prefix(inbox)
        .name(format!("helium-worker {worker_id}"))
        .connect(servers)
        .await
        .with_context(|| format!("connect to the grid at {}", config.grid))?;
    let mut ask = tokio::task::spawn_blocking({
        let config = config.clone();
        move || measure_ask(&config)
    })
    .await?;
    tracing::info!(worker = %worker_id, device = ?ask.device, param_samples_per_sec = ask.throughput, "start-up benchmark done");
    let (work_dir, _tmp) = match &config.work_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let tmp = tempfile::tempdir()?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    std::fs::create_dir_all(&work_dir).with_context(|| format!("create {}", work_dir.display()))?;
    let threads = config.training_threads();
    // An address-space limit breaks CUDA's virtual reservations, so it binds CPU workers only.
    let memory_bytes = (ask.device == helium_protocol::job::DeviceKind::Cpu).then(|| {
        config.child_memory_gb.map_or_else(
            || address_space_bytes(ask.memory_bytes, threads, machine_memory_bytes()),
            |g| (g * (1u64 << 30) as f64) as u64,
        )
    });
    let mut child = ChildSpec {
        exe: std::env::current_exe().context("locate the helium-worker binary")?,
        device: config.device,
        threads,
        memory_bytes,
        sandbox: sandbox::Mode::Enforce,
    };
    let report = sandbox::probe::run(&child)
        .await
        .unwrap_or_else(|e| sandbox::probe::ProbeReport {
            layers: Vec::new(),
            missing: vec![e],
            exposed: Vec::new(),
        });
    let layers: Vec<&str> = report.layers.iter().map(|l| l.name()).collect();
    if report.complete() {
        tracing::info!(worker = %worker_id, ?layers, child_memory_bytes = memory_bytes, "the trainer is sandboxed");
    } else if config.allow_unsandboxed {
        tracing::warn!(worker = %worker_id, ?layers, missing = ?report.shortfalls(), "the trainer is NOT fully sandboxed; taking jobs anyway (--allow-unsandboxed)");
        child.sandbox = sandbox::Mode::BestEffort;
    } else {
        anyhow::bail!(
            "this machine cannot sandbox the trainer ({}); a job's TorchScript could then read and write \
             this user's files. Pass --allow-unsandboxed (HELIUM_ALLOW_UNSANDBOXED=1) to take jobs anyway",
            report.shortfalls().join("; ")
        );
    }
    ask.sandbox = report.layers;
    let args = AgentArgs {
        nats: nats.clone(),
        worker_id: worker_id.clone(),
        owner,
        credential,
        ask,
        incarnation: uuid::Uuid::now_v7().simple().to_string(),
        work_dir,
        child,
        policy: config.owner_policy(),
    };
    let (agent, handle) = ractor::Actor::spawn(Some(format!("agent-{worker_id}")), WorkerAgent, args).await?;
    println!("ready");
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = handle => anyhow::bail!("worker agent stopped"),
    }
    tracing::info!(worker = %worker_id, "shutting down");
    agent.stop(None);
    let _ = nats.flush().await;
    Ok(())
}
