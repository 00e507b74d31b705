//! Runs the deterministic simulator (`helium_broker_actors::sim`) over many seeds, or replays
//! one: `cargo run --release -p helium-broker-actors --example simulate -- --seeds 1000`, or
//! `… -- --seed 42` to replay a failing seed exactly. Prints steps per second.

use std::time::Instant;

use clap::Parser;
use helium_broker_actors::sim::{self, Options};

#[derive(Parser)]
struct Args {
    /// Replay this one seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Run seeds `first .. first + seeds`.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Steps of each seed's faulty phase.
    #[arg(long, default_value_t = Options::default().steps)]
    steps: u64,
    #[arg(long, default_value_t = Options::default().jobs)]
    jobs: usize,
    #[arg(long, default_value_t = Options::default().workers)]
    workers: usize,
}

fn main() {
    let args = Args::parse();
    let options = Options {
        steps: args.steps,
        jobs: args.jobs,
        workers: args.workers,
        ..Options::default()
    };
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => (args.first..args.first + args.seeds).collect(),
    };
    let start = Instant::now();
    let (mut steps, mut failed) = (0u64, 0u64);
    for seed in seeds.iter().copied() {
        match sim::run(seed, &options) {
            Ok(report) => {
                steps += report.steps;
                if args.seed.is_some() {
                    println!("{report:?}");
                }
            }
            Err(failure) => {
                failed += 1;
                eprintln!("{failure}");
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} seeds, {failed} failed, {steps} steps in {secs:.1} s: {:.0} steps/s",
        seeds.len(),
        steps as f64 / secs.max(1e-9)
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
