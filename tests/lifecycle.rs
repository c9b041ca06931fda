//! One attempt's whole life, against real servers on 127.0.0.1 and a real
//! reqwest client: a black hole is bounded by the default timeouts and
//! ejected, a body cut short after its head is the endpoint's failure, a
//! streaming response stays in flight until its body ends, and a caller's
//! own timeout is recorded as the endpoint's wait.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::faulty::{BlackHole, Close, CutShort, Streaming};
use support::greet::GreetServer;
use support::instances::{start_instances, stop_all, urls};
use support::pool::endpoint_stats;
use support::requests::get_request;
use support::{bounded, reqwest_client, wait_until};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_lb::health::{HealthState, OutlierDetection};
use tower_lb::retry::RetryLayer;
use tower_lb::stats::EndpointStats;
use tower_lb::{Error, LoadBalanceLayer, Pool, discover::Fixed};

const REQUESTS: usize = 2_000;
const CONCURRENCY: usize = 32;

/// What a load of calls produced.
#[derive(Debug, Default)]
struct Load {
    ok: usize,
    /// Each failed call's error, as text (`send: ...` or `body: ...`).
    failures: Vec<String>,
    /// The longest call, from sending to the last byte of its body.
    slowest: Duration,
}

/// Sends `n` `GET url` through `client` from `tasks` tasks at once, each
/// call read to the end of its body and timed on the real clock.
async fn load<S>(client: S, n: usize, tasks: usize, url: &'static str) -> Load
where
    S: Service<reqwest::Request, Response = reqwest::Response, Error = Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let client = client.clone();
        let next = next.clone();
        handles.push(tokio::spawn(async move {
            let mut load = Load::default();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let started = Instant::now();
                let call = client.clone().oneshot(get_request(url));
                let outcome = async {
                    let response = call.await.map_err(|e| format!("send: {e}"))?;
                    if response.status() != 200 {
                        return Err(format!("status {}", response.status()));
                    }
                    response.bytes().await.map_err(|e| format!("body: {e:?}"))?;
                    Ok(())
                }
                .await;
                load.slowest = load.slowest.max(started.elapsed());
                match outcome {
                    Ok(()) => load.ok += 1,
                    Err(e) => load.failures.push(e),
                }
            }
            load
        }));
    }
    let mut total = Load::default();
    for handle in handles {
        let part = handle.await.expect("a load task panicked");
        total.ok += part.ok;
        total.failures.extend(part.failures);
        total.slowest = total.slowest.max(part.slowest);
    }
    total
}

fn stats_of(pool: &Pool, url: &str) -> EndpointStats {
    endpoint_stats(pool, url).expect("the endpoint is a member of the pool")
}

fn json(pool: &Pool) -> String {
    serde_json::to_string(&pool.stats()).expect("stats serialize")
}

/// True when `pool` would not send a request to `url` now.
fn not_eligible(pool: &Pool, url: &str) -> bool {
    let key = tower_lb::Endpoint::new(url).expect("a valid endpoint");
    !pool
        .eligible_endpoints()
        .iter()
        .any(|e| e.same_instance(&key))
}

/// Every default at once: no reqwest timeout, the retry layer's 5 s
/// attempt timeout and 15 s deadline, round robin, outlier detection. A
/// server that accepts connections and never answers costs each call that
/// meets it one attempt timeout, no more, and is ejected after five.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_is_bounded_and_ejected_by_default() {
    let test = async {
        let instances = start_instances(2).await;
        let hole = BlackHole::start().await.expect("start the black hole");
        let mut all = urls(&instances);
        all.push(hole.url());
        let pool = Pool::builder("greet", Fixed::new(all).unwrap()).build();
        let lb = LoadBalanceLayer::builder()
            .pool(pool.clone())
            .build()
            .unwrap();
        let client = ServiceBuilder::new()
            .layer(RetryLayer::new())
            .layer(lb)
            .service(reqwest_client());

        let started = Instant::now();
        let load = load(
            client,
            REQUESTS,
            CONCURRENCY,
            "http://greet/api/greet?name=hole",
        )
        .await;
        let took = started.elapsed();
        let hole_stats = stats_of(&pool, &hole.url());
        eprintln!(
            "black hole: {} ok, {} failed, slowest call {:?}, load took {took:?}, \
             {} connections accepted; stats {}",
            load.ok,
            load.failures.len(),
            load.slowest,
            hole.accepted(),
            json(&pool)
        );

        assert!(
            load.failures.len() <= 2,
            "{} of {REQUESTS} calls failed: {:?}",
            load.failures.len(),
            &load.failures[..load.failures.len().min(10)]
        );
        assert_eq!(load.ok + load.failures.len(), REQUESTS);
        let bound = tower_lb::retry::DEFAULT_DEADLINE + Duration::from_secs(3);
        assert!(
            load.slowest < bound,
            "the slowest call took {:?}, past the default deadline",
            load.slowest
        );
        assert!(hole.accepted() > 0, "the black hole was never tried");
        assert!(
            hole_stats.failures > 0,
            "no failure recorded: {}",
            json(&pool)
        );
        assert!(
            hole_stats.times_ejected >= 1 && hole_stats.health != HealthState::Healthy,
            "the black hole is still in rotation: {}",
            json(&pool)
        );
        assert!(not_eligible(&pool, &hole.url()), "{}", json(&pool));
        assert_eq!(hole_stats.in_flight, 0, "{}", json(&pool));
        stop_all(instances).await;
    };
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("the black-hole test finishes within 60 s");
}

/// Without a retry layer the balancer's own timeout bounds a request that
/// never gets an answer, and counts it against the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_without_retries_ends_in_the_balancers_timeout() {
    const CALLS: u64 = 4;
    let hole = BlackHole::start().await.expect("start the black hole");
    let pool = Pool::builder("hole", Fixed::new([hole.url()]).unwrap()).build();
    let lb = LoadBalanceLayer::builder()
        .pool(pool.clone())
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let client = ServiceBuilder::new().layer(lb).service(reqwest_client());
    for i in 0..CALLS {
        let started = Instant::now();
        let result = bounded(
            "a call to the black hole",
            client.clone().oneshot(get_request("http://hole/api/greet")),
        )
        .await;
        let took = started.elapsed();
        match result {
            Err(Error::AttemptTimeout { endpoint, .. }) => {
                let endpoint = endpoint.expect("the timeout names its endpoint");
                assert_eq!(endpoint.key(), hole.url());
            }
            other => panic!("call {i}: expected an attempt timeout, got {other:?}"),
        }
        assert!(took < Duration::from_secs(5), "call {i} took {took:?}");
    }
    let stats = stats_of(&pool, &hole.url());
    assert_eq!(stats.failures, CALLS, "{}", json(&pool));
    assert_eq!(stats.requests, CALLS, "{}", json(&pool));
    assert_eq!(stats.in_flight, 0, "{}", json(&pool));
    assert!(hole.accepted() > 0);
}

/// Through `retry` over the balancer's defaults: 2,000 GETs at 32 at once
/// against two greet instances and one that sends a `200` head and closes
/// the connection short of the promised body. Returns the calls that
/// failed; asserts the cut-short instance was tried, counted and ejected.
async fn cut_short_run(retry: RetryLayer, label: &str) -> usize {
    let instances = start_instances(2).await;
    let cut = CutShort::start(1000, 10, Close::Fin)
        .await
        .expect("start the cut-short server");
    let mut all = urls(&instances);
    all.push(cut.url());
    let pool = Pool::builder("greet", Fixed::new(all).unwrap()).build();
    let lb = LoadBalanceLayer::builder()
        .pool(pool.clone())
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(retry)
        .layer(lb)
        .service(reqwest_client());

    let started = Instant::now();
    let load = load(
        client,
        REQUESTS,
        CONCURRENCY,
        "http://greet/api/greet?name=cut",
    )
    .await;
    let took = started.elapsed();
    let cut_stats = stats_of(&pool, &cut.url());
    let body_errors = load
        .failures
        .iter()
        .filter(|f| f.starts_with("body"))
        .count();
    eprintln!(
        "cut short ({label}): {} ok, {} failed ({body_errors} in the body), slowest call {:?}, \
         load took {took:?}, {} answers cut short; stats {}",
        load.ok,
        load.failures.len(),
        load.slowest,
        cut.hits(),
        json(&pool)
    );
    assert!(cut.hits() > 0, "the cut-short server was never tried");
    assert!(
        cut_stats.failures > 0,
        "no failure recorded: {}",
        json(&pool)
    );
    assert!(
        cut_stats.times_ejected >= 1 && not_eligible(&pool, &cut.url()),
        "the cut-short server is still in rotation: {}",
        json(&pool)
    );
    assert_eq!(cut_stats.in_flight, 0, "{}", json(&pool));
    assert_eq!(load.ok + load.failures.len(), REQUESTS);
    stop_all(instances).await;
    load.failures.len()
}

/// With the defaults, the retry layer cannot take back a head it has
/// returned: the caller sees the body errors of the calls that reached the
/// instance before it was ejected. They are the endpoint's failures and
/// eject it after five, so the caller sees at most the failure threshold
/// plus the calls already in flight to it (measured here: 13 to 23 of
/// 2,000, about 1%, at 32 at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_after_headers_is_the_endpoints_failure() {
    let failed = tokio::time::timeout(
        Duration::from_secs(60),
        cut_short_run(RetryLayer::new(), "defaults"),
    )
    .await
    .expect("the cut-short test finishes within 60 s");
    let threshold = 5;
    assert!(
        failed <= threshold + CONCURRENCY,
        "{failed} of {REQUESTS} calls failed, more than the threshold plus the calls in flight"
    );
}

/// With small answers buffered inside the attempt, a body cut short is a
/// failed attempt like any other: retried elsewhere, never seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_after_headers_is_retried_when_bodies_are_buffered() {
    let retry = RetryLayer::builder()
        .buffer_responses(64 * 1024)
        .build()
        .unwrap();
    let failed = tokio::time::timeout(Duration::from_secs(60), cut_short_run(retry, "buffered"))
        .await
        .expect("the cut-short test finishes within 60 s");
    assert!(
        failed <= REQUESTS / 1000,
        "{failed} of {REQUESTS} calls failed"
    );
}

/// A response whose body the server streams: in flight from the pick to
/// the last byte, counted as finished only then; dropped unread, it ends
/// its flight at once and the head's verdict stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_response_counts_in_flight_until_its_body_ends() {
    let server = Streaming::start()
        .await
        .expect("start the streaming server");
    let url = server.url();
    let pool = Pool::builder("stream", Fixed::new([url.clone()]).unwrap()).build();
    let lb = LoadBalanceLayer::builder()
        .pool(pool.clone())
        .build()
        .unwrap();
    let client = ServiceBuilder::new().layer(lb).service(reqwest_client());

    // Read to the end.
    let call = tokio::spawn(client.clone().oneshot(get_request("http://stream/feed")));
    let chunks = server.next_request().await;
    chunks
        .send(Bytes::from_static(b"first "))
        .await
        .expect("the body is open");
    let mut response = bounded("the response head", call)
        .await
        .expect("the call task")
        .expect("a response head");
    assert_eq!(response.status(), 200);
    let stats = stats_of(&pool, &url);
    assert_eq!(
        (stats.in_flight, stats.requests),
        (1, 0),
        "after the head: {}",
        json(&pool)
    );
    let first = bounded("the first chunk", response.chunk())
        .await
        .expect("a chunk")
        .expect("not the end yet");
    assert_eq!(&first[..], b"first ");
    let stats = stats_of(&pool, &url);
    assert_eq!(
        (stats.in_flight, stats.requests),
        (1, 0),
        "after a chunk: {}",
        json(&pool)
    );
    chunks
        .send(Bytes::from_static(b"last"))
        .await
        .expect("the body is open");
    drop(chunks);
    let rest = bounded("the rest of the body", response.bytes())
        .await
        .expect("the whole body");
    assert_eq!(&rest[..], b"last");
    wait_until("the read-out response is finished", || {
        let stats = stats_of(&pool, &url);
        (stats.in_flight, stats.requests) == (0, 1)
    })
    .await;
    assert_eq!(stats_of(&pool, &url).failures, 0, "{}", json(&pool));

    // Dropped before its body is read.
    let call = tokio::spawn(client.clone().oneshot(get_request("http://stream/feed")));
    let chunks = server.next_request().await;
    chunks
        .send(Bytes::from_static(b"never read"))
        .await
        .expect("the body is open");
    let response = bounded("the second response head", call)
        .await
        .expect("the call task")
        .expect("a response head");
    let stats = stats_of(&pool, &url);
    assert_eq!(
        (stats.in_flight, stats.requests),
        (1, 1),
        "after the second head: {}",
        json(&pool)
    );
    drop(response);
    wait_until("the dropped response ends its flight", || {
        stats_of(&pool, &url).in_flight == 0
    })
    .await;
    let stats = stats_of(&pool, &url);
    assert_eq!(stats.requests, 2, "{}", json(&pool));
    assert_eq!(
        stats.failures,
        0,
        "a caller that stops reading is not the endpoint's failure: {}",
        json(&pool)
    );
    // The server was left holding its sender: the body never ended there.
    drop(chunks);
}

/// A caller that bounds calls with its own `tokio::time::timeout` and gives
/// up after 1.2 s: past the pool's 1 s cancellation timeout, each is the
/// endpoint's timeout, its wait a latency sample, and three eject it. A
/// caller giving up after 50 ms, well before the cancellation timeout, is
/// not the endpoint's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_own_timeout_is_recorded() {
    let slow = GreetServer::start("slow")
        .await
        .expect("start a greet server");
    slow.set_delay(Duration::from_secs(2));
    // Slower than the impatient caller's 50 ms, quicker than the 1 s
    // cancellation timeout.
    let quick = GreetServer::start("quick")
        .await
        .expect("start a greet server");
    quick.set_delay(Duration::from_millis(400));
    let lb = LoadBalanceLayer::builder()
        .service("slow", Fixed::new([slow.url()]).unwrap())
        .service("quick", Fixed::new([quick.url()]).unwrap())
        // Each pool has one endpoint: a cap of 100% lets it be ejected
        // (50%, the default, ejects none of one).
        .configure_pools(|pool| {
            pool.outlier_detection(
                OutlierDetection::new()
                    .consecutive_failures(3)
                    .max_ejected_percent(100),
            )
        })
        .build()
        .unwrap();
    let slow_pool = lb.pool("slow").unwrap().clone();
    let quick_pool = lb.pool("quick").unwrap().clone();
    let client = ServiceBuilder::new().layer(lb).service(reqwest_client());

    for i in 0..3 {
        let result = tokio::time::timeout(
            Duration::from_millis(1200),
            client
                .clone()
                .oneshot(get_request("http://slow/api/greet?name=late")),
        )
        .await;
        assert!(result.is_err(), "call {i} beat the caller's timeout");
        wait_until("the abandoned call ends its flight", || {
            stats_of(&slow_pool, &slow.url()).in_flight == 0
        })
        .await;
    }
    let stats = stats_of(&slow_pool, &slow.url());
    eprintln!("slow: {}", json(&slow_pool));
    assert_eq!(stats.failures, 3, "{}", json(&slow_pool));
    assert_eq!(stats.in_flight, 0);
    let latency = stats.latency_ms.expect("the waits are latency samples");
    assert!(
        latency >= 1000.0,
        "latency {latency} ms: {}",
        json(&slow_pool)
    );
    wait_until("the slow endpoint is ejected", || {
        let stats = stats_of(&slow_pool, &slow.url());
        stats.times_ejected >= 1 && stats.health == HealthState::Ejected
    })
    .await;

    let result = tokio::time::timeout(
        Duration::from_millis(50),
        client
            .clone()
            .oneshot(get_request("http://quick/api/greet?name=impatient")),
    )
    .await;
    assert!(result.is_err(), "the quick call beat the 50 ms timeout");
    wait_until("the impatient call ends its flight", || {
        stats_of(&quick_pool, &quick.url()).in_flight == 0
    })
    .await;
    let stats = stats_of(&quick_pool, &quick.url());
    eprintln!("quick: {}", json(&quick_pool));
    assert_eq!(stats.failures, 0, "{}", json(&quick_pool));
    assert_eq!(stats.health, HealthState::Healthy);
    assert_eq!(stats.times_ejected, 0);
    assert!(
        stats.latency_ms.is_some(),
        "the wait is a latency sample: {}",
        json(&quick_pool)
    );
    slow.stop().await;
    quick.stop().await;
}
