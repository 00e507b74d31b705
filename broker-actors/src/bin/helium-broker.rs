//! `helium-broker`: parse flags, start the broker, print `ready`, run until Ctrl-C/SIGTERM.

use clap::Parser;
use helium_broker_actors::{Broker, BrokerConfig};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(name = "helium-broker", version, about = "Helium broker: auctions, ledger, jobs, artifacts")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Option<BrokerConfig>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Print the subject templates as JSON (the Python client's copy is checked against it).
    PrintSubjects,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,async_nats=warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if let Some(Command::PrintSubjects) = cli.command {
        println!("{}", helium_broker_actors::gateway::subject_templates());
        return Ok(());
    }
    let config = cli.config.ok_or_else(|| anyhow::anyhow!("--store is required"))?;
    let broker = Broker::start(&config).await?;
    tracing::info!(nats = %config.nats_url, store = %config.store, "helium-broker serving");
    println!("ready");
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    broker.stop().await;
    Ok(())
}
