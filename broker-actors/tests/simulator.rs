//! The deterministic simulator over a bounded number of seeds (`HELIUM_SIM_SEEDS`, default
//! 1,000: about a minute): every invariant of `helium_broker_actors::sim` holds after every step of every seed,
//! and every job ends once the faults stop. A failure prints the seed and how to replay it.

use helium_broker_actors::sim::{self, Options};

fn seeds() -> u64 {
    std::env::var("HELIUM_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000)
}

#[test]
fn every_invariant_holds_for_every_seed() {
    let options = Options::default();
    let mut failures = Vec::new();
    let mut crashes = 0;
    let mut ended = [0usize; 4];
    for seed in 1..=seeds() {
        match sim::run(seed, &options) {
            Ok(r) => {
                crashes += r.crashes;
                for (slot, n) in ended.iter_mut().zip([r.jobs_completed, r.jobs_failed, r.jobs_cancelled, r.jobs_expired]) {
                    *slot += n;
                }
            }
            Err(f) => failures.push(f.to_string()),
        }
    }
    assert!(failures.is_empty(), "{} seeds failed:\n{}", failures.len(), failures.join("\n"));
    // The faults happened and every way a job can end was reached: the run tested something.
    assert!(crashes > 0, "no broker crash was simulated");
    assert!(ended.iter().all(|&n| n > 0), "completed/failed/cancelled/expired: {ended:?}");
}

#[test]
fn a_seed_replays_exactly() {
    let options = Options::default();
    assert_eq!(sim::run(7, &options), sim::run(7, &options));
}
