//! A deterministic simulator of the grid's money and job logic, after TigerBeetle's VOPR: one
//! seed drives the pure job core (`jobs::core`), the ledger's book (`ledger::book`) and the
//! auction's rule (`auction::decide`) through random inputs and faults — messages lost,
//! duplicated, delayed and reordered; the broker crashing between any two effects of a step and
//! restarting from what it persisted; workers that vanish, come back late, or lie; clocks that
//! jump — and checks the invariants ([`check`]) after every step. Same seed, same run, so a
//! failing seed replays exactly: `cargo run --release -p helium-broker-actors --example
//! simulate -- --seed <n>`.

mod check;
mod effects;
pub mod fixture;
mod rng;
mod workers;
mod world;

pub use rng::Rng;
pub use world::{Faults, Options, World};

/// What a run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub seed: u64,
    pub steps: u64,
    pub jobs_completed: usize,
    pub jobs_failed: usize,
    pub jobs_cancelled: usize,
    pub jobs_expired: usize,
    pub crashes: u64,
    pub transfers: usize,
}

/// An invariant that did not hold, with the seed and step that break it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub seed: u64,
    pub step: u64,
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} failed at step {}: {}\nreplay: cargo run --release -p helium-broker-actors --example simulate -- --seed {}",
            self.seed, self.step, self.what, self.seed
        )
    }
}

/// Runs one seed to its end: the faulty phase, then a calm phase in which every job must end.
pub fn run(seed: u64, options: &Options) -> Result<Report, Failure> {
    World::new(seed, options.clone()).run()
}
