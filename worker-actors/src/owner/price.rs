//! The owner's price policy (`--price-policy floor|market`).
//!
//! `--price` is the floor: the owner's true cost per device-hour. The grid's auction is a
//! second-price one (the winner is paid the next-lowest qualifying cost), so asking exactly
//! one's cost is the best strategy: the price paid is set by the next bid, not by one's own.
//!
//! `market` asks `max(floor, fraction × the median of the recent winning prices)`, from the
//! winning prices revealed to this worker in its lost auctions. It suits an owner who wants
//! only jobs that clear well above their cost. Under second price it cannot earn more for a job
//! won against another bid (that price is the other bid's either way); it only wins fewer
//! jobs: those where the next bid was between the floor and the raised ask are lost. It earns
//! more only where it bids alone, where the grid pays a lone bid its own ask.

use std::collections::VecDeque;

/// Winning prices remembered for `market`.
pub const RECENT_PRICES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PricePolicy {
    /// Always ask `--price` (the best strategy under second price).
    #[default]
    Floor,
    /// Ask a fraction of recent winning prices, never below `--price`.
    Market,
}

/// The winning prices (micro-credits per hour) of the last [`RECENT_PRICES`] auctions this
/// worker lost.
#[derive(Debug, Clone, Default)]
pub struct RecentPrices(VecDeque<u64>);

impl RecentPrices {
    pub fn push(&mut self, price_per_hour: u64) {
        self.0.push_back(price_per_hour);
        while self.0.len() > RECENT_PRICES {
            self.0.pop_front();
        }
    }

    /// The median (the lower middle of an even count), if any price was seen.
    pub fn median(&self) -> Option<u64> {
        let mut sorted: Vec<u64> = self.0.iter().copied().collect();
        sorted.sort_unstable();
        sorted.get(sorted.len().checked_sub(1)? / 2).copied()
    }
}

/// The ask (micro-credits per hour) under `policy`: the floor, or `fraction` of the recent
/// median winning price when that is higher.
pub fn ask(policy: PricePolicy, floor: u64, fraction: f64, recent: &RecentPrices) -> u64 {
    match (policy, recent.median()) {
        (PricePolicy::Market, Some(median)) if fraction.is_finite() && fraction > 0.0 => {
            floor.max((median as f64 * fraction).round().min(u64::MAX as f64) as u64)
        }
        _ => floor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recent(prices: &[u64]) -> RecentPrices {
        let mut r = RecentPrices::default();
        prices.iter().for_each(|p| r.push(*p));
        r
    }

    #[test]
    fn floor_ignores_the_market() {
        assert_eq!(
            ask(PricePolicy::Floor, 1_000_000, 0.9, &recent(&[5_000_000])),
            1_000_000
        );
    }

    #[test]
    fn market_asks_a_fraction_of_the_median_never_below_the_floor() {
        let r = recent(&[2_000_000, 9_000_000, 3_000_000]);
        assert_eq!(r.median(), Some(3_000_000));
        assert_eq!(ask(PricePolicy::Market, 1_000_000, 0.9, &r), 2_700_000);
        assert_eq!(ask(PricePolicy::Market, 2_800_000, 0.9, &r), 2_800_000);
        // Nothing seen yet, or a nonsense fraction: the floor.
        assert_eq!(
            ask(PricePolicy::Market, 1_000_000, 0.9, &RecentPrices::default()),
            1_000_000
        );
        assert_eq!(ask(PricePolicy::Market, 1_000_000, f64::NAN, &r), 1_000_000);
    }

    #[test]
    fn only_the_recent_prices_count() {
        let mut r = recent(&[100; RECENT_PRICES]);
        assert_eq!(r.median(), Some(100));
        for _ in 0..RECENT_PRICES / 2 + 1 {
            r.push(1_000);
        }
        assert_eq!(r.median(), Some(1_000));
        assert_eq!(recent(&[1, 2, 3, 4]).median(), Some(2));
    }
}
