//! The retry layer against real servers on 127.0.0.1, through reqwest and
//! hyper-util: failover across instances, what a POST may retry, the
//! budget in a total outage, bodies too large to replay.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::{ServiceBuilder, ServiceExt};
use tower_lb::classify::{Retryable, retryable_error};
use tower_lb::discover::Fixed;
use tower_lb::retry::{
    Attempts, NotReplayable, NotRetried, ReplayBody, Retry, RetryBudget, RetryLayer,
};
use tower_lb::{Endpoint, Error, LoadBalance, LoadBalanceLayer};

use support::greet::GreetServer;
use support::retry::{no_repeat_in_a_row, refusing_url};

/// Bound for any one test's run.
const LIMIT: Duration = Duration::from_secs(60);

type ReqwestClient = Retry<LoadBalance<reqwest::Client>>;

async fn reqwest_stack(urls: Vec<String>, retry: RetryLayer) -> ReqwestClient {
    let lb = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(urls).expect("valid urls"))
        .build()
        .expect("a valid layer");
    lb.pool("greet").unwrap().ready().await.unwrap();
    ServiceBuilder::new()
        .layer(retry)
        .layer(lb)
        .service(support::reqwest_client())
}

fn request(method: Method, body: Option<&'static str>) -> reqwest::Request {
    let mut request =
        reqwest::Request::new(method, "http://greet/api/greet?name=Retry".parse().unwrap());
    if let Some(body) = body {
        *request.body_mut() = Some(body.into());
    }
    request
}

fn attempts(response: &reqwest::Response) -> Attempts {
    response
        .extensions()
        .get::<Attempts>()
        .cloned()
        .expect("Attempts on every response")
}

fn endpoint_of(url: &str) -> Endpoint {
    Endpoint::new(url).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_gets_succeed_past_a_refusing_and_a_failing_instance() {
    const CALLS: usize = 10_000;
    const FAILING_FOR: u64 = 3_000;
    let refusing = refusing_url();
    let failing = GreetServer::start("failing").await.unwrap();
    let healthy = GreetServer::start("healthy").await.unwrap();
    failing.set_status(Some(503));
    // The default budget allows 20% retries: with one instance of three
    // refusing and another answering 503, two calls in three need a retry
    // (until outlier detection ejects one of them), so this test grants a
    // budget of one retry per call; the budget is tested on its own below.
    let retry = RetryLayer::builder()
        .budget(RetryBudget::new(Duration::from_secs(10), 10, 1.0))
        .build()
        .unwrap();
    let client = reqwest_stack(vec![refusing.clone(), failing.url(), healthy.url()], retry).await;

    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(Semaphore::new(32));
    let mut calls = JoinSet::new();
    let control = failing.control();
    for _ in 0..CALLS {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let client = client.clone();
        let done = done.clone();
        let control = control.clone();
        calls.spawn(async move {
            let response = client.oneshot(request(Method::GET, None)).await;
            // "For a while": the failing instance recovers part way.
            if done.fetch_add(1, Ordering::SeqCst) + 1 == FAILING_FOR {
                control.set_status(None);
            }
            drop(permit);
            response
        });
    }
    let (mut retried, mut extra) = (0, 0);
    while let Some(result) = tokio::time::timeout(LIMIT, calls.join_next())
        .await
        .unwrap()
    {
        let response = result.unwrap().expect("every call succeeds");
        assert_eq!(response.status(), StatusCode::OK);
        let attempts = attempts(&response);
        assert!(attempts.count() <= 3, "{attempts:?}");
        assert!(no_repeat_in_a_row(attempts.endpoints()), "{attempts:?}");
        let last = attempts.endpoints().last().expect("the answering endpoint");
        assert!(
            last.same_instance(&endpoint_of(&healthy.url()))
                || last.same_instance(&endpoint_of(&failing.url()))
        );
        if attempts.count() > 1 {
            retried += 1;
            extra += attempts.count() - 1;
        }
    }
    println!(
        "{CALLS} calls in {:?}: {retried} retried, {extra} retries; failing instance hit {} times",
        started.elapsed(),
        failing.hits()
    );
    assert!(retried > 0, "the failures were met and hidden");
    failing.stop().await;
    healthy.stop().await;
}

/// A server that reads a request's head and hangs up without answering:
/// the request was sent, the answer never came.
async fn hang_up_server() -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                // Dropping the stream closes the connection unanswered.
            });
        }
    });
    (url, requests)
}

#[tokio::test]
async fn a_post_is_retried_only_when_the_connection_was_refused() {
    let healthy = GreetServer::start("healthy").await.unwrap();
    let refusing = refusing_url();

    // Refused: nothing was sent, so even a POST goes again, elsewhere.
    let client = reqwest_stack(vec![refusing.clone(), healthy.url()], RetryLayer::new()).await;
    let mut retried = 0;
    for _ in 0..4 {
        let response = client
            .clone()
            .oneshot(request(Method::POST, Some("order")))
            .await
            .expect("the POST reaches the healthy instance");
        let attempts = attempts(&response);
        if attempts.count() == 2 {
            retried += 1;
            assert!(attempts.endpoints()[0].same_instance(&endpoint_of(&refusing)));
        }
    }
    // Round robin: a retried call takes two picks, so the next call meets
    // the refusing instance first again.
    assert!(retried >= 3, "{retried} POSTs retried");
    assert_eq!(healthy.hits(), 4);

    // Sent, then answered 503: the POST may have been processed; not retried.
    let failing = GreetServer::start("failing").await.unwrap();
    failing.set_status(Some(503));
    let client = reqwest_stack(vec![failing.url(), healthy.url()], RetryLayer::new()).await;
    let (before_failing, before_healthy) = (failing.hits(), healthy.hits());
    for _ in 0..4 {
        let response = client
            .clone()
            .oneshot(request(Method::POST, Some("order")))
            .await
            .unwrap();
        assert_eq!(attempts(&response).count(), 1);
    }
    assert_eq!(failing.hits() - before_failing, 2);
    assert_eq!(healthy.hits() - before_healthy, 2);
    // A GET meeting the same 503 is retried on the healthy instance.
    for _ in 0..4 {
        let response = client
            .clone()
            .oneshot(request(Method::GET, None))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    // Sent, then the connection dropped without an answer: same verdict.
    let (hang_up, hung_up) = hang_up_server().await;
    let client = reqwest_stack(vec![hang_up.clone(), healthy.url()], RetryLayer::new()).await;
    let mut failed_posts = 0;
    for _ in 0..4 {
        match client
            .clone()
            .oneshot(request(Method::POST, Some("order")))
            .await
        {
            Ok(response) => assert_eq!(attempts(&response).count(), 1),
            Err(error) => {
                failed_posts += 1;
                assert!(matches!(error, Error::Inner { .. }), "{error:?}");
                assert!(
                    error
                        .endpoint()
                        .unwrap()
                        .same_instance(&endpoint_of(&hang_up))
                );
            }
        }
    }
    assert_eq!(failed_posts, 2);
    assert_eq!(hung_up.load(Ordering::SeqCst), 2, "no POST was sent twice");
    let mut retried_gets = 0;
    for _ in 0..4 {
        let response = client
            .clone()
            .oneshot(request(Method::GET, None))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let attempts = attempts(&response);
        if attempts.count() == 2 {
            retried_gets += 1;
            assert!(attempts.endpoints()[0].same_instance(&endpoint_of(&hang_up)));
        }
    }
    assert!(retried_gets >= 1);
    assert_eq!(hung_up.load(Ordering::SeqCst), 2 + retried_gets);
    failing.stop().await;
    healthy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_total_outage_spends_the_budget_and_fails_fast() {
    const CALLS: u32 = 1_000;
    let client = reqwest_stack((0..3).map(|_| refusing_url()).collect(), RetryLayer::new()).await;
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(50));
    let mut calls = JoinSet::new();
    for _ in 0..CALLS {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let client = client.clone();
        calls.spawn(async move {
            let started = Instant::now();
            let result = client.oneshot(request(Method::GET, None)).await;
            drop(permit);
            (result, started.elapsed())
        });
    }
    let (mut attempts, mut budget_errors, mut slowest) = (0, 0, Duration::ZERO);
    while let Some(joined) = tokio::time::timeout(LIMIT, calls.join_next())
        .await
        .unwrap()
    {
        let (result, elapsed) = joined.unwrap();
        slowest = slowest.max(elapsed);
        let error = result.expect_err("nothing is up");
        // A clear error: the service, the verdict, the refusal underneath.
        let client_error = error.inner().expect("the client's error underneath");
        assert_eq!(
            retryable_error(client_error),
            Retryable::NotSent,
            "{error:?}"
        );
        assert!(error.to_string().contains("service `greet`"), "{error}");
        attempts += match &error {
            Error::BudgetExhausted { attempts, .. } => {
                budget_errors += 1;
                assert!(
                    error.to_string().contains("retry budget is spent"),
                    "{error}"
                );
                *attempts
            }
            Error::RetriesExhausted { attempts, .. } => *attempts,
            other => panic!("unexpected {other:?}"),
        };
    }
    let extra = attempts - CALLS;
    // 20% of the calls, plus the floor of 10 per second over the 10 s window.
    let cap = CALLS / 5 + 100;
    println!(
        "{CALLS} calls in a total outage: {extra} retries (cap {cap}), {budget_errors} stopped by the budget, \
         slowest call {slowest:?}, all in {:?}",
        started.elapsed()
    );
    assert!(extra <= cap, "{extra} retries for {CALLS} calls");
    assert!(extra >= 100, "the budget was spent, not unused: {extra}");
    assert!(budget_errors > 0);
    // Fast next to the 15 s deadline; a wide bound, as a loaded 2-core
    // machine may stall any one call (the figure is printed above).
    assert!(slowest < Duration::from_secs(10), "{slowest:?}");
}

type HyperClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    ReplayBody<Full<Bytes>>,
>;

async fn hyper_stack(urls: Vec<String>) -> Retry<LoadBalance<HyperClient>> {
    let lb = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(urls).expect("valid urls"))
        .build()
        .unwrap();
    lb.pool("greet").unwrap().ready().await.unwrap();
    let client: HyperClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(lb)
        .service(client)
}

fn put(size: usize) -> http::Request<Full<Bytes>> {
    http::Request::put("http://greet/api/greet")
        .body(Full::new(Bytes::from(vec![b'x'; size])))
        .unwrap()
}

#[tokio::test]
async fn bodies_above_the_limit_are_sent_once_and_say_why() {
    let a = GreetServer::start("a").await.unwrap();
    let b = GreetServer::start("b").await.unwrap();
    a.set_status(Some(503));
    b.set_status(Some(503));
    let client = hyper_stack(vec![a.url(), b.url()]).await;

    // 100 KiB: over the 64 KiB default; answered 503, not retried, and why.
    let response = client.clone().oneshot(put(100 * 1024)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let attempts = response.extensions().get::<Attempts>().unwrap();
    assert_eq!(attempts.count(), 1);
    assert_eq!(
        attempts.not_retried(),
        Some(&NotRetried::NotReplayable(NotReplayable::TooLarge {
            limit: 64 * 1024,
            size: 100 * 1024
        }))
    );
    assert_eq!(a.hits() + b.hits(), 1);

    // 1 KiB: buffered and sent to both instances, then the third attempt.
    let response = client.clone().oneshot(put(1024)).await.unwrap();
    let attempts = response.extensions().get::<Attempts>().unwrap();
    assert_eq!(attempts.count(), 3);
    assert_eq!(attempts.not_retried(), Some(&NotRetried::AttemptsExhausted));
    assert!(no_repeat_in_a_row(attempts.endpoints()));
    assert_eq!(a.hits() + b.hits(), 4);

    // Refused with a large body: the error says the body kept it from
    // going elsewhere.
    let healthy = GreetServer::start("healthy").await.unwrap();
    let client = hyper_stack(vec![refusing_url(), healthy.url()]).await;
    let mut not_replayable = 0;
    for _ in 0..4 {
        match client.clone().oneshot(put(100 * 1024)).await {
            Ok(response) => assert_eq!(response.status(), StatusCode::NOT_FOUND),
            Err(error) => {
                not_replayable += 1;
                assert!(
                    matches!(
                        error,
                        Error::BodyNotReplayable {
                            reason: NotReplayable::TooLarge { .. },
                            ..
                        }
                    ),
                    "{error:?}"
                );
                let message = error.to_string();
                assert!(message.contains("service `greet`"), "{message}");
                assert!(message.contains("replay limit of 65536 bytes"), "{message}");
            }
        }
    }
    assert_eq!(not_replayable, 2);
    a.stop().await;
    b.stop().await;
    healthy.stop().await;
}
