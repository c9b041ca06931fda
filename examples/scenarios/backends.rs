//! In-memory backends with a capacity model, on tokio's clock.
//!
//! Each backend serves at most `capacity` requests at once and queues the
//! rest (first come, first served), so load raises latency the way it does
//! on a real server. A script decides per request what the backend does;
//! its randomness comes from one seeded generator per backend, so a run
//! repeats exactly on a current-thread runtime with the clock paused.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// What one request meets at a backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behavior {
    /// Served for this long once a slot is free, then answered with the
    /// status.
    Serve { time: Duration, status: u16 },
    /// The connection is refused at once.
    Refuse,
    /// Accepted and never answered.
    BlackHole,
}

/// What a backend sees of a request when the script decides.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// Which backend.
    pub backend: usize,
    /// Time since the backends were created.
    pub at: Duration,
    /// Requests at this backend now, served or queued, not counting this one.
    pub load: usize,
}

/// Decides what a backend does with one request.
pub type Script = dyn Fn(&mut SmallRng, Arrival) -> Behavior + Send + Sync;

/// Whether backend `i` passes an active health check at time `at`.
pub type Probe = dyn Fn(usize, Duration) -> bool + Send + Sync;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A set of backends named `http://127.0.0.1:{port}`: nothing listens
/// there; the services below route by the request's authority.
#[derive(Clone)]
pub struct Backends {
    inner: Arc<Inner>,
}

struct Inner {
    urls: Vec<String>,
    first_port: u16,
    slots: Vec<Semaphore>,
    load: Vec<AtomicUsize>,
    hits: Vec<AtomicU64>,
    rngs: Vec<Mutex<SmallRng>>,
    /// (time, backend) of every first attempt, in order.
    firsts: Mutex<Vec<(Duration, u16)>>,
    script: Arc<Script>,
    probe: Arc<Probe>,
    epoch: Instant,
}

/// Ports of the backends start here.
const FIRST_PORT: u16 = 5000;

impl Backends {
    /// `capacity[i]` is backend `i`'s concurrency; its clock starts now.
    pub fn new(capacity: &[usize], seed: u64, script: Arc<Script>, probe: Arc<Probe>) -> Self {
        let n = capacity.len();
        Self {
            inner: Arc::new(Inner {
                urls: (0..n)
                    .map(|i| format!("http://127.0.0.1:{}", usize::from(FIRST_PORT) + i))
                    .collect(),
                first_port: FIRST_PORT,
                slots: capacity.iter().map(|&c| Semaphore::new(c.max(1))).collect(),
                load: (0..n).map(|_| AtomicUsize::new(0)).collect(),
                hits: (0..n).map(|_| AtomicU64::new(0)).collect(),
                rngs: (0..n)
                    .map(|i| Mutex::new(SmallRng::seed_from_u64(seed ^ (i as u64) << 32)))
                    .collect(),
                firsts: Mutex::new(Vec::new()),
                script,
                probe,
                epoch: Instant::now(),
            }),
        }
    }

    pub fn urls(&self) -> &[String] {
        &self.inner.urls
    }

    pub fn len(&self) -> usize {
        self.inner.urls.len()
    }

    /// Attempts each backend received.
    pub fn hits(&self) -> Vec<u64> {
        self.inner
            .hits
            .iter()
            .map(|h| h.load(Ordering::Relaxed))
            .collect()
    }

    /// (time, backend) of every first attempt.
    pub fn firsts(&self) -> Vec<(Duration, u16)> {
        self.inner.firsts.lock().unwrap().clone()
    }

    /// Time since the backends were created.
    pub fn elapsed(&self) -> Duration {
        self.inner.epoch.elapsed()
    }

    /// Backend `i` by port, if it is one of these.
    pub fn by_port(&self, port: u16) -> Option<usize> {
        let i = usize::from(port.checked_sub(self.inner.first_port)?);
        (i < self.len()).then_some(i)
    }

    /// What an active health check of backend `i` finds now.
    pub fn probe(&self, i: usize) -> bool {
        (self.inner.probe)(i, self.elapsed())
    }

    /// Sends one attempt to backend `i`: `first` says whether it is the
    /// call's first attempt. Answers the status, or a refused connection.
    pub fn call(&self, i: usize, first: bool) -> BoxFuture<io::Result<u16>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let at = inner.epoch.elapsed();
            inner.hits[i].fetch_add(1, Ordering::Relaxed);
            if first {
                inner.firsts.lock().unwrap().push((at, i as u16));
            }
            let load = inner.load[i].load(Ordering::Relaxed);
            let arrival = Arrival {
                backend: i,
                at,
                load,
            };
            let behavior = (inner.script)(&mut inner.rngs[i].lock().unwrap(), arrival);
            match behavior {
                Behavior::Refuse => Err(io::Error::from(io::ErrorKind::ConnectionRefused)),
                Behavior::BlackHole => std::future::pending().await,
                Behavior::Serve { time, status } => {
                    // In the system from arrival to answer (or drop), queued
                    // or served: what "load" means to the next arrival.
                    let _guard = Counted::new(&inner.load[i]);
                    let Ok(_slot) = inner.slots[i].acquire().await else {
                        return Err(io::Error::other("backend closed"));
                    };
                    if !time.is_zero() {
                        tokio::time::sleep(time).await;
                    }
                    Ok(status)
                }
            }
        })
    }

    /// The backends as one HTTP service, for tower-lb's layers (which
    /// rewrite each request's URI to the endpoint they picked). The
    /// request's [`tower_lb::AttemptContext`] says whether it is a first
    /// attempt; a request without one is.
    pub fn service<B: Send + 'static>(
        &self,
    ) -> impl tower::Service<
        http::Request<B>,
        Response = http::Response<String>,
        Error = io::Error,
        Future = BoxFuture<io::Result<http::Response<String>>>,
    >
    + Clone
    + Send
    + 'static
    + use<B> {
        let this = self.clone();
        tower::service_fn(move |request: http::Request<B>| {
            let first = tower_lb::AttemptContext::of(&request).is_none_or(|c| c.number() == 1);
            let backend = request.uri().port_u16().and_then(|p| this.by_port(p));
            let this = this.clone();
            Box::pin(async move {
                let Some(i) = backend else {
                    return Err(io::Error::other("no such backend"));
                };
                this.call(i, first).await.map(response)
            }) as BoxFuture<_>
        })
    }

    /// Backend `i` alone as a service, for tower's balancer (which holds
    /// one service per endpoint and never retries: every attempt is first).
    pub fn endpoint(
        &self,
        i: usize,
    ) -> impl tower::Service<
        http::Request<String>,
        Response = http::Response<String>,
        Error = io::Error,
        Future = BoxFuture<io::Result<http::Response<String>>>,
    >
    + Send
    + 'static
    + use<> {
        let this = self.clone();
        tower::service_fn(move |_: http::Request<String>| {
            let call = this.call(i, true);
            Box::pin(async move { call.await.map(response) }) as BoxFuture<_>
        })
    }
}

fn response(status: u16) -> http::Response<String> {
    let mut response = http::Response::new(String::new());
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response
}

/// +1 on a counter for as long as it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
