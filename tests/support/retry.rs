//! Helpers for the retry tests: refusing endpoints, in-memory instances
//! behind a real `LoadBalance` layer, and checks on `Attempts`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use tower_lb::balance::RoundRobin;
use tower_lb::discover::Fixed;
use tower_lb::health::OutlierDetection;
use tower_lb::retry::{Attempts, ReplayBody};
use tower_lb::{Endpoint, LoadBalanceLayer, Pool};

/// An address on 127.0.0.1 that refuses connections, and keeps refusing
/// until the test process ends: a socket bound to the port that never
/// listens, so no other test (or server) can take the port in between.
pub fn refusing_url() -> String {
    static HELD: Mutex<Vec<tokio::net::TcpSocket>> = Mutex::new(Vec::new());
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("bind a loopback port");
    let port = socket.local_addr().expect("its address").port();
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(socket);
    format!("http://127.0.0.1:{port}")
}

/// The attempts a response carries.
pub fn attempts_of(extensions: &http::Extensions) -> Attempts {
    extensions
        .get::<Attempts>()
        .cloned()
        .expect("every response through the retry layer carries Attempts")
}

/// True when no endpoint follows itself in `endpoints`.
pub fn no_repeat_in_a_row(endpoints: &[Endpoint]) -> bool {
    endpoints.windows(2).all(|w| !w[0].same_instance(&w[1]))
}

/// The `p`th percentile (nearest rank) of `values`.
pub fn percentile(values: &mut [Duration], p: f64) -> Duration {
    values.sort();
    let rank = ((p / 100.0) * values.len() as f64).ceil().max(1.0) as usize;
    values[rank - 1]
}

/// What an in-memory instance does with its `n`th request (from 0).
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub delay: Duration,
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn ok() -> Self {
        Self {
            status: 200,
            ..Self::default()
        }
    }

    pub fn status(status: u16) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

type Script = dyn Fn(usize, u64, &http::Method) -> Reply + Send + Sync;

/// A set of in-memory instances named `http://127.0.0.1:{1 + i}` for `i`
/// in `0..n` (never connected to): a tower service of `http::Request<ReplayBody<String>>` that
/// answers as the script says for that instance and its request count.
/// Sleeps use tokio's clock, so paused-clock tests measure exactly.
#[derive(Clone)]
pub struct Instances {
    urls: Vec<String>,
    hits: Arc<Vec<AtomicU64>>,
    script: Arc<Script>,
    /// Bodies received, per instance.
    bodies: Arc<Mutex<HashMap<usize, Vec<String>>>>,
}

pub type Request = http::Request<ReplayBody<String>>;
pub type Response = http::Response<String>;
pub type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Instances {
    pub fn new(
        n: usize,
        script: impl Fn(usize, u64, &http::Method) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self {
            urls: (0..n)
                .map(|i| format!("http://127.0.0.1:{}", i + 1))
                .collect(),
            hits: Arc::new((0..n).map(|_| AtomicU64::new(0)).collect()),
            script: Arc::new(script),
            bodies: Arc::default(),
        }
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    pub fn hits(&self, i: usize) -> u64 {
        self.hits[i].load(Ordering::SeqCst)
    }

    pub fn total_hits(&self) -> u64 {
        (0..self.urls.len()).map(|i| self.hits(i)).sum()
    }

    pub fn bodies(&self, i: usize) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .get(&i)
            .cloned()
            .unwrap_or_default()
    }

    /// Which instance `request` was routed to.
    fn index(&self, request: &Request) -> usize {
        let authority = request.uri().authority().map(|a| a.as_str()).unwrap_or("");
        self.urls
            .iter()
            .position(|u| u.strip_prefix("http://") == Some(authority))
            .expect("a request routed to one of the instances")
    }

    /// The tower service. It also tells the retry layer which endpoint each
    /// request went to (in its attempt context), as a balancing layer may.
    pub fn service(
        &self,
        note: bool,
    ) -> impl tower::Service<Request, Response = Response, Error = Infallible, Future = BoxFuture>
    + Clone
    + Send
    + 'static
    + use<> {
        let this = self.clone();
        tower::service_fn(move |request: Request| -> BoxFuture {
            let i = this.index(&request);
            if note
                && let Some(endpoint) = request.extensions().get::<Endpoint>()
                && let Some(context) = tower_lb::AttemptContext::of(&request)
            {
                context.record_endpoint(endpoint);
            }
            let n = this.hits[i].fetch_add(1, Ordering::SeqCst);
            let reply = (this.script)(i, n, request.method());
            let bodies = this.bodies.clone();
            Box::pin(async move {
                let body = read(request.into_body()).await;
                bodies.lock().unwrap().entry(i).or_default().push(body);
                if !reply.delay.is_zero() {
                    tokio::time::sleep(reply.delay).await;
                }
                let mut response = http::Response::new(format!("instance {i}"));
                *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                let headers: &mut HeaderMap = response.headers_mut();
                headers.insert("x-instance", HeaderValue::from(i));
                for (name, value) in reply.headers {
                    headers.insert(name, HeaderValue::from_str(&value).unwrap());
                }
                Ok(response)
            })
        })
    }

    /// A load-balancing layer over the instances: round robin, no outlier
    /// ejection (the tests stage failures and want them to stay put).
    pub fn balancer(&self) -> LoadBalanceLayer {
        let pool = Pool::builder("greet", Fixed::new(self.urls.clone()).expect("valid urls"))
            .balancer(RoundRobin::new())
            .outlier_detection(OutlierDetection::disabled())
            .build();
        LoadBalanceLayer::builder()
            .pool(pool)
            // `service(true)` reads it to note the endpoint itself.
            .endpoint_in_requests(true)
            .build()
            .expect("a valid layer")
    }
}

async fn read(body: ReplayBody<String>) -> String {
    use http_body_util::BodyExt;
    let bytes = body.collect().await.expect("a readable body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `GET http://greet/` with an empty body.
pub fn get() -> http::Request<String> {
    http::Request::get("http://greet/api/greet")
        .body(String::new())
        .unwrap()
}

/// `POST http://greet/` with `body`.
pub fn post(body: &str) -> http::Request<String> {
    http::Request::post("http://greet/api/greet")
        .body(body.to_owned())
        .unwrap()
}
