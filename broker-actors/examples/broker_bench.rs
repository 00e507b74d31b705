//! Broker benchmarks (issue 9) against a real nats-server, in one process.
//!
//! ```text
//! cargo run --release -p helium-broker-actors --example broker_bench -- auctions
//! cargo run --release -p helium-broker-actors --example broker_bench -- ledger
//! ```
//!
//! `auctions`: the real WorkerRegistry and Auctioneer over a real nats-server; N simulated
//! workers (100, 1,000, 10,000 by default) are registered through the registry's `Register`
//! message and answer invitations from one wildcard subscription on
//! `helium.v1.dispatch.*.auction.invite` (one connection standing for all the workers), each
//! bidding its ask. `--concurrency` tasks run auctions back to back (many queued jobs); a won
//! auction reserves its winner and then releases it, as award and settlement do. Prints awarded
//! auctions per second, wall µs per auction (1 / throughput) and CPU µs per auction (this
//! process plus nats-server).
//!
//! `ledger`: the real Ledger actor on `HELIUM_LEDGER` with `sync_interval: always` (fsync before
//! every ack, as `deploy/grid.sh` runs it); `--callers` tasks each do sequential transfers.
//! Prints transfers per second, journal messages per second (fsyncs), and CPU per transfer.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use helium_broker_actors::{
    auction::{Auctioneer, AuctioneerArgs, AuctioneerMsg, Outcome},
    ledger::{Ledger, LedgerMsg},
    registry::{RegistryArgs, RegistryEvent, RegistryMsg, WorkerRegistry},
    streams,
};
use helium_protocol::{
    decode, encode,
    job::{DeclaredWork, DeviceKind, Requirements},
    ledger::{user, Transfer, MINT},
    subjects::{self, dispatch},
    worker::{Ask, Bid, BidReply, Invite, Register},
    Reply, PROTOCOL_VERSION,
};
use helium_test_support::NatsServer;
use ractor::{Actor, ActorRef, OutputPort};

const CREDIT: u64 = 1_000_000;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Awarded auctions per second for each grid size.
    Auctions {
        /// Grid sizes (simulated workers).
        #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
        workers: Vec<usize>,
        /// Auctions in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Workers invited per auction (the broker's --invite-k default).
        #[arg(long, default_value_t = 8)]
        invite_k: usize,
        /// Measured seconds per grid size (after one second of warm-up).
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Ledger transfers per second with fsync before ack.
    Ledger {
        /// Concurrent callers, each doing sequential transfers.
        #[arg(long, value_delimiter = ',', default_value = "1,64")]
        callers: Vec<usize>,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Run nats-server without `sync_interval: always` (for comparison).
        #[arg(long)]
        no_fsync: bool,
    },
    /// The alternative to one message per group: one transfer per JetStream message, published
    /// back to back (`--in-flight` at a time, each expecting the previous one's sequence), to
    /// see what fsync before ack allows per message.
    Pipelined {
        #[arg(long, value_delimiter = ',', default_value = "1,64")]
        in_flight: Vec<usize>,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    // `RUST_LOG=helium_broker_actors::registry=trace` shows how many index entries each
    // auction read; nothing is logged otherwise.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    match Args::parse().bench {
        Bench::Auctions {
            workers,
            concurrency,
            invite_k,
            secs,
        } => {
            println!("awarded auctions, {concurrency} in flight, K = {invite_k}, {secs} s per size");
            println!(
                "{:>8} {:>12} {:>14} {:>14} {:>10}",
                "workers", "auctions/s", "wall µs/auct", "cpu µs/auct", "won %"
            );
            for n in workers {
                let r = auctions(n, concurrency, invite_k, Duration::from_secs_f64(secs)).await?;
                println!(
                    "{:>8} {:>12.0} {:>14.1} {:>14.1} {:>10.1}",
                    n,
                    r.won as f64 / r.secs,
                    r.secs * 1e6 / r.won as f64,
                    r.cpu_secs * 1e6 / r.won as f64,
                    100.0 * r.won as f64 / r.total as f64
                );
            }
        }
        Bench::Ledger {
            callers,
            secs,
            no_fsync,
        } => {
            println!(
                "ledger transfers, fsync before ack: {}, {secs} s per run",
                if no_fsync { "no" } else { "yes" }
            );
            println!(
                "{:>8} {:>12} {:>14} {:>16} {:>14}",
                "callers", "transfers/s", "journal msg/s", "cpu µs/transfer", "nats cpu %"
            );
            for c in callers {
                let r = ledger(c, Duration::from_secs_f64(secs), !no_fsync).await?;
                println!(
                    "{:>8} {:>12.0} {:>14.0} {:>16.1} {:>14.0}",
                    c,
                    r.transfers as f64 / r.secs,
                    r.messages as f64 / r.secs,
                    r.cpu_secs * 1e6 / r.transfers as f64,
                    100.0 * r.nats_cpu_secs / r.secs
                );
            }
        }
        Bench::Pipelined { in_flight, secs } => {
            println!("one transfer per journal message, pipelined, fsync before ack, {secs} s per run");
            println!("{:>10} {:>12}", "in flight", "messages/s");
            for n in in_flight {
                let rate = pipelined(n, Duration::from_secs_f64(secs)).await?;
                println!("{n:>10} {rate:>12.0}");
            }
        }
    }
    Ok(())
}

async fn pipelined(in_flight: usize, window: Duration) -> Result<f64> {
    let server = NatsServer::start_synced()?;
    let js = async_nats::jetstream::new(server.connect().await?);
    streams::ensure(&js, 1, &Default::default()).await.map_err(|e| anyhow!("streams: {e}"))?;
    let (mut last, mut sent) = (0u64, 0u64);
    let t0 = Instant::now();
    while t0.elapsed() < window {
        let mut acks = Vec::with_capacity(in_flight);
        for i in 0..in_flight as u64 {
            let t = transfer(format!("p.{}", last + i), MINT.into(), user("a"), 1);
            let publish = async_nats::jetstream::message::PublishMessage::build()
                .payload(encode(&t).into())
                .message_id(t.id.clone())
                .expected_last_sequence(last + i);
            acks.push(
                js.send_publish(helium_protocol::subjects::streams::LEDGER_SUBJECT, publish)
                    .await?,
            );
        }
        for ack in acks {
            last = ack.await?.sequence;
            sent += 1;
        }
    }
    Ok(sent as f64 / t0.elapsed().as_secs_f64())
}

/// CPU seconds (user + system) of a process, from /proc (clock ticks of 10 ms).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

struct AuctionRun {
    won: u64,
    total: u64,
    secs: f64,
    cpu_secs: f64,
}

/// A deterministic spread of asks: a fifth CPU workers (cheap, slow), the rest GPUs of four
/// sizes (dearer, faster), prices and throughputs varying within each kind.
fn ask(i: usize) -> Ask {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = move || {
        x ^= x >> 33;
        x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        x ^= x >> 33;
        (x % 1_000_000) as f64 / 1_000_000.0
    };
    if i.is_multiple_of(5) {
        Ask {
            price_per_hour: ((0.1 + 0.4 * next()) * CREDIT as f64) as u64,
            device: DeviceKind::Cpu,
            device_name: "cpu".into(),
            memory_bytes: 16 << 30,
            throughput: 1e8 * (1.0 + 9.0 * next()),
            sandbox: Vec::new(),
        }
    } else {
        let size = [8u64, 16, 24, 80][i % 4];
        Ask {
            price_per_hour: ((0.5 + size as f64 / 16.0) * (0.7 + 0.6 * next()) * CREDIT as f64) as u64,
            device: DeviceKind::Cuda,
            device_name: format!("gpu-{size}g"),
            memory_bytes: size << 30,
            throughput: 1e10 * (size as f64 / 8.0) * (0.5 + next()),
            sandbox: Vec::new(),
        }
    }
}

fn worker_id(i: usize) -> String {
    format!("w{i:06}")
}

async fn auctions(n: usize, concurrency: usize, invite_k: usize, window: Duration) -> Result<AuctionRun> {
    let server = NatsServer::start()?;
    let broker_nats = server.connect().await?;
    let workers_nats = server.connect().await?;

    let (registry, _) = Actor::spawn(
        None,
        WorkerRegistry,
        RegistryArgs {
            // No sweeps during the run: the simulated workers do not heartbeat.
            heartbeat: Duration::from_secs(3600),
            events: Arc::new(OutputPort::<RegistryEvent>::default()),
        },
    )
    .await?;
    let (auctioneer, _) = Actor::spawn(
        None,
        Auctioneer,
        AuctioneerArgs {
            nats: broker_nats.clone(),
            registry: registry.clone(),
            invite_k,
            bid_window: Duration::from_secs(1),
        },
    )
    .await?;

    // The bidders: one subscription answering for every simulated worker with its ask.
    let asks: Arc<Vec<Ask>> = Arc::new((0..n).map(ask).collect());
    let mut invites = workers_nats
        .subscribe(subjects::dispatch("*", dispatch::INVITE))
        .await?;
    let bidder = {
        let (nats, asks) = (workers_nats.clone(), asks.clone());
        tokio::spawn(async move {
            while let Some(message) = invites.next().await {
                let Some(reply) = message.reply else { continue };
                let index = subjects::identity_of(&message.subject)
                    .and_then(|id| id.strip_prefix('w'))
                    .and_then(|i| i.parse::<usize>().ok());
                let (Some(ask), Ok(invite)) = (index.and_then(|i| asks.get(i)), decode::<Invite>(&message.payload))
                else {
                    continue;
                };
                let bid = BidReply {
                    bid: Some(Bid {
                        price_per_hour: ask.price_per_hour,
                        eta_secs: invite.work.eta_secs(ask.throughput),
                    }),
                    decline: None,
                };
                let _ = nats.publish(reply, encode(&Reply::ok(bid)).into()).await;
            }
        })
    };
    workers_nats.flush().await?;

    for (i, ask) in asks.iter().enumerate() {
        let register = Register {
            v: PROTOCOL_VERSION,
            owner: format!("owner-{}", i % 1000),
            credential: String::new(),
            ask: ask.clone(),
            incarnation: String::new(),
        };
        ractor::call_t!(
            registry,
            |reply| RegistryMsg::Register {
                worker_id: worker_id(i),
                register,
                reply,
            },
            5_000
        )
        .map_err(|e| anyhow!("register: {e}"))??;
    }

    let won = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let (auctioneer, registry) = (auctioneer.clone(), registry.clone());
        let (won, total, counting, stop) = (won.clone(), total.clone(), counting.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let job_id = format!("job-{task}-{round}");
                let outcome = run_one(&auctioneer, &job_id, round).await;
                let counted = counting.load(Ordering::Relaxed);
                if counted {
                    total.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(Outcome::Won { winner, .. }) = outcome {
                    if counted {
                        won.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = registry.cast(RegistryMsg::Reserve {
                        worker_id: winner.worker_id.clone(),
                        job: job_id.clone(),
                    });
                    let _ = registry.cast(RegistryMsg::Release {
                        worker_id: winner.worker_id,
                        job: job_id,
                        track: helium_broker_actors::registry::record::Track::Neutral,
                    });
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let me = std::process::id().to_string();
    let nats_pid = server.pid().to_string();
    let cpu0 = cpu_secs(&me) + cpu_secs(&nats_pid);
    let t0 = Instant::now();
    counting.store(true, Ordering::Relaxed);
    tokio::time::sleep(window).await;
    counting.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(&me) + cpu_secs(&nats_pid) - cpu0;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    bidder.abort();
    auctioneer.stop(None);
    registry.stop(None);
    Ok(AuctionRun {
        won: won.load(Ordering::Relaxed),
        total: total.load(Ordering::Relaxed),
        secs,
        cpu_secs: cpu,
    })
}

/// One auction for a job shaped like a queued job: a mix of CPU-or-GPU and GPU-only jobs of a
/// few sizes.
async fn run_one(auctioneer: &ActorRef<AuctioneerMsg>, job_id: &str, round: u64) -> Option<Outcome> {
    let (device, min_memory_bytes) = match round % 4 {
        0 => (DeviceKind::Cuda, 16 << 30),
        1 => (DeviceKind::Cuda, 0),
        _ => (DeviceKind::Any, 0),
    };
    let requirements = Requirements {
        device,
        min_memory_bytes,
        max_price_per_hour: 4 * CREDIT,
        budget: 1_000 * CREDIT,
        deadline_ms: 0,
    };
    let work = DeclaredWork {
        parameters: 100_000 * (1 + round % 10),
        samples: 60_000,
        epochs: 10,
    };
    ractor::call_t!(
        auctioneer,
        |reply| AuctioneerMsg::Run {
            job_id: job_id.to_string(),
            requirements,
            work,
            exclude: Vec::new(),
            reply,
        },
        10_000
    )
    .ok()
}

struct LedgerRun {
    transfers: u64,
    messages: u64,
    secs: f64,
    cpu_secs: f64,
    nats_cpu_secs: f64,
}

fn transfer(id: String, debit: String, credit: String, amount: u64) -> Transfer {
    Transfer {
        v: PROTOCOL_VERSION,
        id,
        debit,
        credit,
        amount,
        memo: String::new(),
    }
}

async fn ledger(callers: usize, window: Duration, fsync: bool) -> Result<LedgerRun> {
    let server = if fsync {
        NatsServer::start_synced()
    } else {
        NatsServer::start()
    }?;
    let js = async_nats::jetstream::new(server.connect().await?);
    streams::ensure(&js, 1, &Default::default()).await.map_err(|e| anyhow!("streams: {e}"))?;
    let (ledger, _) = Actor::spawn(None, Ledger, js.clone()).await?;
    for c in 0..callers {
        let grant = transfer(
            format!("grant.{c}"),
            MINT.into(),
            user(&format!("src-{c}")),
            u64::MAX / 4,
        );
        ractor::call_t!(ledger, LedgerMsg::Transfer, 10_000, grant)
            .map_err(|e| anyhow!("{e}"))?
            .map_err(|e| anyhow!("{e}"))?;
    }
    let done = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..callers {
        let ledger: ActorRef<LedgerMsg> = ledger.clone();
        let (done, counting, stop) = (done.clone(), counting.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (src, dst) = (user(&format!("src-{c}")), user(&format!("dst-{c}")));
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let t = transfer(format!("t.{c}.{i}"), src.clone(), dst.clone(), 1);
                match ractor::call_t!(ledger, LedgerMsg::Transfer, 30_000, t) {
                    Ok(Ok(_)) => {
                        if counting.load(Ordering::Relaxed) {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    other => panic!("transfer failed: {other:?}"),
                }
            }
        }));
    }
    let journal_last = |js: async_nats::jetstream::Context| async move {
        let mut stream = js.get_stream(helium_protocol::subjects::streams::LEDGER).await?;
        Ok::<u64, anyhow::Error>(stream.info().await?.state.last_sequence)
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let me = std::process::id().to_string();
    let nats_pid = server.pid().to_string();
    let (cpu0, nats0) = (cpu_secs(&me), cpu_secs(&nats_pid));
    let seq0 = journal_last(js.clone()).await?;
    let t0 = Instant::now();
    counting.store(true, Ordering::Relaxed);
    tokio::time::sleep(window).await;
    counting.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let seq1 = journal_last(js.clone()).await?;
    let (cpu, nats_cpu) = (cpu_secs(&me) - cpu0, cpu_secs(&nats_pid) - nats0);
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    let balances = ractor::call_t!(ledger, LedgerMsg::Balances, 10_000).map_err(|e| anyhow!("{e}"))?;
    if balances.values().sum::<i128>() != 0 {
        return Err(anyhow!("books do not balance: {balances:?}"));
    }
    ledger.stop(None);
    Ok(LedgerRun {
        transfers: done.load(Ordering::Relaxed),
        messages: seq1 - seq0,
        secs,
        cpu_secs: cpu + nats_cpu,
        nats_cpu_secs: nats_cpu,
    })
}
