//! End to end: a GET to real HTTP servers on loopback, through plain
//! reqwest and plain hyper-util (rotating the same endpoint URLs by hand),
//! beside the same client under `LoadBalanceLayer` (round robin) and under
//! `RetryLayer` + `LoadBalanceLayer`, all in one run. Each call reads the
//! whole response body, so the balancer's accounting to the last byte is
//! part of what is measured.
//!
//! The servers (hyper 1, HTTP/1.1, three of them) run in a child process
//! (this same binary, started with `E2E_BENCH_SERVE=1`), so the client's
//! process holds nothing but the client: instruction counts of the parent
//! are the client's alone.
//!
//! Stacks: `reqwest/bare`, `reqwest/lb`, `reqwest/lb_untimed`,
//! `reqwest/retry_lb`, `hyper/bare`, `hyper/lb`, `hyper/lb_untimed`,
//! `hyper/retry_lb` (`lb_untimed`: the layer `without_timeout`, as for a
//! caller that bounds every request itself, so that the difference is what
//! the layer's own timer costs), and `hyper_without_timers/bare`,
//! `hyper_without_timers/lb`. The `hyper/*` client is configured as
//! reqwest configures hyper-util (a connection timer and a pool timer,
//! whose idle sweep keeps a timer pending); `hyper_without_timers/*` has
//! no timer at all, so the layer's timer is the runtime's only one. Each
//! call goes through
//! `ready().await?.call(request)` on one service value (no clone per
//! call), one call at a time, on a current-thread runtime.
//!
//! Run with `cargo bench --bench e2e`: criterion's per-call times, then a
//! load run per stack (64 calls in flight on a 2-worker runtime for
//! `E2E_BENCH_LOAD_SECS`, default 2, in four turns taken by the stacks in
//! rotation) with its p50 latency and throughput.
//!
//! Wall-clock numbers move with whatever else the machine runs. For a
//! figure that does not, `E2E_BENCH_COUNT=<stack>:<calls>` runs one stack
//! that many times and exits; under
//! `valgrind --tool=callgrind` (which does not follow the server's child
//! process) at two call counts, the difference in instructions over the
//! difference in calls is the client's cost of one call:
//!
//! ```text
//! B=$(ls -t target/release/deps/e2e-* | grep -v '\.d$' | head -1)
//! for n in 200 1200; do
//!   E2E_BENCH_COUNT=hyper/lb:$n valgrind --tool=callgrind \
//!     --callgrind-out-file=/tmp/cg.$n $B 2>&1 | grep 'refs'
//! done
//! ```
//!
//! The count depends on timing: when a server has not answered by the
//! time the client polls, the client's runtime parks and wakes once more,
//! and on a busy machine that adds 400 instructions or more to a hyper-util
//! call. `benches/callgrind.sh $B E2E_BENCH_COUNT <stack>...` takes the
//! median of five samples of each stack, one after another; run it alone
//! on an idle machine. Between builds a bare client's count moves by up to 700
//! as well (hyper's and tokio's generic code is split into codegen units
//! differently): compare stacks of one build, or build both with
//! `CARGO_PROFILE_BENCH_CODEGEN_UNITS=1`.
//!
//! Built with `--features metrics`, `E2E_BENCH_RECORDER=prometheus` installs
//! a Prometheus recorder (no exporter) first, so that the count includes
//! what recording the crate's series costs; without it the `metrics` facade
//! hands every series to its no-op recorder.

use std::convert::Infallible;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::runtime::Runtime;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_lb::balance::RoundRobin;
use tower_lb::discover::Fixed;
use tower_lb::retry::{ReplayBody, RetryLayer};
use tower_lb::{BoxError, LoadBalanceLayer};

const SERVERS: usize = 3;
const PATH: &str = "/api/greet?name=Alice";
const LOGICAL: &str = "http://greet/api/greet?name=Alice";
const REPLY: &str = "{\"greeting\":\"Hello, Alice!\"}";

const STACKS: [&str; 10] = [
    "reqwest/bare",
    "reqwest/lb",
    "reqwest/lb_untimed",
    "reqwest/retry_lb",
    "hyper/bare",
    "hyper/lb",
    "hyper/lb_untimed",
    "hyper/retry_lb",
    "hyper_without_timers/bare",
    "hyper_without_timers/lb",
];

// ---------------------------------------------------------------- servers

/// The child process: three hyper servers on loopback, their ports on
/// stdout, serving until stdin closes (the parent exited).
fn serve() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut ports = Vec::new();
        for _ in 0..SERVERS {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            ports.push(listener.local_addr().unwrap().port().to_string());
            tokio::spawn(accept(listener));
        }
        println!("{}", ports.join(" "));
        std::io::stdout().flush().unwrap();
        // Stdin closes when the parent exits.
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
        })
        .await
        .unwrap();
    });
}

async fn accept(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_: http::Request<Incoming>| async {
                Ok::<_, Infallible>(
                    http::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(REPLY.as_bytes())))
                        .unwrap(),
                )
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The server process, killed when dropped.
struct Servers {
    child: Child,
    addrs: Vec<SocketAddr>,
}

impl Servers {
    fn start() -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("E2E_BENCH_SERVE", "1")
            .env_remove("E2E_BENCH_COUNT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the server process starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addrs = line
            .split_whitespace()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port.parse().unwrap())))
            .collect();
        Self { child, addrs }
    }

    fn urls(&self) -> Vec<String> {
        self.addrs.iter().map(|a| format!("http://{a}")).collect()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- clients

fn lb(servers: &Servers) -> LoadBalanceLayer {
    LoadBalanceLayer::builder()
        .service("greet", Fixed::new(servers.urls()).unwrap())
        .balancer(RoundRobin::new())
        .build()
        .unwrap()
}

/// [`lb`] without the layer's own timeout (`without_timeout`), as for a
/// caller that bounds every request itself: what the layer's timer costs.
fn lb_untimed(servers: &Servers) -> LoadBalanceLayer {
    LoadBalanceLayer::builder()
        .service("greet", Fixed::new(servers.urls()).unwrap())
        .balancer(RoundRobin::new())
        .without_timeout()
        .build()
        .unwrap()
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// hyper-util's client configured as reqwest configures it: a timer for
/// its connections and one for its pool, whose idle-connection sweep keeps
/// a timer pending while connections are idle (without one, idle
/// connections are only dropped when next checked out).
fn hyper_client<B>() -> HyperClient<HttpConnector, B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    HyperClient::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .build_http()
}

/// hyper-util's client with no timer at all: the runtime's timer wheel is
/// empty until a layer above arms a timer, so the first timer also costs
/// the driver's bookkeeping on every park.
fn hyper_client_without_timers<B>() -> HyperClient<HttpConnector, B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    HyperClient::builder(TokioExecutor::new()).build_http()
}

/// What one call needs: the request for the `i`th call.
trait Target<Req> {
    fn request(&mut self) -> Req;
}

/// Plain reqwest, the endpoint URLs rotated by hand.
struct ByHand<U> {
    urls: Vec<U>,
    next: usize,
}

impl<U: Clone> ByHand<U> {
    fn next_url(&mut self) -> U {
        let url = self.urls[self.next].clone();
        self.next = (self.next + 1) % self.urls.len();
        url
    }
}

impl Target<reqwest::Request> for ByHand<reqwest::Url> {
    fn request(&mut self) -> reqwest::Request {
        reqwest::Request::new(http::Method::GET, self.next_url())
    }
}

impl Target<http::Request<Empty<Bytes>>> for ByHand<http::Uri> {
    fn request(&mut self) -> http::Request<Empty<Bytes>> {
        http::Request::get(self.next_url())
            .body(Empty::new())
            .unwrap()
    }
}

fn by_hand_reqwest(servers: &Servers) -> ByHand<reqwest::Url> {
    let urls = servers
        .urls()
        .iter()
        .map(|u| format!("{u}{PATH}").parse().unwrap())
        .collect();
    ByHand { urls, next: 0 }
}

fn by_hand_hyper(servers: &Servers) -> ByHand<http::Uri> {
    let urls = servers
        .urls()
        .iter()
        .map(|u| format!("{u}{PATH}").parse().unwrap())
        .collect();
    ByHand { urls, next: 0 }
}

/// The logical URL, always the same (the balancer rotates), parsed once
/// as the bare stacks' URLs are: parsing is not the layer's cost.
struct Parsed<U>(U);

impl Target<reqwest::Request> for Parsed<reqwest::Url> {
    fn request(&mut self) -> reqwest::Request {
        reqwest::Request::new(http::Method::GET, self.0.clone())
    }
}

impl Target<http::Request<Empty<Bytes>>> for Parsed<http::Uri> {
    fn request(&mut self) -> http::Request<Empty<Bytes>> {
        http::Request::get(self.0.clone())
            .body(Empty::new())
            .unwrap()
    }
}

fn logical_reqwest() -> Parsed<reqwest::Url> {
    Parsed(LOGICAL.parse().unwrap())
}

fn logical_hyper() -> Parsed<http::Uri> {
    Parsed(LOGICAL.parse().unwrap())
}

/// One reqwest call, its body read to the end.
async fn reqwest_call<S>(service: &mut S, request: reqwest::Request) -> usize
where
    S: Service<reqwest::Request, Response = reqwest::Response>,
    S::Error: std::fmt::Debug,
{
    let response = ServiceExt::<reqwest::Request>::ready(service)
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap();
    assert!(response.status().is_success());
    response.bytes().await.unwrap().len()
}

/// One http call, its body read to the end.
async fn http_call<S, B>(service: &mut S, request: http::Request<Empty<Bytes>>) -> usize
where
    S: Service<http::Request<Empty<Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body,
    B::Error: std::fmt::Debug,
{
    let response = ServiceExt::<http::Request<Empty<Bytes>>>::ready(service)
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap();
    assert!(response.status().is_success());
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .len()
}

/// Calls `$body` with `(service, target, call)` for the stack named
/// `$stack`: one expansion per stack, so nothing is boxed.
macro_rules! with_stack {
    ($stack:expr, $servers:expr, |$service:ident, $target:ident, $call:ident| $body:expr) => {{
        let servers: &Servers = $servers;
        match $stack {
            "reqwest/bare" => {
                let $service = reqwest_client();
                let $target = by_hand_reqwest(servers);
                let $call = reqwest_call::<reqwest::Client>;
                $body
            }
            "reqwest/lb" => {
                let $service = ServiceBuilder::new()
                    .layer(lb(servers))
                    .service(reqwest_client());
                let $target = logical_reqwest();
                let $call = reqwest_call;
                $body
            }
            "reqwest/lb_untimed" => {
                let $service = ServiceBuilder::new()
                    .layer(lb_untimed(servers))
                    .service(reqwest_client());
                let $target = logical_reqwest();
                let $call = reqwest_call;
                $body
            }
            "reqwest/retry_lb" => {
                let $service = ServiceBuilder::new()
                    .layer(RetryLayer::new())
                    .layer(lb(servers))
                    .service(reqwest_client());
                let $target = logical_reqwest();
                let $call = reqwest_call;
                $body
            }
            "hyper/bare" => {
                let $service = hyper_client::<Empty<Bytes>>();
                let $target = by_hand_hyper(servers);
                let $call = http_call;
                $body
            }
            "hyper/lb" => {
                let $service = ServiceBuilder::new()
                    .layer(lb(servers))
                    .service(hyper_client::<Empty<Bytes>>());
                let $target = logical_hyper();
                let $call = http_call;
                $body
            }
            "hyper/lb_untimed" => {
                let $service = ServiceBuilder::new()
                    .layer(lb_untimed(servers))
                    .service(hyper_client::<Empty<Bytes>>());
                let $target = logical_hyper();
                let $call = http_call;
                $body
            }
            "hyper/retry_lb" => {
                let $service = ServiceBuilder::new()
                    .layer(RetryLayer::new())
                    .layer(lb(servers))
                    .service(hyper_client::<ReplayBody<Empty<Bytes>>>());
                let $target = logical_hyper();
                let $call = http_call;
                $body
            }
            "hyper_without_timers/bare" => {
                let $service = hyper_client_without_timers::<Empty<Bytes>>();
                let $target = by_hand_hyper(servers);
                let $call = http_call;
                $body
            }
            "hyper_without_timers/lb" => {
                let $service = ServiceBuilder::new()
                    .layer(lb(servers))
                    .service(hyper_client_without_timers::<Empty<Bytes>>());
                let $target = logical_hyper();
                let $call = http_call;
                $body
            }
            other => panic!("unknown stack `{other}`; one of {STACKS:?}"),
        }
    }};
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------- modes

fn sequential(c: &mut Criterion) {
    let servers = Servers::start();
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("e2e");
    for stack in STACKS {
        with_stack!(stack, &servers, |service, target, call| {
            let mut service = service;
            let mut target = target;
            group.bench_function(stack, |b| {
                b.iter(|| {
                    rt.block_on(async { black_box(call(&mut service, target.request()).await) })
                })
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = e2e;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = sequential
}

/// 64 calls in flight for `seconds`: p50 latency and calls per second.
fn load(servers: &Servers, seconds: f64) {
    const IN_FLIGHT: usize = 64;
    // The stacks take turns, a slice of the time each per round, so that
    // the machine's drift over the run falls on all of them alike rather
    // than on whichever ran last.
    const ROUNDS: u32 = 4;
    let slice = seconds / f64::from(ROUNDS);
    println!("\nload: {IN_FLIGHT} in flight, {seconds} s per stack in {ROUNDS} turns");
    println!("{:<28} {:>10} {:>12}", "stack", "p50 (µs)", "calls/s");
    let mut runs: Vec<(Vec<Duration>, Duration)> = STACKS
        .iter()
        .map(|_| (Vec::new(), Duration::ZERO))
        .collect();
    for _ in 0..ROUNDS {
        for (stack, (all, total)) in STACKS.iter().zip(runs.iter_mut()) {
            let (latencies, elapsed) = load_slice(servers, stack, IN_FLIGHT, slice);
            all.extend(latencies);
            *total += elapsed;
        }
    }
    for (stack, (mut latencies, elapsed)) in STACKS.iter().zip(runs) {
        latencies.sort();
        let p50 = latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or_default();
        println!(
            "{stack:<28} {:>10.1} {:>12.0}",
            p50.as_secs_f64() * 1e6,
            latencies.len() as f64 / elapsed.as_secs_f64()
        );
    }
}

/// One stack's turn of the load run: its latencies and how long it took.
fn load_slice(
    servers: &Servers,
    stack: &str,
    in_flight: usize,
    seconds: f64,
) -> (Vec<Duration>, Duration) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    with_stack!(stack, servers, |service, target, call| {
        rt.block_on(async {
            let started = Instant::now();
            let until = started + Duration::from_secs_f64(seconds);
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..in_flight {
                let mut service = service.clone();
                let mut target = target.clone_for(i);
                tasks.spawn(async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < until {
                        let t = Instant::now();
                        black_box(call(&mut service, target.request()).await);
                        latencies.push(t.elapsed());
                    }
                    latencies
                });
            }
            let mut all = Vec::new();
            while let Some(latencies) = tasks.join_next().await {
                all.extend(latencies.unwrap());
            }
            (all, started.elapsed())
        })
    })
}

/// A target for one of the load run's tasks, each rotating on its own.
trait CloneFor {
    fn clone_for(&self, i: usize) -> Self;
}

impl<U: Clone> CloneFor for ByHand<U> {
    fn clone_for(&self, i: usize) -> Self {
        Self {
            urls: self.urls.clone(),
            next: i % self.urls.len(),
        }
    }
}

impl<U: Clone> CloneFor for Parsed<U> {
    fn clone_for(&self, _: usize) -> Self {
        Self(self.0.clone())
    }
}

/// Runs `stack` `calls` times, for instruction counts.
fn count(stack: &str, calls: u64) {
    let servers = Servers::start();
    let rt = runtime();
    let _guard = rt.enter();
    with_stack!(stack, &servers, |service, target, call| {
        let mut service = service;
        let mut target = target;
        rt.block_on(async {
            for _ in 0..calls {
                black_box(call(&mut service, target.request()).await);
            }
        })
    });
}

/// Installs a Prometheus recorder when `E2E_BENCH_RECORDER=prometheus`.
fn install_recorder() {
    match std::env::var("E2E_BENCH_RECORDER").as_deref() {
        Err(_) => {}
        #[cfg(feature = "metrics")]
        Ok("prometheus") => {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            metrics::set_global_recorder(recorder).expect("no recorder installed yet");
        }
        Ok(other) => {
            panic!("E2E_BENCH_RECORDER={other}: only `prometheus`, with --features metrics")
        }
    }
}

fn main() {
    if std::env::var_os("E2E_BENCH_SERVE").is_some() {
        serve();
        return;
    }
    install_recorder();
    if let Ok(spec) = std::env::var("E2E_BENCH_COUNT") {
        let (stack, calls) = spec
            .split_once(':')
            .expect("E2E_BENCH_COUNT=<stack>:<calls>");
        count(stack, calls.parse().expect("a number of calls"));
        return;
    }
    e2e();
    let seconds = std::env::var("E2E_BENCH_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    if seconds > 0.0 {
        load(&Servers::start(), seconds);
    }
    Criterion::default().configure_from_args().final_summary();
}
