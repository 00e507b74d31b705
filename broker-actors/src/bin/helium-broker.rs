//! `helium-broker`: parse flags, start the broker, print `ready`, run until Ctrl-C/SIGTERM.
//! `helium-broker print-subjects` prints the subject templates as JSON (the Python client's
//! copy is checked against it).

use clap::Parser;
use helium_broker_actors::{Broker, BrokerConfig};
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("print-subjects") {
        println!("{}", helium_broker_actors::gateway::subject_templates());
        return Ok(());
    }
    let config = BrokerConfig::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,async_nats=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
