//! A tiny in-process HTTP "greet" backend for examples, tests and benches.
//!
//! Include it with `#[path = "support/greet.rs"] mod greet;` (adjust the
//! path). Each [`GreetServer`] is one backend instance whose latency and
//! status can be changed while it runs, so load-balancing behaviour
//! (slow or failing endpoints, endpoints going away) is easy to stage.
//!
//! Routes:
//! - `GET /api/greet?name=Alice` -> `200` `{"message":"Hello, Alice!"}`
//! - `POST /api/greet` with `{"name":"Alice"}` -> the same answer
//! - `GET /health` -> `200` `ok`
//! - anything else -> `404`
//!
//! Every response carries `x-instance: <name>` so callers can tell which
//! backend answered.

// Each includer uses only part of this module.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// Header naming the instance that produced a response.
pub const INSTANCE_HEADER: &str = "x-instance";

/// State shared between the server handle(s) and the connection tasks.
#[derive(Debug)]
struct Shared {
    name: String,
    hits: AtomicU64,
    /// Artificial latency in nanoseconds (0 = none).
    delay_nanos: AtomicU64,
    /// Forced response status (0 = normal routing).
    status: AtomicU16,
    /// Forced status of `/health` alone (0 = as the other routes).
    health_status: AtomicU16,
    /// Requests to `/health`, so tests can tell probes from user traffic.
    health_hits: AtomicU64,
}

/// A cheap, cloneable handle to a running [`GreetServer`]'s live controls,
/// for changing its behaviour from other tasks.
#[derive(Debug, Clone)]
pub struct GreetControl {
    shared: Arc<Shared>,
}

impl GreetControl {
    /// The instance name sent in the `x-instance` header.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Number of requests received so far, on any path.
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::Relaxed)
    }

    /// Sleep this long before answering each request (`Duration::ZERO` = no delay).
    pub fn set_delay(&self, delay: Duration) {
        // Saturate rather than wrap: u64 nanoseconds is ~584 years.
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.shared.delay_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Current artificial delay.
    pub fn delay(&self) -> Duration {
        Duration::from_nanos(self.shared.delay_nanos.load(Ordering::Relaxed))
    }

    /// Force every response to `status` (e.g. `Some(503)`); `None` restores
    /// normal routing. A code that is not a valid HTTP status answers `500`.
    pub fn set_status(&self, status: Option<u16>) {
        self.shared
            .status
            .store(status.unwrap_or(0), Ordering::Relaxed);
    }

    /// Force `/health` alone to answer `status` (e.g. `Some(500)`), so active
    /// health checks fail while user requests still succeed; `None` undoes it.
    pub fn set_health_status(&self, status: Option<u16>) {
        self.shared
            .health_status
            .store(status.unwrap_or(0), Ordering::Relaxed);
    }

    /// Requests to `/health` so far (included in `hits`).
    pub fn health_hits(&self) -> u64 {
        self.shared.health_hits.load(Ordering::Relaxed)
    }

    /// Currently forced status, if any.
    pub fn status(&self) -> Option<u16> {
        match self.shared.status.load(Ordering::Relaxed) {
            0 => None,
            s => Some(s),
        }
    }
}

/// A running greet backend. Stops when [`GreetServer::stop`] is awaited or
/// when it is dropped.
#[derive(Debug)]
pub struct GreetServer {
    addr: SocketAddr,
    control: GreetControl,
    /// Asks the accept task to shut down gracefully; `None` once used.
    shutdown: Option<oneshot::Sender<()>>,
    /// The accept task, which owns the listener and all connection tasks.
    task: Option<JoinHandle<()>>,
}

impl GreetServer {
    /// Start an instance called `name` on an ephemeral port of 127.0.0.1.
    pub async fn start(name: &str) -> io::Result<GreetServer> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), name).await
    }

    /// Start an instance called `name` listening on `addr`.
    pub async fn start_on(addr: SocketAddr, name: &str) -> io::Result<GreetServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            hits: AtomicU64::new(0),
            delay_nanos: AtomicU64::new(0),
            status: AtomicU16::new(0),
            health_status: AtomicU16::new(0),
            health_hits: AtomicU64::new(0),
        });
        let (shutdown, shutdown_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, shared.clone(), shutdown_rx));
        Ok(GreetServer {
            addr,
            control: GreetControl { shared },
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// The bound address (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:5001` (no trailing slash).
    pub fn url(&self) -> String {
        // A wildcard bind address is not something a client can connect to.
        let ip = if self.addr.ip().is_unspecified() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            self.addr.ip()
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// The instance name sent in the `x-instance` header.
    pub fn name(&self) -> &str {
        self.control.name()
    }

    /// Number of requests received so far, on any path.
    pub fn hits(&self) -> u64 {
        self.control.hits()
    }

    /// Sleep this long before answering each request (`Duration::ZERO` = no delay).
    pub fn set_delay(&self, delay: Duration) {
        self.control.set_delay(delay);
    }

    /// Force every response to `status` (e.g. `Some(503)`); `None` restores
    /// normal routing. A code that is not a valid HTTP status answers `500`.
    pub fn set_status(&self, status: Option<u16>) {
        self.control.set_status(status);
    }

    /// Force `/health` alone to answer `status`; see [`GreetControl::set_health_status`].
    pub fn set_health_status(&self, status: Option<u16>) {
        self.control.set_health_status(status);
    }

    /// Requests to `/health` so far (included in `hits`).
    pub fn health_hits(&self) -> u64 {
        self.control.health_hits()
    }

    /// A cloneable handle to the live controls, to move into other tasks.
    pub fn control(&self) -> GreetControl {
        self.control.clone()
    }

    /// Stop the server: stop accepting and close every open connection
    /// (including idle keep-alive ones). When this returns the port refuses
    /// new connections.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The receiver only disappears if the accept task already ended.
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            // Waiting is what makes "refused after stop" deterministic.
            let _ = task.await;
        }
    }
}

impl Drop for GreetServer {
    /// Without `.await` we can only abort: the listener and the `JoinSet`
    /// (which aborts every connection task) are dropped as soon as the
    /// runtime processes the cancellation, i.e. almost immediately.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Accept connections until asked to shut down, then close everything.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    // Owning the connection tasks here means dropping or finishing this task
    // takes every connection down with it.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            // Also fires if the sender was dropped without sending.
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Small request/response exchanges: don't let Nagle add latency.
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    conns.spawn(async move {
                        let service = service_fn(move |req| handle(shared.clone(), req));
                        // Client resets/aborts are normal here; nothing to report.
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                // Transient (e.g. out of file descriptors): back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connections so the set doesn't grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Close the port first so nothing new queues up, then abort and await all
    // connections so their sockets are closed before `stop()` returns.
    drop(listener);
    conns.shutdown().await;
}

/// Answer one request.
async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    shared.hits.fetch_add(1, Ordering::Relaxed);

    let delay = shared.delay_nanos.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_nanos(delay)).await;
    }

    let health = req.uri().path() == "/health";
    if health {
        shared.health_hits.fetch_add(1, Ordering::Relaxed);
    }
    let forced = match shared.health_status.load(Ordering::Relaxed) {
        0 => shared.status.load(Ordering::Relaxed),
        health_status if health => health_status,
        _ => shared.status.load(Ordering::Relaxed),
    };
    let mut response = match forced {
        0 if req.method() == Method::POST && req.uri().path() == "/api/greet" => {
            greet_posted(req).await
        }
        0 => route(&req),
        forced => {
            let status = StatusCode::from_u16(forced).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            text(status, status.canonical_reason().unwrap_or(""))
        }
    };
    // Names that are not valid header values just go without the header.
    if let Ok(value) = HeaderValue::from_str(&shared.name) {
        response.headers_mut().insert(INSTANCE_HEADER, value);
    }
    Ok(response)
}

/// Normal routing, used when no status is forced.
fn route(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    match req.uri().path() {
        "/api/greet" => {
            let name = req
                .uri()
                .query()
                .and_then(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .find(|(key, _)| key == "name")
                        .map(|(_, value)| value.into_owned())
                })
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "World".to_owned());
            greeting(&name)
        }
        "/health" => text(StatusCode::OK, "ok"),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// `POST /api/greet` with a JSON body `{"name": ...}`.
async fn greet_posted(req: Request<Incoming>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;

    let Ok(body) = req.into_body().collect().await else {
        return text(StatusCode::BAD_REQUEST, "unreadable body");
    };
    let name = serde_json::from_slice::<serde_json::Value>(&body.to_bytes())
        .ok()
        .and_then(|v| v.get("name")?.as_str().map(str::to_owned));
    match name {
        Some(name) => greeting(&name),
        None => text(StatusCode::BAD_REQUEST, "expected {\"name\": \"...\"}"),
    }
}

/// The JSON greeting for `name`.
fn greeting(name: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "message": format!("Hello, {name}!") }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A plain-text response.
fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
