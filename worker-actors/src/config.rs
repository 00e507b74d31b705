//! The worker's one configuration struct: every flag has an environment variable.

use std::{path::PathBuf, time::Duration};

use clap::Parser;

use crate::{
    owner::{hours::Hours, price::PricePolicy, OwnerPolicy, WhenIdle},
    trainer::DeviceChoice,
};

pub const DEFAULT_GRID: &str = "nats://127.0.0.1:4222";
/// Seconds the start-up benchmark trains for.
pub const BENCHMARK_SECS: f64 = 1.0;
/// `--busy-above`: others may use half the machine before `--when-idle` pauses it.
pub const DEFAULT_BUSY_ABOVE: f64 = 0.5;
/// `--idle-after`.
pub const DEFAULT_IDLE_AFTER: &str = "60s";
/// `--market-fraction`.
pub const DEFAULT_MARKET_FRACTION: f64 = 0.9;

/// `helium-worker --grid <url> --price <credits/hour>`: rent this machine's GPU (or CPU) out.
#[derive(Debug, Clone, Parser)]
#[command(name = "helium-worker", version)]
pub struct WorkerConfig {
    /// NATS URL of the grid; for a cluster, several URLs separated by commas.
    #[arg(long, env = "HELIUM_GRID", default_value = DEFAULT_GRID)]
    pub grid: String,
    /// Asking price in credits per device-hour: the floor, your true cost. The auction pays
    /// the winner the next-lowest bid's cost, so asking your cost is the best strategy.
    #[arg(long, env = "HELIUM_PRICE")]
    pub price: f64,
    /// `floor` asks --price; `market` asks --market-fraction of the recent winning prices
    /// this worker saw in auctions it lost, never below --price (fewer, dearer wins: under the
    /// second price it earns more only where it bids alone).
    #[arg(long, env = "HELIUM_PRICE_POLICY", value_enum, default_value_t = PricePolicy::Floor)]
    pub price_policy: PricePolicy,
    /// With --price-policy market: the fraction of the recent median winning price to ask.
    #[arg(long, env = "HELIUM_MARKET_FRACTION", default_value_t = DEFAULT_MARKET_FRACTION, value_parser = positive)]
    pub market_fraction: f64,
    /// Rent this machine out only while its owner leaves it idle: others' use of the GPU
    /// (through NVML, where present) or of the CPU (from /proc, less this worker's own) above
    /// --busy-above pauses it, stopping a run in progress (the grid pays its verified
    /// checkpoints and resumes the job elsewhere).
    #[arg(long, env = "HELIUM_WHEN_IDLE")]
    pub when_idle: bool,
    /// With --when-idle: the share of the machine (0 to 1, of all cores or of the GPU) others
    /// may use before it counts as the owner's.
    #[arg(long, env = "HELIUM_BUSY_ABOVE", default_value_t = DEFAULT_BUSY_ABOVE, value_parser = fraction)]
    pub busy_above: f64,
    /// With --when-idle: how long others' use must stay at or below --busy-above before jobs
    /// are taken again (e.g. 60s, 5m).
    #[arg(long, env = "HELIUM_IDLE_AFTER", default_value = DEFAULT_IDLE_AFTER, value_parser = parse_span)]
    pub idle_after: Duration,
    /// Take jobs only between these local times, e.g. 22:00-07:00 (wraps midnight): outside,
    /// invitations are declined and a run in progress is stopped; inside, a job whose ETA runs
    /// past the end is declined.
    #[arg(long, env = "HELIUM_HOURS")]
    pub hours: Option<Hours>,
    /// The longest job to take, by this worker's ETA for it (e.g. 2h, 45m, 90s).
    #[arg(long, env = "HELIUM_MAX_JOB", value_parser = parse_span)]
    pub max_job: Option<Duration>,
    /// This worker's NATS credential (`helium creds issue worker <id> --owner <principal>`):
    /// it names the worker's id and the owner whose account earns the credits.
    #[arg(long, env = "HELIUM_CREDS")]
    pub creds: PathBuf,
    /// A CA certificate (PEM) to trust for the grid's TLS certificate, and require TLS.
    #[arg(long, env = "HELIUM_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    #[arg(long, env = "HELIUM_DEVICE", value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Device memory to advertise, GiB (default: the machine's RAM for CPU workers).
    #[arg(long, env = "HELIUM_MEMORY_GB")]
    pub memory_gb: Option<f64>,
    /// Parameter-samples/s to advertise instead of running the start-up benchmark.
    #[arg(long, env = "HELIUM_THROUGHPUT")]
    pub throughput: Option<f64>,
    /// Where job directories live (default: a temporary directory).
    #[arg(long, env = "HELIUM_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// CPU threads the trainer uses (default: every core this process may run on).
    #[arg(long, env = "HELIUM_THREADS", value_parser = clap::value_parser!(i32).range(1..=4096))]
    pub threads: Option<i32>,
    /// Memory limit for the training child, GiB (RLIMIT_AS; CPU workers only). Default: the
    /// memory this worker advertises plus what libtorch needs (`sandbox::limits`).
    #[arg(long, env = "HELIUM_CHILD_MEMORY_GB")]
    pub child_memory_gb: Option<f64>,
    /// Take jobs even where this machine cannot sandbox the trainer (no user or network
    /// namespaces, no Landlock, no seccomp): the worker then runs them with the layers it has
    /// and its ask says which. Without it such a worker refuses to start.
    #[arg(long, env = "HELIUM_ALLOW_UNSANDBOXED")]
    pub allow_unsandboxed: bool,
}

impl WorkerConfig {
    /// `--threads`, or every core this process may run on.
    pub fn training_threads(&self) -> i32 {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| i32::try_from(n.get()).unwrap_or(i32::MAX))
        })
    }

    /// The owner's terms for renting this machine out.
    pub fn owner_policy(&self) -> OwnerPolicy {
        OwnerPolicy {
            hours: self.hours,
            max_job_secs: self.max_job.map(|d| d.as_secs_f64()),
            when_idle: self.when_idle.then_some(WhenIdle {
                busy_above: self.busy_above,
                idle_after_secs: self.idle_after.as_secs_f64(),
            }),
            price: self.price_policy,
            market_fraction: self.market_fraction,
        }
    }

    pub fn price_micro(&self) -> u64 {
        (self.price.max(0.0) * helium_protocol::limits::MICRO_PER_CREDIT as f64).round() as u64
    }
}

/// A span of time as an owner writes it: `90`, `90s`, `45m`, `2h`, `1h30m`.
pub fn parse_span(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a span of time like 90s, 45m, 2h or 1h30m");
    let (mut secs, mut digits, mut any) = (0u64, String::new(), false);
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        secs = secs.checked_add(n.checked_mul(unit).ok_or_else(bad)?).ok_or_else(bad)?;
        digits.clear();
        any = true;
    }
    if !digits.is_empty() {
        if any {
            return Err(bad()); // `1h30`: a number without its unit after one with
        }
        secs = digits.parse().map_err(|_| bad())?;
    } else if !any {
        return Err(bad());
    }
    Ok(Duration::from_secs(secs))
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a fraction between 0 and 1")),
    }
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 => Ok(f),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

/// Total RAM from /proc/meminfo, in bytes (0 if unknown).
pub fn machine_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_of_time() {
        for (text, secs) in [
            ("90", 90),
            ("90s", 90),
            ("45m", 2700),
            ("2h", 7200),
            ("1h30m", 5400),
            (" 2h ", 7200),
        ] {
            assert_eq!(parse_span(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        for bad in ["", "h", "2d", "1h30", "-5m", "1.5h", "99999999999999999999h"] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_owners_flags_make_the_policy() {
        let config = WorkerConfig::try_parse_from([
            "helium-worker",
            "--price",
            "1.5",
            "--creds",
            "w.creds",
            "--when-idle",
            "--busy-above",
            "0.3",
            "--hours",
            "22:00-07:00",
            "--max-job",
            "2h",
            "--price-policy",
            "market",
        ])
        .unwrap();
        let policy = config.owner_policy();
        assert_eq!(
            policy.when_idle,
            Some(WhenIdle {
                busy_above: 0.3,
                idle_after_secs: 60.0
            })
        );
        assert_eq!(policy.hours.map(|h| h.to_string()).as_deref(), Some("22:00–07:00"));
        assert_eq!(policy.max_job_secs, Some(7200.0));
        assert_eq!(policy.price, PricePolicy::Market);
        assert_eq!(policy.market_fraction, DEFAULT_MARKET_FRACTION);
        let bare = WorkerConfig::try_parse_from(["helium-worker", "--price", "1", "--creds", "w"]).unwrap();
        assert_eq!(bare.owner_policy().when_idle, None);
        for bad in [
            ["--busy-above", "1.5"],
            ["--hours", "7-22"],
            ["--max-job", "soon"],
            ["--market-fraction", "0"],
        ] {
            let args = ["helium-worker", "--price", "1", "--creds", "w", bad[0], bad[1]];
            assert!(WorkerConfig::try_parse_from(args).is_err(), "{bad:?}");
        }
    }
}
