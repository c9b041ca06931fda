//! The cost of the retry layer on the success path: a request that the
//! first attempt answers, through an in-memory service that answers `200`
//! at once. Nothing is retried; what is measured is the layer's overhead
//! (remembering the request so it could be sent again, the budget's
//! deposit, the response's `Attempts`), beside the peers on the same
//! service:
//!
//! - `http/*`: an `http::Request<String>` (a 64-byte body) through
//!   `tower_lb::retry::Retry`, through `tower-resilience`'s retry (which
//!   clones the request per attempt) and through nothing (`bare`).
//! - `reqwest/*`: a `reqwest::Request` (same body) through
//!   `tower_lb::retry::Retry` and through `reqwest-retry`'s
//!   `RetryTransientMiddleware`, whose chain ends in a middleware that
//!   answers in memory; `bare` is each stack without its retry layer.
//!
//! Every peer is configured alike: three attempts in all, exponential
//! backoff, 5xx retried. Run with `cargo bench --bench retry`.
//!
//! Wall-clock numbers move with whatever else the machine runs. For a
//! figure that does not, `RETRY_BENCH_COUNT=<stack>:<calls>` runs one stack
//! (`http/bare`, `http/tower_lb`, `http/tower_resilience`, `reqwest/bare`,
//! `reqwest/tower_lb`, `reqwest/reqwest_middleware_bare`,
//! `reqwest/reqwest_retry`) that many times and exits: run it under
//! `valgrind --tool=callgrind` at two call counts, and the difference in
//! instructions over the difference in calls is the cost of one call.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::Pin;
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use http::{Extensions, Method};
use tokio::runtime::Runtime;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_lb::retry::{ReplayBody, RetryLayer};

const BODY: &str = "{\"name\":\"Alice\",\"greeting\":\"hello\",\"padding\":\"0123456789ab\"}";

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn http_request() -> http::Request<String> {
    http::Request::get("http://greet/api/greet?name=Alice")
        .header("accept", "application/json")
        .body(BODY.to_owned())
        .unwrap()
}

fn http_ok<B>(_: http::Request<B>) -> Ready<Result<http::Response<String>, Infallible>> {
    ready(Ok(http::Response::new(String::new())))
}

fn reqwest_request() -> reqwest::Request {
    let mut request = reqwest::Request::new(
        Method::GET,
        "http://greet/api/greet?name=Alice".parse().unwrap(),
    );
    request
        .headers_mut()
        .insert("accept", "application/json".parse().unwrap());
    *request.body_mut() = Some(BODY.into());
    request
}

fn reqwest_bare(_: reqwest::Request) -> Ready<Result<reqwest::Response, Infallible>> {
    ready(Ok(reqwest::Response::from(http::Response::new(""))))
}

/// The retry layer sends each reqwest attempt down with its context, as a
/// `WithExtensions`; the balancer (absent here) would unwrap it.
fn reqwest_ok(
    request: tower_lb::WithExtensions<reqwest::Request>,
) -> Ready<Result<reqwest::Response, Infallible>> {
    reqwest_bare(request.into_parts().0)
}

/// The end of a reqwest-middleware chain: answers in memory.
fn terminal<'a>(
    _: reqwest::Request,
    _: &'a mut Extensions,
    _: reqwest_middleware::Next<'a>,
) -> Pin<Box<dyn Future<Output = reqwest_middleware::Result<reqwest::Response>> + Send + 'a>> {
    Box::pin(async { Ok(reqwest::Response::from(http::Response::new(""))) })
}

/// tower-lb's retry layer over the in-memory http service.
fn ours_http() -> impl Service<
    http::Request<String>,
    Response = http::Response<String>,
    Error = impl std::fmt::Debug,
    Future: Send,
> + Clone {
    ServiceBuilder::new()
        .layer(RetryLayer::new())
        .service(service_fn(http_ok::<ReplayBody<String>>))
}

/// tower-resilience's retry, configured like ours, over the same service.
fn resilience_http() -> impl Service<
    http::Request<String>,
    Response = http::Response<String>,
    Error = impl std::fmt::Debug,
    Future: Send,
> + Clone {
    ServiceBuilder::new()
        .layer(
            tower_resilience::retry::RetryLayer::<
                http::Request<String>,
                http::Response<String>,
                Infallible,
            >::builder()
            .max_attempts(3)
            .exponential_backoff(Duration::from_millis(25))
            .retry_on_response(|response: &http::Response<String>| {
                response.status().is_server_error()
            })
            .build(),
        )
        .service(service_fn(http_ok::<String>))
}

/// tower-lb's retry layer over the in-memory reqwest service.
fn ours_reqwest() -> impl Service<
    reqwest::Request,
    Response = reqwest::Response,
    Error = impl std::fmt::Debug,
    Future: Send,
> + Clone {
    ServiceBuilder::new()
        .layer(RetryLayer::new())
        .service(service_fn(reqwest_ok))
}

/// A reqwest-middleware chain answering in memory, with reqwest-retry's
/// middleware (configured like ours) when `retry` is set.
fn middleware_client(retry: bool) -> reqwest_middleware::ClientWithMiddleware {
    let mut builder = reqwest_middleware::ClientBuilder::new(reqwest::Client::new());
    if retry {
        let policy = reqwest_retry::policies::ExponentialBackoff::builder()
            .retry_bounds(Duration::from_millis(25), Duration::from_secs(1))
            .build_with_max_retries(2);
        builder = builder.with(reqwest_retry::RetryTransientMiddleware::new_with_policy(
            policy,
        ));
    }
    builder.with(terminal).build()
}

fn http_stacks(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("http");

    let bare = service_fn(http_ok::<String>);
    group.bench_function("bare", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(bare.oneshot(http_request()).await.unwrap()) })
    });

    let ours = ours_http();
    group.bench_function("tower_lb", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(ours.clone().oneshot(http_request()).await.unwrap()) })
    });

    let resilience = resilience_http();
    group.bench_function("tower_resilience", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(resilience.clone().oneshot(http_request()).await.unwrap()) })
    });
    group.finish();
}

fn reqwest_stacks(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("reqwest");

    let bare = service_fn(reqwest_bare);
    group.bench_function("bare", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(bare.oneshot(reqwest_request()).await.unwrap()) })
    });

    let ours = ours_reqwest();
    group.bench_function("tower_lb", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(ours.clone().oneshot(reqwest_request()).await.unwrap()) })
    });

    let middleware_bare = middleware_client(false);
    group.bench_function("reqwest_middleware_bare", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(middleware_bare.execute(reqwest_request()).await.unwrap()) })
    });

    let middleware_retry = middleware_client(true);
    group.bench_function("reqwest_retry", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(middleware_retry.execute(reqwest_request()).await.unwrap())
        })
    });
    group.finish();
}

/// The same call through `Service::call` directly, to check that the
/// numbers above are not the `oneshot` wrapper's.
fn direct_call(c: &mut Criterion) {
    let rt = runtime();
    let mut ours = ours_http();
    c.bench_function("http/tower_lb_call", |b| {
        b.to_async(&rt).iter(|| {
            let future = ours.call(http_request());
            async { black_box(future.await.unwrap()) }
        })
    });
}

criterion_group! {
    name = retry;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = http_stacks, reqwest_stacks, direct_call
}

/// Runs `stack` `calls` times, for instruction counts.
fn count(stack: &str, calls: u64) {
    let rt = runtime();
    macro_rules! run {
        ($service:expr, $request:expr) => {{
            let service = $service;
            rt.block_on(async {
                for _ in 0..calls {
                    black_box(service.clone().oneshot($request).await.unwrap());
                }
            })
        }};
    }
    match stack {
        "http/bare" => run!(service_fn(http_ok::<String>), http_request()),
        "http/tower_lb" => run!(ours_http(), http_request()),
        "http/tower_resilience" => run!(resilience_http(), http_request()),
        "reqwest/bare" => run!(service_fn(reqwest_bare), reqwest_request()),
        "reqwest/tower_lb" => run!(ours_reqwest(), reqwest_request()),
        "reqwest/reqwest_middleware_bare" | "reqwest/reqwest_retry" => {
            let client = middleware_client(stack.ends_with("retry"));
            rt.block_on(async {
                for _ in 0..calls {
                    black_box(client.execute(reqwest_request()).await.unwrap());
                }
            })
        }
        other => panic!("unknown stack `{other}`"),
    }
}

fn main() {
    if let Ok(spec) = std::env::var("RETRY_BENCH_COUNT") {
        let (stack, calls) = spec
            .split_once(':')
            .expect("RETRY_BENCH_COUNT=<stack>:<calls>");
        count(stack, calls.parse().expect("a number of calls"));
        return;
    }
    retry();
    Criterion::default().configure_from_args().final_summary();
}
