//! The GPU owner's terms: when this machine is rented out (`--when-idle`, `--hours`), which
//! jobs it takes (`--max-job`), and at what price (`--price-policy`). Each rule is a pure
//! function here; the agent asks them at every invitation and on its clock, and says every
//! refusal in words, with its numbers ([`Decline`]).
//!
//! - [`hours`]: the daily window of local time.
//! - [`load`]: the owner's share of the CPU from `/proc`, and the idle/busy hysteresis.
//! - [`gpu`]: the owner's share of the GPU through NVML, where there is one.
//! - [`monitor`]: the task that samples both every [`monitor::SAMPLE_EVERY`].
//! - [`price`]: the floor and market price policies.

pub mod gpu;
pub mod hours;
pub mod load;
pub mod monitor;
pub mod price;

use std::fmt;

use helium_protocol::{job::DeviceKind, worker::InviteRequirements};

use hours::Hours;
use load::{Avail, Load};
use price::PricePolicy;

/// `--when-idle`: rent out only while others use at most `busy_above` of the machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WhenIdle {
    /// Fraction (0 to 1) of all cores (or of the GPU) others may use before the machine counts
    /// as the owner's.
    pub busy_above: f64,
    /// Seconds every reading must stay at or below `busy_above` before it is idle again.
    pub idle_after_secs: f64,
}

/// Everything the owner decided about renting this machine out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OwnerPolicy {
    pub hours: Option<Hours>,
    /// The longest job (by this worker's ETA for it) to take, seconds.
    pub max_job_secs: Option<f64>,
    pub when_idle: Option<WhenIdle>,
    pub price: PricePolicy,
    /// `market`'s fraction of the recent winning prices.
    pub market_fraction: f64,
}

/// Why the machine is not for rent right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pause {
    OutsideHours(Hours),
    OwnerBusy(Load),
    /// `--when-idle` has no reading yet (the first comes within two sampling periods).
    Measuring,
}

impl fmt::Display for Pause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pause::OutsideHours(h) => write!(f, "outside the owner's hours {h}"),
            Pause::OwnerBusy(load) => write!(f, "the owner is using this machine ({load})"),
            Pause::Measuring => write!(f, "measuring how busy the owner keeps this machine"),
        }
    }
}

/// Why this worker answers an invitation without a bid.
#[derive(Debug, Clone, PartialEq)]
pub enum Decline {
    Busy {
        job: String,
    },
    Device {
        offers: DeviceKind,
        needs: DeviceKind,
    },
    Memory {
        offers: DeviceKind,
        needs: u64,
        has: u64,
    },
    Paused(Pause),
    TooLong {
        eta_secs: f64,
        max_secs: f64,
    },
    PastHours {
        hours: Hours,
        eta_secs: f64,
        left_secs: u32,
    },
}

impl fmt::Display for Decline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decline::Busy { job } => write!(f, "busy with {job}"),
            Decline::Device { offers, needs } => write!(f, "offers {}, job needs {}", device(*offers), device(*needs)),
            Decline::Memory { offers, needs, has } => {
                let what = if *offers == DeviceKind::Cuda {
                    "this GPU"
                } else {
                    "this machine"
                };
                write!(f, "needs {:.1} GiB, {what} has {:.1}", gib(*needs), gib(*has))
            }
            Decline::Paused(p) => p.fmt(f),
            Decline::TooLong { eta_secs, max_secs } => write!(
                f,
                "its ETA here, {}, is over the owner's largest job, {}",
                span(*eta_secs),
                span(*max_secs)
            ),
            Decline::PastHours {
                hours,
                eta_secs,
                left_secs,
            } => write!(
                f,
                "its ETA here, {}, runs past the end of the owner's hours {hours} ({} left)",
                span(*eta_secs),
                span(f64::from(*left_secs))
            ),
        }
    }
}

fn device(d: DeviceKind) -> &'static str {
    match d {
        DeviceKind::Any => "any device",
        DeviceKind::Cpu => "cpu",
        DeviceKind::Cuda => "cuda",
    }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// `45 s`, `12.5 min`, `3.2 h`.
pub fn span(secs: f64) -> String {
    if !secs.is_finite() {
        "unbounded".into()
    } else if secs < 90.0 {
        format!("{secs:.0} s")
    } else if secs < 90.0 * 60.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

/// What an invitation is screened against: this worker's situation at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Moment<'a> {
    /// The job this worker trains now.
    pub running: Option<&'a str>,
    /// Seconds since local midnight.
    pub local_secs: u32,
    /// The owner's use of the machine (ignored without `--when-idle`).
    pub avail: Avail,
}

impl OwnerPolicy {
    /// Why the machine is not for rent at `now`, if it is not: outside the hours, or (with
    /// `--when-idle`) the owner is using it. A run in progress is preempted for the same reasons.
    pub fn paused(&self, now: &Moment<'_>) -> Option<Pause> {
        if let Some(h) = self.hours.filter(|h| !h.contains(now.local_secs)) {
            return Some(Pause::OutsideHours(h));
        }
        self.when_idle?;
        match now.avail {
            Avail::Idle => None,
            Avail::Busy(load) => Some(Pause::OwnerBusy(load)),
            Avail::Unknown => Some(Pause::Measuring),
        }
    }

    /// Whether this worker bids for a job needing `req`, which it estimates at `eta_secs`, given
    /// it offers `offers` with `memory_bytes`; `Err` is the reason it does not.
    pub fn screen(
        &self,
        offers: DeviceKind,
        memory_bytes: u64,
        req: &InviteRequirements,
        eta_secs: f64,
        now: &Moment<'_>,
    ) -> Result<(), Decline> {
        if let Some(job) = now.running {
            return Err(Decline::Busy { job: job.to_string() });
        }
        if !offers.satisfies(req.device) {
            return Err(Decline::Device {
                offers,
                needs: req.device,
            });
        }
        if memory_bytes < req.min_memory_bytes {
            return Err(Decline::Memory {
                offers,
                needs: req.min_memory_bytes,
                has: memory_bytes,
            });
        }
        if let Some(pause) = self.paused(now) {
            return Err(Decline::Paused(pause));
        }
        if let Some(max_secs) = self.max_job_secs.filter(|max| eta_secs.is_nan() || eta_secs > *max) {
            return Err(Decline::TooLong { eta_secs, max_secs });
        }
        if let Some(hours) = self.hours {
            let left_secs = hours.secs_left(now.local_secs).unwrap_or(0);
            if eta_secs.is_nan() || eta_secs > f64::from(left_secs) {
                return Err(Decline::PastHours {
                    hours,
                    eta_secs,
                    left_secs,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use load::Resource;

    const GIB: u64 = 1 << 30;

    fn req(device: DeviceKind, gib: u64) -> InviteRequirements {
        InviteRequirements {
            device,
            min_memory_bytes: gib * GIB,
        }
    }

    fn moment(local: &str) -> Moment<'static> {
        let (h, m) = local.split_once(':').unwrap();
        Moment {
            running: None,
            local_secs: h.parse::<u32>().unwrap() * 3600 + m.parse::<u32>().unwrap() * 60,
            avail: Avail::Idle,
        }
    }

    fn screened(policy: &OwnerPolicy, eta_secs: f64, now: &Moment<'_>) -> Result<(), String> {
        policy
            .screen(DeviceKind::Cuda, 8 * GIB, &req(DeviceKind::Any, 4), eta_secs, now)
            .map_err(|d| d.to_string())
    }

    #[test]
    fn what_the_machine_cannot_do_is_said_with_numbers() {
        let p = OwnerPolicy::default();
        let now = moment("12:00");
        assert_eq!(
            p.screen(DeviceKind::Cuda, 8 * GIB, &req(DeviceKind::Cuda, 16), 10.0, &now)
                .unwrap_err()
                .to_string(),
            "needs 16.0 GiB, this GPU has 8.0"
        );
        assert_eq!(
            p.screen(DeviceKind::Cpu, 8 * GIB, &req(DeviceKind::Cuda, 1), 10.0, &now)
                .unwrap_err()
                .to_string(),
            "offers cpu, job needs cuda"
        );
        let busy = Moment {
            running: Some("0192ab"),
            ..now
        };
        assert_eq!(screened(&p, 10.0, &busy).unwrap_err(), "busy with 0192ab");
        assert_eq!(screened(&p, 1e9, &now), Ok(()), "no owner's terms: any job it can run");
    }

    #[test]
    fn outside_the_hours_and_past_their_end() {
        let p = OwnerPolicy {
            hours: Some("22:00-07:00".parse().unwrap()),
            ..OwnerPolicy::default()
        };
        assert_eq!(
            screened(&p, 60.0, &moment("12:00")).unwrap_err(),
            "outside the owner's hours 22:00–07:00"
        );
        assert_eq!(screened(&p, 3600.0, &moment("23:00")), Ok(()));
        // At 06:00, an hour is left: a job of 61 minutes would run past 07:00.
        assert_eq!(screened(&p, 3600.0, &moment("06:00")), Ok(()));
        assert_eq!(
            screened(&p, 3660.0, &moment("06:00")).unwrap_err(),
            "its ETA here, 61.0 min, runs past the end of the owner's hours 22:00–07:00 (60.0 min left)"
        );
        assert_eq!(
            p.paused(&moment("07:00")),
            Some(Pause::OutsideHours("22:00-07:00".parse().unwrap()))
        );
        assert_eq!(p.paused(&moment("02:00")), None);
    }

    #[test]
    fn the_largest_job() {
        let p = OwnerPolicy {
            max_job_secs: Some(7200.0),
            ..OwnerPolicy::default()
        };
        assert_eq!(screened(&p, 7200.0, &moment("12:00")), Ok(()));
        assert_eq!(
            screened(&p, 3.0 * 3600.0, &moment("12:00")).unwrap_err(),
            "its ETA here, 3.0 h, is over the owner's largest job, 2.0 h"
        );
        assert!(
            screened(&p, f64::NAN, &moment("12:00")).is_err(),
            "an ETA that is not a number is not within it"
        );
    }

    #[test]
    fn when_idle_declines_while_the_owner_uses_the_machine() {
        let p = OwnerPolicy {
            when_idle: Some(WhenIdle {
                busy_above: 0.5,
                idle_after_secs: 60.0,
            }),
            ..OwnerPolicy::default()
        };
        let busy = Moment {
            avail: Avail::Busy(Load {
                resource: Resource::Cpu,
                share: 0.85,
            }),
            ..moment("12:00")
        };
        assert_eq!(
            screened(&p, 10.0, &busy).unwrap_err(),
            "the owner is using this machine (CPU 85 % busy)"
        );
        let unknown = Moment {
            avail: Avail::Unknown,
            ..busy
        };
        assert_eq!(p.paused(&unknown), Some(Pause::Measuring));
        assert_eq!(screened(&p, 10.0, &moment("12:00")), Ok(()));
        // Without --when-idle the owner's use is not looked at.
        assert_eq!(OwnerPolicy::default().paused(&busy), None);
    }

    #[test]
    fn spans_read_in_their_unit() {
        assert_eq!(span(45.2), "45 s");
        assert_eq!(span(750.0), "12.5 min");
        assert_eq!(span(3.25 * 3600.0), "3.2 h");
        assert_eq!(span(f64::INFINITY), "unbounded");
    }
}
