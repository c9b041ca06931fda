//! The retry layer on tokio's paused clock: timing-exact tests of
//! Retry-After, deadlines, timeouts and hedging, with in-memory instances
//! behind a real `LoadBalance` layer (round robin).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_lb::retry::{
    Backoff, Hedge, NotReplayable, NotRetried, Policy, RetryBudget, RetryFuture, RetryLayer,
    RetryMode,
};
use tower_lb::{Error, TrackedBody};

use support::retry::{Instances, Reply, attempts_of, get, no_repeat_in_a_row, percentile, post};

/// A bound for each test's whole run, on the paused clock (which jumps):
/// generous, but a hang fails.
const LIMIT: Duration = Duration::from_secs(600);

async fn client(
    instances: &Instances,
    retry: RetryLayer,
    note: bool,
) -> impl Service<
    http::Request<String>,
    Response = http::Response<TrackedBody<String>>,
    Error = Error,
    Future = RetryFuture<http::Response<TrackedBody<String>>>,
>
+ Clone
+ Send
+ 'static
+ use<> {
    let balancer = instances.balancer();
    // Discovery's first answer: from then on every pick happens in `call`.
    balancer.pool("greet").unwrap().ready().await.unwrap();
    ServiceBuilder::new()
        .layer(retry)
        .layer(balancer)
        .service(instances.service(note))
}

async fn timed<F: std::future::Future>(f: F) -> (F::Output, Duration) {
    let start = Instant::now();
    let out = tokio::time::timeout(LIMIT, f)
        .await
        .expect("the call finished");
    (out, start.elapsed())
}

/// Within the timer's 1 ms granularity of `expected`.
fn about(actual: Duration, expected: Duration) -> bool {
    actual >= expected && actual <= expected + Duration::from_millis(2)
}

#[tokio::test(start_paused = true)]
async fn retry_after_seconds_is_honoured() {
    let instances = Instances::new(1, |_, n, _| match n {
        0 => Reply::status(503).header("retry-after", "2"),
        _ => Reply::ok(),
    });
    let client = client(&instances, RetryLayer::new(), false).await;
    let (response, elapsed) = timed(client.oneshot(get())).await;
    let response = response.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(attempts_of(response.extensions()).count(), 2);
    // The wait is the larger of the backoff (at most 25 ms) and 2 s.
    assert!(about(elapsed, Duration::from_secs(2)), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn retry_after_date_is_honoured() {
    let instances = Instances::new(1, |_, n, _| match n {
        0 => Reply::status(429).header(
            "retry-after",
            httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3)),
        ),
        _ => Reply::ok(),
    });
    let client = client(&instances, RetryLayer::new(), false).await;
    let (response, elapsed) = timed(client.oneshot(get())).await;
    assert_eq!(response.unwrap().status(), StatusCode::OK);
    // HTTP dates have whole seconds: between 2 and 3 s from now.
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed <= Duration::from_millis(3002),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_the_cap_is_returned_at_once() {
    let instances = Instances::new(2, |_, _, _| Reply::status(503).header("retry-after", "60"));
    let client = client(&instances, RetryLayer::new(), false).await;
    let (response, elapsed) = timed(client.oneshot(get())).await;
    let response = response.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let attempts = attempts_of(response.extensions());
    assert_eq!(attempts.count(), 1);
    assert_eq!(
        attempts.not_retried(),
        Some(&NotRetried::RetryAfterTooLong(Duration::from_secs(60)))
    );
    assert_eq!(elapsed, Duration::ZERO);
    assert_eq!(instances.total_hits(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_never_overrun() {
    let instances = Instances::new(3, |_, _, _| {
        Reply::status(503).after(Duration::from_millis(7))
    });
    let cap = Duration::from_millis(200);
    let retry = RetryLayer::builder()
        .max_attempts(100)
        .budget(RetryBudget::unlimited())
        .backoff(Backoff::new(Duration::from_millis(50), cap))
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let client = client(&instances, retry, false).await;
    let (mut answered, mut cut) = (0, 0);
    for _ in 0..50 {
        let (result, elapsed) = timed(client.clone().oneshot(get())).await;
        // Never past the deadline (within the timer's 1 ms tick).
        assert!(elapsed <= Duration::from_millis(1001), "{elapsed:?}");
        match result {
            // Stopped because the next wait would pass the deadline: no
            // earlier than one backoff tick (and one attempt) before it.
            Ok(response) => {
                answered += 1;
                assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
                let attempts = attempts_of(response.extensions());
                assert_eq!(attempts.not_retried(), Some(&NotRetried::Deadline));
                assert!(attempts.count() >= 4, "{attempts:?}");
                assert!(elapsed + cap >= Duration::from_secs(1), "{elapsed:?}");
                assert!(no_repeat_in_a_row(attempts.endpoints()), "{attempts:?}");
            }
            // A retry that started in time, cut by the deadline.
            Err(Error::DeadlineExceeded {
                attempts,
                endpoints,
                ..
            }) => {
                cut += 1;
                assert!(about(elapsed, Duration::from_secs(1)), "{elapsed:?}");
                assert!(attempts >= 4);
                assert!(no_repeat_in_a_row(&endpoints), "{endpoints:?}");
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(answered + cut, 50);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_a_stalled_attempt_and_names_the_attempts() {
    let instances = Instances::new(3, |_, _, _| Reply::ok().after(Duration::from_secs(10)));
    let retry = RetryLayer::builder()
        .attempt_timeout(Duration::from_millis(300))
        .deadline(Duration::from_secs(1))
        .max_attempts(10)
        .build()
        .unwrap();
    // `note`: the instances tell the retry layer where each attempt went,
    // so timed-out attempts have endpoints too.
    let client = client(&instances, retry, true).await;
    let (result, elapsed) = timed(client.oneshot(get())).await;
    let error = result.unwrap_err();
    // Cut at the deadline, or stopped when the next backoff would pass it.
    assert!(elapsed <= Duration::from_millis(1001), "{elapsed:?}");
    assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
    let Error::DeadlineExceeded {
        attempts,
        endpoints,
        source,
        ..
    } = &error
    else {
        panic!("expected DeadlineExceeded, got {error:?}");
    };
    assert!(*attempts >= 3, "{error}");
    assert_eq!(endpoints.len() as u32, *attempts, "{error}");
    assert!(no_repeat_in_a_row(endpoints), "{error}");
    assert!(
        matches!(source.as_deref(), Some(Error::AttemptTimeout { .. })),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("service `greet`"), "{message}");
    assert!(
        message.contains(&format!("after {attempts} attempts")),
        "{message}"
    );
    assert!(message.contains("127.0.0.1:"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_post_is_not_retried_but_a_get_is() {
    // Instance 0 stalls; the others answer at once.
    let instances = Instances::new(2, |i, _, _| match i {
        0 => Reply::ok().after(Duration::from_secs(10)),
        _ => Reply::ok(),
    });
    let retry = RetryLayer::builder()
        .attempt_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let client = client(&instances, retry, true).await;
    let mut posts_timed_out = 0;
    for _ in 0..10 {
        match timed(client.clone().oneshot(post("order"))).await.0 {
            Ok(response) => assert_eq!(attempts_of(response.extensions()).count(), 1),
            Err(Error::AttemptTimeout { endpoint, .. }) => {
                posts_timed_out += 1;
                assert_eq!(endpoint.unwrap().key(), instances.urls()[0]);
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        posts_timed_out, 5,
        "round robin over two: half the POSTs stall"
    );
    for _ in 0..10 {
        let response = timed(client.clone().oneshot(get())).await.0.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_can_opt_out_or_in() {
    // The first request of all gets a 503, every later one a 200.
    let seen = Arc::new(AtomicU64::new(0));
    let first_fails = {
        let seen = seen.clone();
        move |_: usize, _: u64, _: &Method| match seen.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::status(503),
            _ => Reply::ok(),
        }
    };
    let instances = Instances::new(2, first_fails.clone());
    let client = client(&instances, RetryLayer::new(), false).await;

    let mut get = get();
    get.extensions_mut().insert(RetryMode::Off);
    let response = client.clone().oneshot(get).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts_of(response.extensions()).count(), 1);

    seen.store(0, Ordering::SeqCst);
    let response = client.clone().oneshot(post("once")).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a POST's 503 stays"
    );

    seen.store(0, Ordering::SeqCst);
    let mut keyed = post("keyed");
    keyed.extensions_mut().insert(RetryMode::Idempotent);
    let response = client.clone().oneshot(keyed).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let attempts = attempts_of(response.extensions());
    assert_eq!(attempts.count(), 2);
    assert!(no_repeat_in_a_row(attempts.endpoints()));
    // The body went out twice, once to each instance.
    assert_eq!(
        instances.bodies(0).iter().filter(|b| *b == "keyed").count(),
        1
    );
    assert_eq!(
        instances.bodies(1).iter().filter(|b| *b == "keyed").count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn the_policy_can_be_extended() {
    let instances = Instances::new(2, |_, _, _| Reply::status(500));
    let policy = Policy::new()
        .retry_status(StatusCode::INTERNAL_SERVER_ERROR)
        .retry_if(|request, _| (request.path() == "/no-retry").then_some(false));
    let retry = RetryLayer::builder().policy(policy).build().unwrap();
    let client = client(&instances, retry, false).await;
    let response = client.clone().oneshot(get()).await.unwrap();
    let attempts = attempts_of(response.extensions());
    assert_eq!(attempts.count(), 3);
    assert_eq!(attempts.not_retried(), Some(&NotRetried::AttemptsExhausted));

    let request = http::Request::get("http://greet/no-retry")
        .body(String::new())
        .unwrap();
    let response = client.clone().oneshot(request).await.unwrap();
    assert_eq!(attempts_of(response.extensions()).count(), 1);
    assert_eq!(attempts_of(response.extensions()).not_retried(), None);
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_returns_the_answer_marked() {
    let instances = Instances::new(2, |_, _, _| Reply::status(503));
    let retry = RetryLayer::builder()
        .budget(RetryBudget::new(Duration::from_secs(1), 0, 0.0))
        .build()
        .unwrap();
    let client = client(&instances, retry, false).await;
    let response = client.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let attempts = attempts_of(response.extensions());
    assert_eq!(attempts.count(), 1);
    assert_eq!(attempts.not_retried(), Some(&NotRetried::BudgetExhausted));
}

#[tokio::test(start_paused = true)]
async fn bodies_above_the_limit_are_sent_once_and_say_so() {
    let instances = Instances::new(2, |_, _, _| Reply::status(503));
    let retry = RetryLayer::builder().replay_limit(8).build().unwrap();
    let client = client(&instances, retry, false).await;
    let put = |body: &str| {
        http::Request::put("http://greet/api/greet")
            .body(body.to_owned())
            .unwrap()
    };
    let response = client.clone().oneshot(put("0123456789abc")).await.unwrap();
    let attempts = attempts_of(response.extensions());
    assert_eq!(attempts.count(), 1);
    assert_eq!(
        attempts.not_retried(),
        Some(&NotRetried::NotReplayable(NotReplayable::TooLarge {
            limit: 8,
            size: 13
        }))
    );
    assert_eq!(instances.total_hits(), 1);
    // Within the limit: retried, the same bytes each time.
    let response = client.clone().oneshot(put("small")).await.unwrap();
    assert_eq!(attempts_of(response.extensions()).count(), 3);
    let mut bodies = instances.bodies(0);
    bodies.extend(instances.bodies(1));
    assert_eq!(bodies.iter().filter(|b| *b == "small").count(), 3);
    assert_eq!(bodies.iter().filter(|b| *b == "0123456789abc").count(), 1);
}

/// Sends `n` GETs one after another; returns each call's latency.
async fn latencies(
    client: &(
         impl Service<
        http::Request<String>,
        Response = http::Response<TrackedBody<String>>,
        Error = Error,
    > + Clone
     ),
    n: usize,
) -> Vec<(Duration, u32)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (response, elapsed) = timed(client.clone().oneshot(get())).await;
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        out.push((elapsed, attempts_of(response.extensions()).hedges()));
    }
    out
}

fn p99(samples: &[(Duration, u32)]) -> Duration {
    let mut values: Vec<Duration> = samples.iter().map(|s| s.0).collect();
    percentile(&mut values, 99.0)
}

/// Instance 0 of `n` stalls for a second; the others answer in 10 ms.
fn one_stalls(n: usize) -> Instances {
    Instances::new(n, |i, _, _| match i {
        0 => Reply::ok().after(Duration::from_secs(1)),
        _ => Reply::ok().after(Duration::from_millis(10)),
    })
}

#[tokio::test(start_paused = true)]
async fn hedging_after_a_fixed_delay_cuts_the_p99() {
    let instances = one_stalls(3);
    let plain = client(&instances, RetryLayer::new(), false).await;
    let before = p99(&latencies(&plain, 300).await);
    assert_eq!(before, Duration::from_secs(1));

    let hedged = RetryLayer::builder()
        .hedge(Hedge::after(Duration::from_millis(50)))
        .build()
        .unwrap();
    let hedged = client(&instances, hedged, false).await;
    let hits_before = instances.hits(0);
    let samples = latencies(&hedged, 200).await;
    let after = p99(&samples);
    // 50 ms of waiting, then 10 ms at another instance.
    assert!(about(after, Duration::from_millis(60)), "p99 {after:?}");
    // Exactly the calls that met the stalled instance were hedged, each
    // once; every other call took its 10 ms.
    for (elapsed, hedges) in &samples {
        match hedges {
            0 => assert_eq!(*elapsed, Duration::from_millis(10)),
            1 => assert!(about(*elapsed, Duration::from_millis(60)), "{elapsed:?}"),
            n => panic!("{n} hedges in one call"),
        }
    }
    let hedges: u32 = samples.iter().map(|s| s.1).sum();
    assert_eq!(u64::from(hedges), instances.hits(0) - hits_before);
    println!("p99 without hedging {before:?}, with a 50 ms hedge {after:?}");
}

#[tokio::test(start_paused = true)]
async fn hedging_at_a_latency_percentile_cuts_the_p99() {
    // One instance of 25 stalls: 4% of calls, above the 1% a p99 shows.
    let instances = one_stalls(25);
    let plain = client(&instances, RetryLayer::new(), false).await;
    let before = p99(&latencies(&plain, 500).await);
    assert_eq!(before, Duration::from_secs(1));

    let hedged = RetryLayer::builder()
        .hedge(Hedge::percentile(95.0).min_samples(50))
        .build()
        .unwrap();
    let hedged = client(&instances, hedged, false).await;
    // Warm up: the percentile needs answers first.
    latencies(&hedged, 100).await;
    let after = p99(&latencies(&hedged, 500).await);
    // The p95 is the 10 ms bucket (its top, under 12.5% above): the hedge
    // leaves then and answers 10 ms later.
    assert!(
        after >= Duration::from_millis(20) && after <= Duration::from_micros(21_300),
        "p99 {after:?}"
    );
    println!("p99 without hedging {before:?}, hedging at p95 {after:?}");
}

#[tokio::test(start_paused = true)]
async fn hedges_spend_the_budget_and_skip_non_idempotent_requests() {
    let instances = one_stalls(3);
    let no_budget = RetryLayer::builder()
        .hedge(Hedge::after(Duration::from_millis(50)))
        .budget(RetryBudget::new(Duration::from_secs(1), 0, 0.0))
        .build()
        .unwrap();
    let client = client(&instances, no_budget, false).await;
    let samples = latencies(&client, 30).await;
    assert_eq!(samples.iter().map(|s| s.1).sum::<u32>(), 0);
    assert_eq!(p99(&samples), Duration::from_secs(1));

    let hedged = RetryLayer::builder()
        .hedge(Hedge::after(Duration::from_millis(50)))
        .build()
        .unwrap();
    let client = self::client(&instances, hedged, false).await;
    for _ in 0..6 {
        let (response, elapsed) = timed(client.clone().oneshot(post("x"))).await;
        let response = response.unwrap();
        assert_eq!(attempts_of(response.extensions()).hedges(), 0);
        assert!(elapsed == Duration::from_millis(10) || about(elapsed, Duration::from_secs(1)));
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_hedges_never_go_back_to_the_slow_endpoint() {
    let instances = one_stalls(3);
    let hedged = RetryLayer::builder()
        .hedge(Hedge::after(Duration::from_millis(50)))
        .budget(RetryBudget::unlimited())
        .build()
        .unwrap();
    // The instances note each attempt's endpoint as it is dispatched, so
    // the hedge knows where the slow attempt went.
    let client = client(&instances, hedged, true).await;
    let calls = (0..90).map(|_| {
        let client = client.clone();
        async move { timed(client.oneshot(get())).await }
    });
    let results = futures_join_all(calls).await;
    let mut hedges = 0;
    for (response, elapsed) in results {
        let response = response.unwrap();
        assert!(elapsed <= Duration::from_millis(62), "{elapsed:?}");
        hedges += attempts_of(response.extensions()).hedges();
    }
    // Every hit on the stalled instance was a primary that got hedged
    // elsewhere; no hedge landed on it.
    assert_eq!(u64::from(hedges), instances.hits(0));
}

/// Runs every future on this task, concurrently.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("the task finished"));
    }
    out
}

/// Attempts started close together share their timers: each still ends
/// within its wait/64 after its own timeout (here 2 s: at most 31.25 ms,
/// plus tokio's millisecond), none early, whichever group it joined, and
/// calls answered meanwhile are not disturbed.
#[tokio::test(start_paused = true)]
async fn stalled_attempts_that_share_timers_each_end_on_their_own_time() {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let instances = Instances::new(2, |i, _, _| match i {
        0 => Reply::ok().after(Duration::from_secs(3600)),
        _ => Reply::ok(),
    });
    let retry = RetryLayer::builder()
        .attempt_timeout(TIMEOUT)
        .max_attempts(1)
        .build()
        .unwrap();
    let client = client(&instances, retry, true).await;
    let mut calls = Vec::new();
    for i in 0..40u64 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            // Started 5 ms apart, the stalled ones 10 ms apart: up to
            // four share a group, later ones open the next.
            tokio::time::sleep(Duration::from_millis(5 * i)).await;
            timed(client.oneshot(post("order"))).await
        }));
    }
    let (mut stalled, mut answered) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            (Ok(response), elapsed) => {
                answered += 1;
                assert_eq!(response.status(), StatusCode::OK);
                assert_eq!(elapsed, Duration::ZERO);
            }
            (Err(Error::AttemptTimeout { timeout, .. }), elapsed) => {
                stalled += 1;
                assert_eq!(timeout, TIMEOUT);
                let late = elapsed.checked_sub(TIMEOUT).expect("ended early");
                assert!(
                    late <= TIMEOUT / 64 + Duration::from_millis(1),
                    "{late:?} late"
                );
            }
            (Err(other), _) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((stalled, answered), (20, 20), "round robin over two");
}
