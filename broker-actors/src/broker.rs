//! Wires the broker: connects to NATS, makes sure streams exist, spawns the actors in
//! dependency order, then opens the NATS ingress. [`Broker::stop`] takes it all down.

use std::sync::Arc;

use async_nats::service::Service;
use ractor::{Actor, ActorRef, OutputPort};
use tokio::task::JoinHandle;

use crate::{
    artifacts::{Artifacts, ArtifactsArgs, Store},
    auction::{Auctioneer, AuctioneerArgs},
    config::BrokerConfig,
    gateway,
    jobs::{JobManager, ManagerMsg},
    ledger::Ledger,
    registry::{RegistryArgs, RegistryEvent, WorkerRegistry},
    streams, Ctx, Deps,
};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to NATS at {0}: {1}")]
    Connect(String, String),
    #[error("cannot read the broker's credential {0}")]
    Creds(String),
    #[error("JetStream setup failed: {0}")]
    Streams(String),
    #[error("object store: {0}")]
    Store(#[from] crate::artifacts::StoreError),
    #[error("actor failed to start: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    #[error("NATS service setup failed: {0}")]
    Service(String),
}

pub struct Broker {
    pub ctx: Ctx,
    services: Vec<Service>,
    tasks: Vec<JoinHandle<()>>,
}

impl Broker {
    pub async fn start(config: &BrokerConfig) -> Result<Broker, BrokerError> {
        let creds = std::fs::read_to_string(&config.creds)
            .map_err(|e| BrokerError::Creds(format!("{}: {e}", config.creds.display())))?;
        let account = helium_protocol::auth::creds::jwt(&creds)
            .map_err(|e| e.to_string())
            .and_then(|token| helium_protocol::auth::jwt::issuer(token).map_err(|e| e.to_string()))
            .map_err(|e| BrokerError::Creds(format!("{}: {e}", config.creds.display())))?;
        let mut options = async_nats::ConnectOptions::with_credentials(&creds)
            .map_err(|e| BrokerError::Creds(format!("{}: {e}", config.creds.display())))?;
        if let Some(ca) = &config.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        let servers: Vec<async_nats::ServerAddr> = helium_protocol::servers::server_list(&config.nats_url)
            .map_err(|e| BrokerError::Connect(config.nats_url.clone(), e.to_string()))?;
        // Reconnects are unlimited (async-nats' default), to any server of the list or that the
        // cluster announced: a lost node is ridden out, not fatal.
        let nats = options
            .name("helium-broker")
            .connect(servers)
            .await
            .map_err(|e| BrokerError::Connect(config.nats_url.clone(), e.to_string()))?;
        let js = async_nats::jetstream::new(nats.clone());
        let streams = streams::ensure(&js, config.replicas, &config.streams)
            .await
            .map_err(|e| BrokerError::Streams(e.to_string()))?;
        let store = Store::open(&config.store)?;

        let (ledger, _) = Actor::spawn(None, Ledger, js.clone()).await?;
        let (artifacts, _) = Actor::spawn(
            None,
            Artifacts,
            ArtifactsArgs {
                store: store.clone(),
                max_artifact_bytes: config.max_artifact_bytes,
                max_staged_bytes: config.quotas.max_staged_bytes,
                max_chunk: helium_protocol::limits::chunk_for_payload(nats.max_payload() as u64),
            },
        )
        .await?;
        let registry_events = Arc::new(OutputPort::<RegistryEvent>::default());
        let (registry, _) = Actor::spawn(
            None,
            WorkerRegistry,
            RegistryArgs {
                heartbeat: config.heartbeat(),
                events: registry_events.clone(),
            },
        )
        .await?;
        let (auctioneer, _) = Actor::spawn(
            None,
            Auctioneer,
            AuctioneerArgs {
                nats: nats.clone(),
                registry: registry.clone(),
                invite_k: config.invite_k,
                bid_window: config.bid_window(),
            },
        )
        .await?;
        let deps = Deps {
            nats,
            js,
            jobs: streams.jobs,
            store,
            ledger,
            artifacts,
            auctioneer,
            registry,
            bid_window: config.bid_window(),
            quotas: config.quotas,
        };
        let (manager, _): (ActorRef<ManagerMsg>, _) = Actor::spawn(None, JobManager, deps.clone()).await?;
        registry_events.subscribe(manager.clone(), |event| Some(ManagerMsg::Registry(event)));

        let ctx = Ctx {
            deps,
            manager,
            account: account.into(),
        };
        let service_err = |e: async_nats::Error| BrokerError::Service(e.to_string());
        let (api, mut tasks) = gateway::api::start(ctx.clone()).await.map_err(service_err)?;
        let (workers, worker_tasks) = gateway::worker::start(ctx.clone()).await.map_err(service_err)?;
        tasks.extend(worker_tasks);
        ctx.deps
            .nats
            .flush()
            .await
            .map_err(|e| BrokerError::Service(e.to_string()))?;
        Ok(Broker {
            ctx,
            services: vec![api, workers],
            tasks,
        })
    }

    /// Stops serving and stops every actor.
    pub async fn stop(self) {
        for service in self.services {
            let _ = service.stop().await;
        }
        for task in self.tasks {
            task.abort();
        }
        let d = &self.ctx.deps;
        self.ctx.manager.stop(None);
        d.auctioneer.stop(None);
        d.registry.stop(None);
        d.artifacts.stop(None);
        d.ledger.stop(None);
        let _ = d.nats.flush().await;
    }
}
