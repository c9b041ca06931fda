//! Simulated backends for paused-clock load tests: in-memory instances
//! named `http://127.0.0.1:{port}` (nothing listens there, nothing
//! connects), that answer after a latency a script chooses from the
//! instance, its request count and the simulated time of arrival. Sleeps use
//! tokio's clock, so on a paused clock a run of a minute at 1,000 requests
//! a second takes seconds, and repeats exactly on one thread.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

/// How a simulated backend answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub after: Duration,
}

impl Answer {
    /// A 200 after `after`.
    pub fn ok_after(after: Duration) -> Self {
        Self { status: 200, after }
    }

    /// `status` after `after`.
    pub fn status_after(status: u16, after: Duration) -> Self {
        Self { status, after }
    }
}

/// What backend `index` does with its `n`th request (from 0), arriving
/// `at` after the backends were created.
type Script = dyn Fn(usize, u64, Duration) -> Answer + Send + Sync;

pub type Response = http::Response<String>;
pub type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// `n` simulated backends on ports `first_port..first_port + n`.
#[derive(Clone)]
pub struct Backends {
    urls: Vec<String>,
    hits: Arc<Vec<AtomicU64>>,
    script: Arc<Script>,
    epoch: Instant,
}

impl Backends {
    /// The backends; their clock (the `at` the script sees) starts now.
    pub fn new(
        n: usize,
        first_port: u16,
        script: impl Fn(usize, u64, Duration) -> Answer + Send + Sync + 'static,
    ) -> Self {
        Self {
            urls: (0..n)
                .map(|i| format!("http://127.0.0.1:{}", usize::from(first_port) + i))
                .collect(),
            hits: Arc::new((0..n).map(|_| AtomicU64::new(0)).collect()),
            script: Arc::new(script),
            epoch: Instant::now(),
        }
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Requests backend `i` has received.
    pub fn hits(&self, i: usize) -> u64 {
        self.hits[i].load(Ordering::SeqCst)
    }

    /// Requests each backend has received, in order.
    pub fn all_hits(&self) -> Vec<u64> {
        (0..self.urls.len()).map(|i| self.hits(i)).collect()
    }

    pub fn total_hits(&self) -> u64 {
        self.all_hits().iter().sum()
    }

    /// Which backend a request whose URI has `authority` went to.
    fn index(&self, authority: &str) -> usize {
        self.urls
            .iter()
            .position(|u| u.strip_prefix("http://") == Some(authority))
            .unwrap_or_else(|| panic!("a request routed to one of the backends, not {authority:?}"))
    }

    /// The backends as one tower service (the client under a load
    /// balancer, which rewrote each request's URI to its endpoint). The
    /// request body is not read.
    pub fn service<B: Send + 'static>(
        &self,
    ) -> impl tower::Service<
        http::Request<B>,
        Response = Response,
        Error = Infallible,
        Future = BoxFuture,
    >
    + Clone
    + Send
    + 'static
    + use<B> {
        let this = self.clone();
        tower::service_fn(move |request: http::Request<B>| -> BoxFuture {
            let authority = request.uri().authority().map(|a| a.as_str()).unwrap_or("");
            let i = this.index(authority);
            let n = this.hits[i].fetch_add(1, Ordering::SeqCst);
            let answer = (this.script)(i, n, this.epoch.elapsed());
            Box::pin(async move {
                if !answer.after.is_zero() {
                    tokio::time::sleep(answer.after).await;
                }
                let mut response = http::Response::new(format!("backend {i}"));
                *response.status_mut() = StatusCode::from_u16(answer.status).unwrap();
                Ok(response)
            })
        })
    }
}
