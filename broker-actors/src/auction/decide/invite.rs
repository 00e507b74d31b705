//! Whom an auction invites: the K workers whose standing ask can meet the job's requirements at
//! the lowest expected cost weighed by reputation ([`invitation_cost`]), by a full scan
//! ([`invitees`], the rule's definition) or from the registry's sorted views
//! ([`invitees_indexed`], the same choice in far fewer reads).

use helium_protocol::{
    job::{cost, DeclaredWork, Requirements, FIXED_OVERHEAD_SECS},
    limits::credits,
    worker::Ask,
};

use super::Candidate;

/// What an invitation ranks a worker by: its ask's cost for the work divided by its
/// reputation (in (0, 1], 1 for a newcomer; see `registry::record`), so a worker that abandoned
/// half its jobs is invited as if it asked twice its price. Never below the cost itself, which
/// keeps [`invitees_indexed`]'s bounds true. Only invitations are weighed: the auction itself
/// ranks bids by cost.
pub fn invitation_cost(cost: u64, reputation: f64) -> u64 {
    let reputation = if reputation.is_finite() {
        reputation.clamp(1e-3, 1.0)
    } else {
        1.0
    };
    if reputation >= 1.0 || cost == u64::MAX {
        return cost;
    }
    let weighed = (cost as f64 / reputation).ceil();
    if weighed >= u64::MAX as f64 {
        u64::MAX
    } else {
        (weighed as u64).max(cost)
    }
}

/// [`invitation_cost`] of `c`'s ask for `work`.
fn rank_of(c: &Candidate, work: &DeclaredWork) -> u64 {
    invitation_cost(
        cost(c.ask.price_per_hour, work.eta_secs(c.ask.throughput)),
        c.reputation,
    )
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Picks up to `k` workers to invite: those whose standing ask can meet the requirements,
/// lowest [`invitation_cost`] first. When none can, says why in words.
///
/// This is the rule's definition, a scan of every candidate; the registry answers auctions with
/// [`invitees_indexed`], which makes the same choice from its sorted views, and uses this only to
/// say why nobody is eligible.
pub fn invitees<'a, I>(
    candidates: I,
    req: &Requirements,
    work: &DeclaredWork,
    k: usize,
) -> Result<Vec<Candidate>, String>
where
    I: IntoIterator<Item = &'a Candidate> + Clone,
{
    let mut candidates_iter = candidates.clone().into_iter().peekable();
    if candidates_iter.peek().is_none() {
        return Err("no idle worker is online".into());
    }
    let device: Vec<_> = candidates_iter.filter(|c| c.ask.device.satisfies(req.device)).collect();
    if device.is_empty() {
        return Err(format!("no idle worker with device {:?}", req.device).to_lowercase());
    }
    let memory: Vec<_> = device
        .into_iter()
        .filter(|c| c.ask.memory_bytes >= req.min_memory_bytes)
        .collect();
    if memory.is_empty() {
        let largest = candidates
            .clone()
            .into_iter()
            .map(|c| c.ask.memory_bytes)
            .max()
            .unwrap_or(0);
        return Err(format!(
            "no idle worker with ≥ {:.1} GiB of device memory (largest: {:.1} GiB)",
            gib(req.min_memory_bytes),
            gib(largest)
        ));
    }
    let priced: Vec<_> = memory
        .into_iter()
        .filter(|c| c.ask.price_per_hour <= req.max_price_per_hour)
        .collect();
    if priced.is_empty() {
        let cheapest = candidates.into_iter().map(|c| c.ask.price_per_hour).min().unwrap_or(0);
        return Err(format!(
            "no idle worker at ≤ {} credits/hour (cheapest asks {})",
            credits(req.max_price_per_hour),
            credits(cheapest)
        ));
    }
    let mut ranked: Vec<(u64, Candidate)> = priced.into_iter().map(|c| (rank_of(c, work), c.clone())).collect();
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.reputation.total_cmp(&a.1.reputation)));
    Ok(ranked.into_iter().take(k.max(1)).map(|(_, c)| c).collect())
}

/// The key of the registry's first sorted view: price per unit of throughput, so that a job's
/// ask cost is `(work × rate + FIXED_OVERHEAD_SECS × price) / 3600`. Workers without a positive
/// throughput (whose cost is `u64::MAX`) sort last.
pub fn rate_key(ask: &Ask) -> f64 {
    if ask.throughput > 0.0 {
        ask.price_per_hour as f64 / ask.throughput
    } else {
        f64::INFINITY
    }
}

/// What [`invitees_indexed`] found, and how many index entries it read to find it.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    pub invited: Vec<Candidate>,
    pub touched: usize,
}

/// The same choice as [`invitees`] (when it finds anyone), without reading every candidate.
/// `by_rate` yields the candidates with their [`rate_key`], in ascending key; `by_price` the
/// same candidates in ascending price; `skip` drops some (workers the job excludes).
///
/// The ask cost is linear in (rate, price) with positive weights (the job's work and the fixed
/// overhead), so this is the threshold algorithm over the two views (Fagin): read them in
/// turns; a candidate not read yet costs at least `work × next rate + overhead × next price`;
/// stop once the K-th best read costs strictly less than that, so every candidate that ties
/// with it was read too (ties go by reputation, then worker id, as in [`invitees`]). The
/// price view also ends the search at the job's maximum price. For K = 8 and asks spread
/// independently it reads about `2·sqrt(2·K·N)` entries, rather than N; an empty result means
/// nobody is eligible (the caller asks [`invitees`] why).
pub fn invitees_indexed<'a>(
    by_rate: impl Iterator<Item = (f64, &'a Candidate)>,
    by_price: impl Iterator<Item = &'a Candidate>,
    req: &Requirements,
    work: &DeclaredWork,
    k: usize,
    skip: impl Fn(&Candidate) -> bool,
) -> Search {
    let k = k.max(1);
    let w = work.parameter_samples();
    let mut by_rate = by_rate.peekable();
    let mut by_price = by_price.peekable();
    // The best k read so far, in invitation order: (cost, reputation, candidate).
    let mut best: Vec<(u64, f64, &Candidate)> = Vec::with_capacity(k + 1);
    let ranks_before = |a: &(u64, f64, &Candidate), b: &(u64, f64, &Candidate)| {
        a.0.cmp(&b.0)
            .then(b.1.total_cmp(&a.1))
            .then(a.2.worker_id.cmp(&b.2.worker_id))
    };
    // A lower bound of a candidate's cost from its two keys (`cost` is this, rounded up; its
    // invitation cost is at least its cost); a relative margin far above f64 rounding keeps
    // it a true lower bound.
    let bound = |rate: f64, price: f64| {
        let compute = if w == 0.0 { 0.0 } else { w * rate };
        (compute + FIXED_OVERHEAD_SECS * price) / 3600.0 * (1.0 - 1e-9)
    };
    let mut touched = 0;
    let mut from_rate = true;
    loop {
        let next_price = by_price.peek().map_or(f64::INFINITY, |c| c.ask.price_per_hour as f64);
        if next_price > req.max_price_per_hour as f64 {
            // Everyone not read yet asks more than the job's maximum price.
            break;
        }
        // The K-th best cost so far, when it can decide anything (a saturated cost ties with
        // every unusable ask).
        let kth = (best.len() == k && best[k - 1].0 != u64::MAX).then(|| best[k - 1].0 as f64);
        if let Some(kth) = kth {
            let next_rate = by_rate.peek().map_or(f64::INFINITY, |(rate, _)| *rate);
            if bound(next_rate, next_price) > kth {
                break;
            }
        }
        let from_price = |c: &'a Candidate| (rate_key(&c.ask), c);
        let next = if from_rate {
            by_rate.next().or_else(|| by_price.next().map(from_price))
        } else {
            by_price.next().map(from_price).or_else(|| by_rate.next())
        };
        from_rate = !from_rate;
        let Some((rate, c)) = next else { break };
        touched += 1;
        let eligible = c.ask.device.satisfies(req.device)
            && c.ask.memory_bytes >= req.min_memory_bytes
            && c.ask.price_per_hour <= req.max_price_per_hour;
        // Most candidates read cannot beat the K-th best: say so without computing their cost.
        if !eligible || kth.is_some_and(|kth| bound(rate, c.ask.price_per_hour as f64) > kth) {
            continue;
        }
        if skip(c) || best.iter().any(|b| std::ptr::eq(b.2, c)) {
            continue;
        }
        let entry = (rank_of(c, work), c.reputation, c);
        let at = best.partition_point(|b| ranks_before(b, &entry).is_lt());
        if at < k {
            best.insert(at, entry);
            best.truncate(k);
        }
    }
    Search {
        invited: best.into_iter().map(|(_, _, c)| c.clone()).collect(),
        touched,
    }
}

/// The first `k` of several [`invitees_indexed`] answers, in the same order as [`invitees`].
pub fn merge_ranked(mut invited: Vec<Candidate>, work: &DeclaredWork, k: usize) -> Vec<Candidate> {
    invited.sort_by(|a, b| {
        rank_of(a, work)
            .cmp(&rank_of(b, work))
            .then(b.reputation.total_cmp(&a.reputation))
            .then(a.worker_id.cmp(&b.worker_id))
    });
    invited.truncate(k.max(1));
    invited
}

#[cfg(test)]
mod tests {
    use super::super::tests::req;
    use super::*;
    use helium_protocol::job::DeviceKind;

    #[test]
    fn invitees_filter_with_a_reason() {
        let c = Candidate {
            worker_id: "w".into(),
            owner: "o".into(),
            ask: Ask {
                price_per_hour: 100,
                device: DeviceKind::Cpu,
                device_name: "cpu".into(),
                memory_bytes: 8 << 30,
                throughput: 1e9,
                sandbox: Vec::new(),
            },
            reputation: 1.0,
        };
        let work = DeclaredWork {
            parameters: 10,
            samples: 10,
            epochs: 1,
        };
        let mut r = req(1_000, 1_000);
        r.min_memory_bytes = 16 << 30;
        let e = invitees(std::slice::from_ref(&c), &r, &work, 8).unwrap_err();
        assert!(e.contains("16.0 GiB"), "{e}");
        r.min_memory_bytes = 0;
        r.device = DeviceKind::Cuda;
        assert!(invitees(std::slice::from_ref(&c), &r, &work, 8)
            .unwrap_err()
            .contains("cuda"));
        assert!(invitees(std::slice::from_ref(&c), &req(10, 1_000), &work, 8)
            .unwrap_err()
            .contains("credits/hour"));
        assert_eq!(invitees(&[c], &req(1_000, 1_000), &work, 8).unwrap().len(), 1);
    }

    /// The indexed search picks exactly what the full scan picks, in the same order, over
    /// random grids with ties, unusable throughputs, exclusions and prices over the maximum.
    #[test]
    fn the_indexed_search_invites_whom_the_full_scan_invites() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut touched_at_10k = 0;
        for round in 0..400 {
            let n = match round % 4 {
                0 => 1 + next(5) as usize,
                1 => next(60) as usize,
                2 => 300,
                _ => 10_000,
            };
            if n == 10_000 && round > 40 {
                continue;
            }
            let mut candidates: Vec<Candidate> = (0..n)
                .map(|i| Candidate {
                    worker_id: format!("w{i:05}"),
                    owner: format!("o{}", i % 7),
                    ask: Ask {
                        // Few distinct prices and throughputs, so that costs tie often.
                        price_per_hour: 1_000 * (1 + next(if round % 2 == 0 { 5 } else { 5_000 })),
                        device: [DeviceKind::Cpu, DeviceKind::Cuda, DeviceKind::Any][next(3) as usize],
                        device_name: String::new(),
                        memory_bytes: next(4) << 30,
                        throughput: match next(50) {
                            0 => 0.0,
                            1 => f64::NAN,
                            2 => f64::INFINITY,
                            t => 1e6 * (t % (if round % 2 == 0 { 3 } else { 1_000 })) as f64 + 1.0,
                        },
                        sandbox: Vec::new(),
                    },
                    reputation: if next(10) == 0 { 0.5 } else { 1.0 },
                })
                .collect();
            candidates.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
            let req = Requirements {
                device: [DeviceKind::Cpu, DeviceKind::Cuda, DeviceKind::Any][next(3) as usize],
                min_memory_bytes: next(3) << 30,
                max_price_per_hour: 1_000 * (1 + next(6_000)),
                budget: u64::MAX,
                deadline_ms: 0,
            };
            let work = DeclaredWork {
                parameters: [0, 1, 1_000, 1_000_000][next(4) as usize],
                samples: 1 + next(100_000),
                epochs: 1 + next(10) as u32,
            };
            let k = next(10) as usize;
            let excluded: Vec<String> = (0..next(3)).map(|_| format!("w{:05}", next(n.max(1) as u64))).collect();
            let kept: Vec<Candidate> = candidates
                .iter()
                .filter(|c| !excluded.contains(&c.worker_id))
                .cloned()
                .collect();
            let expected = invitees(&kept, &req, &work, k).unwrap_or_default();
            let mut by_rate: Vec<(f64, &Candidate)> = candidates.iter().map(|c| (rate_key(&c.ask), c)).collect();
            by_rate.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.worker_id.cmp(&b.1.worker_id)));
            let mut by_price: Vec<&Candidate> = candidates.iter().collect();
            by_price.sort_by_key(|c| (c.ask.price_per_hour, c.worker_id.clone()));
            let found = invitees_indexed(by_rate.into_iter(), by_price.into_iter(), &req, &work, k, |c| {
                excluded.contains(&c.worker_id)
            });
            let ids = |v: &[Candidate]| v.iter().map(|c| c.worker_id.clone()).collect::<Vec<_>>();
            assert_eq!(
                ids(&found.invited),
                ids(&expected),
                "round {round}: {req:?} {work:?} k={k}"
            );
            if n == 10_000 && k == 8 && req.device == DeviceKind::Any && req.min_memory_bytes == 0 {
                touched_at_10k = touched_at_10k.max(found.touched);
            }
        }
        // The point of the index: far fewer reads than workers (when most are eligible).
        assert!(touched_at_10k < 5_000, "read {touched_at_10k} of 10,000");
    }
}
