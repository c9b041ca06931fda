//! Distribution and correctness properties of every balancer, checked on
//! the pickers directly (no I/O): shares, interleaving, stability, bounds.

use std::collections::VecDeque;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::balance::*;
use crate::pool::load::EndpointState;
use crate::{Endpoint, Pool};

fn members(weights: &[u32]) -> Members {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let endpoint = Endpoint::new(&format!("10.0.{}.{}:8080", i / 250, i % 250 + 1))
                .unwrap()
                .with_weight(w)
                .unwrap();
            Member::new(endpoint, EndpointState::detached())
        })
        .collect()
}

fn shares(balancer: &dyn Balancer, members: &Members, picks: usize) -> Vec<f64> {
    let picker = balancer.picker(members);
    let ctx = PickContext::new("svc");
    let mut counts = vec![0usize; members.len()];
    for _ in 0..picks {
        counts[picker.pick(members, &ctx).unwrap()] += 1;
    }
    counts.iter().map(|&c| c as f64 / picks as f64).collect()
}

/// Checks each share against its weight's within `tolerance` (relative).
/// Random balancers also get five standard deviations of sampling noise,
/// so a correct one fails about once in two million runs, not once in fifty.
fn assert_weighted_within(balancer: &dyn Balancer, weights: &[u32], tolerance: f64) {
    let members = members(weights);
    let total: u32 = weights.iter().sum();
    let picks = 100_000;
    let seen = shares(balancer, &members, picks);
    let random = !matches!(balancer.name(), "round_robin" | "weighted_round_robin");
    for (i, &w) in weights.iter().enumerate() {
        let expected = f64::from(w) / f64::from(total);
        let noise = if random {
            5.0 * (expected * (1.0 - expected) / picks as f64).sqrt()
        } else {
            0.0
        };
        assert!(
            (seen[i] - expected).abs() <= tolerance * expected + noise,
            "{}: endpoint {i} got {:.4}, weight share {expected:.4}",
            balancer.name(),
            seen[i]
        );
    }
}

#[test]
fn weighted_balancers_follow_weights_within_two_percent() {
    let weights = [1, 2, 3, 4, 10];
    assert_weighted_within(&WeightedRoundRobin::new(), &weights, 0.02);
    assert_weighted_within(&WeightedRandom::new(), &weights, 0.02);
    // With nothing in flight, weighted least request draws by weight.
    assert_weighted_within(&WeightedLeastRequest::new(), &weights, 0.02);
}

#[test]
fn unweighted_balancers_spread_evenly() {
    let weights = [1; 7];
    assert_weighted_within(&RoundRobin::new(), &weights, 0.001);
    assert_weighted_within(&Random::new(), &weights, 0.03);
    assert_weighted_within(&LeastRequest::new(), &weights, 0.03);
    assert_weighted_within(&PeakEwma::new(), &weights, 0.03);
}

/// Round robin turns a cursor per thread: one thread still goes round the
/// endpoints strictly in turn, and threads picking at once still spread
/// evenly, no endpoint more than one pick per thread ahead of another
/// (whether the threads' cursors are two or, shared, one).
#[test]
fn round_robin_goes_round_on_each_thread_and_stays_even_across_threads() {
    // 7: one cursor for all threads; 100: a cursor per thread.
    for n in [7, 100] {
        round_robin_on_two_threads(n);
    }
}

fn round_robin_on_two_threads(n: usize) {
    let members = members(&vec![1; n]);
    let picker = RoundRobin::new().picker(&members);
    let ctx = PickContext::new("svc");
    let turn: Vec<usize> = (0..2 * n)
        .map(|_| picker.pick(&members, &ctx).unwrap())
        .collect();
    for pair in turn.windows(2) {
        assert_eq!(pair[1], (pair[0] + 1) % n, "{turn:?}");
    }
    let counts: Vec<std::sync::atomic::AtomicUsize> = (0..n).map(|_| Default::default()).collect();
    let (picker, members, counts) = (&picker, &members, &counts);
    std::thread::scope(|s| {
        for picks in [1_000 * n + 3, 1_000 * n + 5] {
            s.spawn(move || {
                for _ in 0..picks {
                    let i = picker.pick(members, &ctx).unwrap();
                    counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    let counts: Vec<usize> = counts
        .iter()
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    let (low, high) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    // One cursor: exactly even but for the last round; two: each cursor's
    // last round.
    let bound = if n < 64 { 1 } else { 2 };
    assert!(high - low <= bound, "{n}: {counts:?}");
}

/// Runs `picks` requests with `concurrency` in flight at once, all taking
/// equally long (first in, first out), and returns each endpoint's share.
fn shares_under_load(balancer: &dyn Balancer, members: &Members, concurrency: usize) -> Vec<f64> {
    let picker = balancer.picker(members);
    let ctx = PickContext::new("svc");
    let mut in_flight = VecDeque::new();
    let mut counts = vec![0usize; members.len()];
    let picks = 50_000;
    for _ in 0..picks {
        if in_flight.len() == concurrency {
            let done: usize = in_flight.pop_front().unwrap();
            members[done].state().finish();
        }
        let i = picker.pick(members, &ctx).unwrap();
        members[i].state().start();
        in_flight.push_back(i);
        counts[i] += 1;
    }
    counts.iter().map(|&c| c as f64 / picks as f64).collect()
}

#[test]
fn weighted_least_request_carries_load_in_proportion_to_weight() {
    let members = members(&[2, 1, 1]);
    let seen = shares_under_load(&WeightedLeastRequest::new(), &members, 32);
    let ratio = seen[0] / ((seen[1] + seen[2]) / 2.0);
    assert!(
        (1.8..2.2).contains(&ratio),
        "weight-2 carries {ratio:.2}x, shares {seen:?}"
    );
}

#[test]
fn two_choices_never_take_the_more_loaded() {
    for balancer in [
        &LeastRequest::new() as &dyn Balancer,
        &PeakEwma::new(),
        &WeightedLeastRequest::new(),
    ] {
        let members = members(&[1, 1, 1]);
        for (i, load) in [0, 5, 10].into_iter().enumerate() {
            for _ in 0..load {
                members[i].state().start();
            }
        }
        let seen = shares(balancer, &members, 30_000);
        assert_eq!(
            seen[2],
            0.0,
            "{}: the most loaded was picked: {seen:?}",
            balancer.name()
        );
        // The middle one wins only when drawn with the most loaded: 1 pair
        // in 3; for Peak-EWMA, and when its third draw (one in three of
        // them the least loaded) misses the least loaded too.
        let middle = match balancer.name() {
            "weighted_least_request" => None,
            "peak_ewma" => Some(1.0 / 3.0 * 2.0 / 3.0),
            _ => Some(1.0 / 3.0),
        };
        if let Some(middle) = middle {
            assert!(
                (seen[1] - middle).abs() < 0.02,
                "{}: {seen:?}",
                balancer.name()
            );
        }
    }
}

#[test]
fn full_scan_takes_the_least_loaded() {
    let members = members(&[1, 1, 1, 1]);
    for (i, load) in [3, 1, 2, 4].into_iter().enumerate() {
        for _ in 0..load {
            members[i].state().start();
        }
    }
    let seen = shares(
        &LeastRequest::new().mode(LeastRequestMode::FullScan),
        &members,
        1000,
    );
    assert_eq!(seen[1], 1.0);
}

#[test]
fn peak_ewma_shuns_fast_failures_and_slow_endpoints() {
    let members = members(&[1, 1, 1]);
    // 0 answers in 1 ms, 1 in 20 ms, 2 refuses in 0.1 ms.
    for _ in 0..20 {
        members[0]
            .state()
            .record(Some(std::time::Duration::from_millis(1)), false);
        members[1]
            .state()
            .record(Some(std::time::Duration::from_millis(20)), false);
        members[2]
            .state()
            .record(Some(std::time::Duration::from_micros(100)), true);
    }
    let seen = shares_under_load(&PeakEwma::new(), &members, 8);
    assert!(seen[2] < 0.001, "{seen:?}");
    assert!(seen[1] < 0.10, "{seen:?}");
}

fn keyed(key: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("x-key"),
        HeaderValue::from_str(key).unwrap(),
    );
    headers
}

fn hashers() -> Vec<ConsistentHash> {
    let key = HashKey::header(HeaderName::from_static("x-key"));
    vec![
        ConsistentHash::new(key.clone()),
        ConsistentHash::new(key).table(HashTable::Ring {
            points_per_weight: 160,
        }),
    ]
}

/// Between two placements of the same keys: the fraction of keys that
/// moved, and how many of them moved although they were not on `from`.
fn moves(before: &[String], after: &[String], from: &str) -> (f64, usize) {
    let moved = before.iter().zip(after).filter(|(b, a)| b != a).count();
    let elsewhere = before
        .iter()
        .zip(after)
        .filter(|(b, a)| b != a && b.as_str() != from)
        .count();
    (moved as f64 / before.len().max(1) as f64, elsewhere)
}

/// Where each of `keys` goes with `members`, by endpoint key.
fn placement(balancer: &ConsistentHash, members: &Members, keys: usize) -> Vec<String> {
    placement_by(&*balancer.picker(members), members, keys)
}

/// Where each of `keys` goes through `picker` (made for `members`).
fn placement_by(picker: &dyn Picker, members: &Members, keys: usize) -> Vec<String> {
    (0..keys)
        .map(|k| {
            let headers = keyed(&format!("user-{k}"));
            let ctx = PickContext::new("svc").with_headers(&headers);
            members[picker.pick(members, &ctx).unwrap()]
                .endpoint()
                .key()
                .to_string()
        })
        .collect()
}

#[test]
fn consistent_hash_is_stable_balanced_and_minimally_disrupted() {
    let n = 10;
    let keys = 20_000;
    for balancer in hashers() {
        let all = members(&vec![1; n]);
        let before = placement(&balancer, &all, keys);
        assert_eq!(
            before,
            placement(&balancer, &all, keys),
            "same keys, same endpoints"
        );
        for m in &all {
            let share =
                before.iter().filter(|k| *k == m.endpoint().key()).count() as f64 / keys as f64;
            assert!(
                (share - 0.1).abs() < 0.03,
                "{}: share {share}",
                balancer.name()
            );
        }

        // Remove one: only its keys move, about 1/n of them.
        let removed = all[3].endpoint().key().to_string();
        let fewer: Members = all
            .iter()
            .filter(|m| m.endpoint().key() != removed)
            .cloned()
            .collect();
        let after = placement(&balancer, &fewer, keys);
        let (fraction, moved_elsewhere) = moves(&before, &after, &removed);
        assert!(
            (0.07..0.14).contains(&fraction),
            "{}: {fraction} moved on removal",
            balancer.name()
        );
        assert!(
            moved_elsewhere as f64 / keys as f64 <= 0.01,
            "{}: {moved_elsewhere} moved needlessly",
            balancer.name()
        );

        // Add one: about 1/(n+1) move, all of them to the new endpoint.
        let more = members(&vec![1; n + 1]);
        let added = more[n].endpoint().key().to_string();
        let after = placement(&balancer, &more, keys);
        let (fraction, _) = moves(&before, &after, "");
        assert!(
            (0.06..0.13).contains(&fraction),
            "{}: {fraction} moved on addition",
            balancer.name()
        );
        let moved_not_to_new = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a && **a != added)
            .count();
        assert!(
            moved_not_to_new as f64 / keys as f64 <= 0.01,
            "{}",
            balancer.name()
        );
    }
}

#[test]
fn consistent_hash_honours_weights() {
    let weights = [1, 3];
    for balancer in hashers() {
        let members = members(&weights);
        let placed = placement(&balancer, &members, 40_000);
        let heavy = placed
            .iter()
            .filter(|k| *k == members[1].endpoint().key())
            .count() as f64
            / 40_000.0;
        assert!((heavy - 0.75).abs() < 0.03, "{}: {heavy}", balancer.name());
    }
}

#[test]
fn bounded_loads_are_never_exceeded() {
    let key = HashKey::header(HeaderName::from_static("x-key"));
    for table in [
        HashTable::Maglev,
        HashTable::Ring {
            points_per_weight: 100,
        },
    ] {
        let balancer = ConsistentHash::new(key.clone())
            .table(table)
            .bounded_load(BoundedLoad::new(1.25));
        let members = members(&[1, 1, 1, 1, 2]);
        let picker = balancer.picker(&members);
        let total_weight = 6.0;
        // One hot key and a few others, never completing: the worst case.
        for request in 0..600 {
            let key = if request % 4 == 0 {
                format!("k{request}")
            } else {
                "hot".to_string()
            };
            let headers = keyed(&key);
            let ctx = PickContext::new("svc").with_headers(&headers);
            let total: usize = members.iter().map(|m| m.state().in_flight()).sum();
            let i = picker.pick(&members, &ctx).unwrap();
            let cap = (1.25 * (total + 1) as f64 * f64::from(members[i].weight()) / total_weight)
                .ceil() as usize;
            members[i].state().start();
            assert!(
                members[i].state().in_flight() <= cap,
                "{table:?}: {} > {cap}",
                members[i].state().in_flight()
            );
        }
        // The hot key's endpoint is full, and the overflow went elsewhere.
        assert!(
            members.iter().all(|m| m.state().in_flight() > 0),
            "{table:?}"
        );
    }
}

#[test]
fn keyless_requests_use_the_fallback() {
    let balancer = ConsistentHash::new(HashKey::Path).fallback(RoundRobin::new());
    let members = members(&[1, 1, 1]);
    let seen = shares(&balancer, &members, 3_000);
    assert!(
        seen.iter().all(|&s| (s - 1.0 / 3.0).abs() < 1e-9),
        "{seen:?}"
    );
}

#[test]
fn every_balancer_avoids_tried_endpoints_until_nothing_else_is_left() {
    let header = HashKey::header(HeaderName::from_static("x-key"));
    let balancers: Vec<Box<dyn Balancer>> = vec![
        Box::new(RoundRobin::new()),
        Box::new(Random::new()),
        Box::new(WeightedRoundRobin::new()),
        Box::new(WeightedRandom::new()),
        Box::new(LeastRequest::new()),
        Box::new(LeastRequest::new().mode(LeastRequestMode::FullScan)),
        Box::new(WeightedLeastRequest::new()),
        Box::new(PeakEwma::new()),
        Box::new(ConsistentHash::new(header.clone())),
        Box::new(ConsistentHash::new(header).table(HashTable::Ring {
            points_per_weight: 10,
        })),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for balancer in balancers {
        let name = balancer.name();
        let endpoints = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];
        let pool = runtime.block_on(async {
            let pool = Pool::builder("svc", crate::discover::Fixed::new(endpoints).unwrap())
                .balancer(Arc::<dyn Balancer>::from(balancer))
                .build();
            pool.ready().await.unwrap();
            pool
        });
        let mut avoid = Avoid::new();
        avoid.insert(Endpoint::new(endpoints[0]).unwrap());
        avoid.insert(Endpoint::new(endpoints[2]).unwrap());
        for k in 0..200 {
            let headers = keyed(&format!("user-{k}"));
            let ctx = PickContext::new("svc")
                .with_headers(&headers)
                .with_avoid(&avoid);
            let picked = pool.pick_with(&ctx).unwrap();
            assert_eq!(picked.endpoint().key(), "http://10.0.0.2:80", "{name}");
        }
        avoid.insert(Endpoint::new(endpoints[1]).unwrap());
        let headers = keyed("user-1");
        let ctx = PickContext::new("svc")
            .with_headers(&headers)
            .with_avoid(&avoid);
        let picked = pool.pick_with(&ctx).expect("all avoided must still pick");
        assert_eq!(
            picked.endpoint().key(),
            "http://10.0.0.1:80",
            "{name}: with all avoided, the one avoided longest ago"
        );
    }
}

#[test]
fn raw_integer_custom_keys_spread_like_hashed_ones() {
    // A user id as it is, no hashing by the user: small integers must not
    // all land on one endpoint.
    let by_id = ConsistentHash::new(HashKey::custom(|ctx| ctx.path?.parse().ok()));
    let members = members(&[1; 10]);
    let picker = by_id.picker(&members);
    let mut hits = [0usize; 10];
    for id in 0..10_000u32 {
        let path = id.to_string();
        let ctx = PickContext::new("svc").with_path(&path);
        hits[picker.pick(&members, &ctx).unwrap()] += 1;
    }
    for (i, &n) in hits.iter().enumerate() {
        assert!(
            (800..1200).contains(&n),
            "endpoint {i} got {n} of 10,000: {hits:?}"
        );
    }
}

/// Sequential load (nothing in flight at any pick): an endpoint with no
/// answer yet competes by in-flight count, so it gets requests instead of
/// losing every comparison to the default round trip.
#[test]
fn peak_ewma_does_not_starve_an_endpoint_it_has_not_heard_from() {
    let members = members(&[1, 1, 1]);
    for m in members.iter().take(2) {
        m.state()
            .record(Some(std::time::Duration::from_millis(1)), false);
    }
    let seen = shares(&PeakEwma::new(), &members, 3_000);
    assert!(seen[2] > 0.2, "the unheard-of endpoint got {seen:?}");
}

/// Slow is not failing, and what stands in for a failing endpoint is a
/// fresh draw: the traffic of endpoints skipped never piles onto the one
/// after them in member order.
#[test]
fn peak_ewma_does_not_herd_onto_the_neighbour_of_slow_endpoints() {
    let members = members(&[1; 10]);
    // 0 to 7 answer in 900 ms (above half the failure penalty), 8 and 9 in
    // 10 ms.
    for (i, m) in members.iter().enumerate() {
        let ms = if i < 8 { 900 } else { 10 };
        m.state()
            .record(Some(std::time::Duration::from_millis(ms)), false);
    }
    let seen = shares(&PeakEwma::new(), &members, 20_000);
    assert!((seen[8] - seen[9]).abs() < 0.05, "{seen:?}");
}

/// Maglev's table followed through changes (`Picker::update`, as the pool
/// does for a change of a few endpoints) keeps the rebuild's bounds: only
/// the keys of the endpoint that left move, about 1/n of them; a new one
/// takes about 1/(n+1), and only keys that move to it move; shares stay fair.
#[test]
fn maglev_updated_in_place_is_minimally_disrupted_and_balanced() {
    let n = 10;
    let keys = 20_000;
    let balancer = &hashers()[0];
    assert_eq!(balancer.name(), "maglev");
    let mut list = listed(members(&vec![1; n + 1]).iter().take(n));
    let (all, _) = list.publish();
    let picker = balancer.picker(&all);
    let before = placement_by(&*picker, &all, keys);
    assert_eq!(
        before,
        placement(balancer, &all, keys),
        "a fresh build agrees"
    );

    let removed = all[3].endpoint().key().to_string();
    list.swap_remove(3);
    let (fewer, changes) = list.publish();
    let changes = changes.expect("one change is logged");
    let picker = picker
        .update(&fewer, &changes)
        .expect("maglev follows a removal");
    let after = placement_by(&*picker, &fewer, keys);
    let (fraction, moved_elsewhere) = moves(&before, &after, &removed);
    assert!(
        (0.07..0.14).contains(&fraction),
        "{fraction} moved on removal"
    );
    assert_eq!(moved_elsewhere, 0, "only the removed endpoint's keys move");
    for m in fewer.iter() {
        let share = after.iter().filter(|k| *k == m.endpoint().key()).count() as f64 / keys as f64;
        assert!(
            (share - 1.0 / 9.0).abs() < 0.03,
            "share {share} after removal"
        );
    }

    let added_member = members(&vec![1; n + 1])[n].clone();
    let added = added_member.endpoint().key().to_string();
    list.push(added_member);
    let (more, changes) = list.publish();
    let picker = picker
        .update(&more, &changes.expect("logged"))
        .expect("maglev follows an addition");
    let again = placement_by(&*picker, &more, keys);
    let (fraction, _) = moves(&after, &again, "");
    assert!(
        (0.06..0.13).contains(&fraction),
        "{fraction} moved on addition"
    );
    assert!(
        after.iter().zip(&again).all(|(b, a)| b == a || *a == added),
        "keys move only to the new endpoint"
    );
    for m in more.iter() {
        let share = again.iter().filter(|k| *k == m.endpoint().key()).count() as f64 / keys as f64;
        assert!((share - 0.1).abs() < 0.03, "share {share} after addition");
    }
}

/// A change of weight (or a resize of the table) is not followed: the
/// pool rebuilds.
#[test]
fn maglev_declines_a_weight_change() {
    let balancer = &hashers()[0];
    let mut list = listed(members(&[1, 1, 1]).iter());
    let (all, _) = list.publish();
    let picker = balancer.picker(&all);
    let heavier = members(&[1, 3, 1])[1].clone();
    list.replace(1, heavier);
    let (changed, changes) = list.publish();
    assert!(picker.update(&changed, &changes.unwrap()).is_none());
}

/// Several changes in one update, an endpoint added and removed again
/// among them: the table points only at members that are there, each
/// with a fair share.
#[test]
fn maglev_follows_a_batch_with_an_endpoint_added_and_removed() {
    let balancer = &hashers()[0];
    let pool = members(&[1; 14]);
    let mut list = listed(pool.iter().take(10));
    let (all, _) = list.publish();
    let picker = balancer.picker(&all);
    list.push(pool[10].clone());
    list.push(pool[11].clone());
    list.swap_remove(10);
    list.swap_remove(0);
    list.push(pool[12].clone());
    let (changed, changes) = list.publish();
    assert_eq!(changed.len(), 11);
    let picker = picker
        .update(&changed, &changes.expect("logged"))
        .expect("maglev follows");
    let placed = placement_by(&*picker, &changed, 20_000);
    for m in changed.iter() {
        let share = placed.iter().filter(|k| *k == m.endpoint().key()).count() as f64 / 20_000.0;
        assert!((share - 1.0 / 11.0).abs() < 0.03, "share {share}");
    }
    let gone = [pool[0].endpoint().key(), pool[10].endpoint().key()];
    assert!(placed.iter().all(|k| !gone.contains(&k.as_str())));
}

/// A hash ring followed through changes (`Picker::update`) is the ring a
/// fresh build of the same members makes: every key lands alike, after a
/// removal (the last member moving into the leaver's place), an addition,
/// a weight change and a batch that adds and removes at once; and each of
/// these is followed, not rebuilt.
#[test]
fn ring_updated_in_place_agrees_with_a_fresh_build() {
    let balancer = &hashers()[1];
    assert_eq!(balancer.name(), "ring_hash");
    let pool = members(&[1; 16]);
    let mut list = listed(pool.iter().take(10));
    let (all, _) = list.publish();
    let mut picker = balancer.picker(&all);
    let steps: [&dyn Fn(&mut crate::pool::members::MemberList); 4] = [
        &|list| {
            list.swap_remove(3);
        },
        &|list| {
            list.push(pool[10].clone());
        },
        &|list| list.replace(2, members(&[1, 1, 3])[2].clone()),
        &|list| {
            list.push(pool[11].clone());
            list.swap_remove(0);
        },
    ];
    for (i, step) in steps.iter().enumerate() {
        step(&mut list);
        let (changed, changes) = list.publish();
        picker = picker
            .update(&changed, &changes.expect("logged"))
            .unwrap_or_else(|| panic!("step {i}: the ring follows"));
        assert_eq!(
            placement_by(&*picker, &changed, 5_000),
            placement(balancer, &changed, 5_000),
            "step {i}: as a fresh build"
        );
    }
}

/// A ring over its point budget gives each endpoint a share that depends
/// on the total weight: it is rebuilt, not edited.
#[test]
fn a_ring_scaled_to_its_budget_declines_to_follow() {
    let balancer = ConsistentHash::new(HashKey::header(HeaderName::from_static("x-key"))).table(
        HashTable::Ring {
            points_per_weight: 1 << 20,
        },
    );
    let pool = members(&[1; 6]);
    let mut list = listed(pool.iter().take(5));
    let (all, _) = list.publish();
    let picker = balancer.picker(&all);
    list.push(pool[5].clone());
    let (more, changes) = list.publish();
    assert!(picker.update(&more, &changes.unwrap()).is_none());
}

/// A member list of `members`, in order, as a pool's would be.
fn listed<'a>(members: impl Iterator<Item = &'a Member>) -> crate::pool::members::MemberList {
    let mut list = crate::pool::members::MemberList::default();
    for m in members {
        list.push(m.clone());
    }
    list
}

/// What the pool does with a change: the picker follows it, or the
/// balancer builds afresh when it declines.
fn followed(
    balancer: &ConsistentHash,
    picker: &dyn Picker,
    members: &Members,
    changes: &[crate::balance::Change],
) -> Box<dyn Picker> {
    picker
        .update(members, changes)
        .unwrap_or_else(|| balancer.picker(members))
}

/// Each member's share of `keys` keys through `picker`.
fn key_shares(picker: &dyn Picker, members: &Members, keys: usize) -> Vec<f64> {
    let placed = placement_by(picker, members, keys);
    members
        .iter()
        .map(|m| placed.iter().filter(|k| *k == m.endpoint().key()).count() as f64 / keys as f64)
        .collect()
}

/// A discovery update that swaps the whole set in one batch (every pod's
/// address rotated) leaves the table fair, not every key on one endpoint.
#[test]
fn maglev_after_the_whole_set_is_replaced_in_one_batch_is_fair() {
    let balancer = &hashers()[0];
    let pool = members(&[1; 6]);
    for old in [1, 3] {
        let mut list = listed(pool.iter().take(old));
        let (all, _) = list.publish();
        let picker = balancer.picker(&all);
        for _ in 0..old {
            list.swap_remove(0);
        }
        for m in pool.iter().skip(old).take(3) {
            list.push(m.clone());
        }
        let (replaced, changes) = list.publish();
        let picker = followed(balancer, &*picker, &replaced, &changes.unwrap());
        for share in key_shares(&*picker, &replaced, 9_000) {
            assert!(
                (share - 1.0 / 3.0).abs() < 0.06,
                "{old} replaced by 3: share {share}"
            );
        }
    }
}

/// A heavy endpoint leaving frees most of the table: its slots are shared
/// fairly by those left, none piles onto the first member.
#[test]
fn maglev_after_a_heavy_endpoint_leaves_is_fair() {
    let balancer = &hashers()[0];
    let mut list = listed(members(&[1, 1, 100]).iter());
    let (all, _) = list.publish();
    let picker = balancer.picker(&all);
    list.swap_remove(2);
    let (left, changes) = list.publish();
    let picker = followed(balancer, &*picker, &left, &changes.unwrap());
    for share in key_shares(&*picker, &left, 10_000) {
        assert!((share - 0.5).abs() < 0.05, "share {share}");
    }
}

/// A set that grows many times over in one batch: the old members do not
/// keep the rounding left-overs of the new ones' shares.
#[test]
fn maglev_after_a_large_growth_keeps_the_old_members_to_their_share() {
    let balancer = &hashers()[0];
    let pool = members(&[1; 1_500]);
    let mut list = listed(pool.iter().take(50));
    let (all, _) = list.publish();
    let picker = balancer.picker(&all);
    for m in pool.iter().skip(50) {
        list.push(m.clone());
    }
    let (grown, changes) = list.publish();
    let picker = followed(balancer, &*picker, &grown, &changes.unwrap());
    let shares = key_shares(&*picker, &grown, 30_000);
    let old: f64 = shares[..50].iter().sum();
    let fair = 50.0 / 1_500.0;
    assert!(old < fair * 1.2, "the first 50 hold {old}, fair {fair}");
}
