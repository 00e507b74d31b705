//! Which sealed bids take part in an auction. A bid is ranked by its cost, price/hour × ETA,
//! and the winner's contract price does not depend on how long the run really takes, so an
//! ETA is only worth what the bidder's own standing ask makes believable. A bid is refused
//! (it does not count, and cannot set the second price) when:
//!
//! - it is out of bounds ([`Bid::validate`]): an ETA that is not finite, or outside
//!   [`MIN_ETA_SECS`] (the fixed overhead every estimate includes: an ETA of 0 would cost 0
//!   and win) to [`MAX_ETA_SECS`], or a price over [`MAX_PRICE_PER_HOUR`]; or
//! - it is faster than the bidder's own ask allows: its ETA is below
//!   [`min_eta_secs`] = `FIXED_OVERHEAD_SECS + work / (MAX_BID_SPEEDUP × ask throughput)`,
//!   i.e. it claims to compute the declared work more than [`MAX_BID_SPEEDUP`] times faster
//!   than the throughput its ask advertised when it was invited (an honest bid,
//!   `work.eta_secs(throughput)`, is always above it).
//!
//! [`MIN_ETA_SECS`]: helium_protocol::limits::MIN_ETA_SECS
//! [`MAX_ETA_SECS`]: helium_protocol::limits::MAX_ETA_SECS
//! [`MAX_PRICE_PER_HOUR`]: helium_protocol::limits::MAX_PRICE_PER_HOUR

use helium_protocol::{
    job::{DeclaredWork, FIXED_OVERHEAD_SECS},
    limits::MAX_BID_SPEEDUP,
    validate::Invalid,
    worker::Bid,
};

use super::Offer;

/// Why a bid does not take part.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refused {
    #[error("bid out of bounds: {0}")]
    Bounds(#[from] Invalid),
    #[error(
        "eta_secs {eta_secs} is below {min_eta_secs} s, the least the declared work takes at \
         {MAX_BID_SPEEDUP}× the throughput of this worker's own ask"
    )]
    FasterThanItsAsk { eta_secs: f64, min_eta_secs: f64 },
}

/// The shortest ETA a bidder whose ask advertises `throughput` may quote for `work`. An ask
/// without a usable throughput (asks are validated at registration, so none should be here)
/// makes every ETA implausible.
pub fn min_eta_secs(work: &DeclaredWork, throughput: f64) -> f64 {
    if !(throughput.is_finite() && throughput > 0.0) {
        return f64::INFINITY;
    }
    let compute = work.parameter_samples() / (throughput * MAX_BID_SPEEDUP);
    FIXED_OVERHEAD_SECS + compute
}

/// Whether `bid`, from a worker whose ask advertised `throughput`, may take part in an
/// auction for `work` (the rules in this module's docs).
pub fn check_bid(bid: &Bid, throughput: f64, work: &DeclaredWork) -> Result<(), Refused> {
    bid.validate()?;
    let min_eta_secs = min_eta_secs(work, throughput);
    if bid.eta_secs < min_eta_secs {
        return Err(Refused::FasterThanItsAsk {
            eta_secs: bid.eta_secs,
            min_eta_secs,
        });
    }
    Ok(())
}

/// [`check_bid`] for an offer as received.
pub fn check(offer: &Offer, work: &DeclaredWork) -> Result<(), Refused> {
    check_bid(&offer.bid, offer.throughput, work)
}

#[cfg(test)]
mod tests {
    use super::*;
    use helium_protocol::limits::{MAX_ETA_SECS, MAX_THROUGHPUT, MIN_ETA_SECS};

    const WORK: DeclaredWork = DeclaredWork {
        parameters: 1_000_000,
        samples: 60_000,
        epochs: 10,
    };

    fn bid(eta_secs: f64) -> Bid {
        Bid {
            price_per_hour: 1_000_000,
            eta_secs,
        }
    }

    #[test]
    fn an_honest_bid_passes_at_any_throughput_and_any_work() {
        for throughput in [1.0, 1e6, 1e9, 1e12, MAX_THROUGHPUT] {
            for parameters in [0, 1, 1_000, 1_000_000_000] {
                let work = DeclaredWork { parameters, ..WORK };
                let honest = work.eta_secs(throughput);
                if honest <= MAX_ETA_SECS {
                    assert_eq!(
                        check_bid(&bid(honest), throughput, &work),
                        Ok(()),
                        "{throughput} {parameters}"
                    );
                }
            }
        }
    }

    /// 6e11 parameter-samples at 1e9/s is 600 s of compute: the floor is 600 / 4 + 5 = 155 s.
    #[test]
    fn a_bid_faster_than_its_own_ask_allows_is_refused() {
        let throughput = 1e9;
        assert_eq!(min_eta_secs(&WORK, throughput), 155.0);
        assert_eq!(check_bid(&bid(155.0), throughput, &WORK), Ok(()));
        for eta in [154.9, 60.0, MIN_ETA_SECS] {
            assert_eq!(
                check_bid(&bid(eta), throughput, &WORK),
                Err(Refused::FasterThanItsAsk {
                    eta_secs: eta,
                    min_eta_secs: 155.0
                }),
                "{eta}"
            );
        }
    }

    #[test]
    fn zero_negative_nan_tiny_or_endless_etas_are_out_of_bounds() {
        let empty = DeclaredWork {
            parameters: 0,
            samples: 0,
            epochs: 1,
        };
        for eta in [
            0.0,
            -1.0,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::MIN_POSITIVE,
            1e-300,
            4.999,
            MAX_ETA_SECS * 2.0,
        ] {
            assert_eq!(
                check_bid(&bid(eta), 1e9, &empty),
                Err(Refused::Bounds(Invalid::Eta)),
                "{eta}"
            );
        }
        // The floor of the empty work is the fixed overhead itself.
        assert_eq!(check_bid(&bid(MIN_ETA_SECS), 1e9, &empty), Ok(()));
    }

    #[test]
    fn an_ask_without_usable_throughput_makes_every_eta_implausible() {
        for throughput in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                check_bid(&bid(3_600.0), throughput, &WORK),
                Err(Refused::FasterThanItsAsk { .. })
            ));
        }
    }
}
