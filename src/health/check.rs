//! Active health checks: what a probe is and how one is run.

use std::fmt;
use std::future::Future;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::chain_message;
use crate::{BoxError, Endpoint};

type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
type ProbeFn = Arc<dyn Fn(Endpoint) -> ProbeFuture + Send + Sync>;

/// A probe run against every endpoint of a pool on an interval, off the
/// request path; an endpoint that fails `unhealthy_threshold` probes in a row
/// leaves rotation until it passes `healthy_threshold` in a row.
///
/// ```
/// use std::time::Duration;
/// use tower_lb::health::HealthCheck;
///
/// // GET /health must answer 2xx within 1 s, every 5 s (±10%).
/// let http = HealthCheck::http("/health")
///     .interval(Duration::from_secs(5))
///     .timeout(Duration::from_secs(1));
///
/// // Any async check: here, that a TCP connection opens.
/// let tcp = HealthCheck::custom(|endpoint| async move {
///     let addr = format!("{}:{}", endpoint.host(), endpoint.port());
///     tokio::net::TcpStream::connect(addr).await.map(drop)
/// })
/// .start_unhealthy(true);
/// ```
#[derive(Clone)]
pub struct HealthCheck {
    probe: Probe,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) healthy_threshold: u32,
    pub(crate) unhealthy_threshold: u32,
    pub(crate) start_unhealthy: bool,
}

#[derive(Clone)]
enum Probe {
    #[cfg(feature = "reqwest")]
    Http {
        path: String,
        expected: RangeInclusive<u16>,
        client: Option<reqwest::Client>,
    },
    Custom(ProbeFn),
}

impl HealthCheck {
    /// What the check does, for logs: `GET /health`, or `a custom check`.
    pub fn describe(&self) -> String {
        match &self.probe {
            #[cfg(feature = "reqwest")]
            Probe::Http { path, .. } => format!("GET {path}"),
            Probe::Custom(_) => "a custom check".to_string(),
        }
    }

    fn with_probe(probe: Probe) -> Self {
        Self {
            probe,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            start_unhealthy: false,
        }
    }

    /// `GET {path}` on each endpoint, healthy when the status is 2xx.
    /// Probes use a small client of their own (connect and request bounded
    /// by the timeout) unless given one with [`HealthCheck::client`].
    #[cfg(feature = "reqwest")]
    pub fn http(path: impl Into<String>) -> Self {
        let mut path = path.into();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        Self::with_probe(Probe::Http {
            path,
            expected: 200..=299,
            client: None,
        })
    }

    /// Any async check of an endpoint: `Ok` is healthy.
    pub fn custom<F, Fut, E>(check: F) -> Self
    where
        F: Fn(Endpoint) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let check = Arc::new(move |endpoint: Endpoint| -> ProbeFuture {
            let fut = check(endpoint);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        Self::with_probe(Probe::Custom(check))
    }

    /// The statuses that count as healthy for an HTTP probe (default
    /// 200..=299). No effect on a custom check.
    #[cfg_attr(not(feature = "reqwest"), allow(unused_mut))]
    pub fn expected_status(mut self, range: RangeInclusive<u16>) -> Self {
        #[cfg(feature = "reqwest")]
        if let Probe::Http { expected, .. } = &mut self.probe {
            *expected = range;
        }
        #[cfg(not(feature = "reqwest"))]
        let _ = range;
        self
    }

    /// The client for HTTP probes (default: a small one of their own).
    #[cfg(feature = "reqwest")]
    pub fn client(mut self, client: reqwest::Client) -> Self {
        if let Probe::Http { client: c, .. } = &mut self.probe {
            *c = Some(client);
        }
        self
    }

    /// Time between probe rounds (default 10 s); each round is jittered by
    /// up to ±10% so many clients do not probe in step.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long one probe may take before it counts as failed (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Passed probes in a row to become healthy (default 2; at least 1).
    pub fn healthy_threshold(mut self, n: u32) -> Self {
        self.healthy_threshold = n.max(1);
        self
    }

    /// Failed probes in a row to become unhealthy (default 3; at least 1).
    pub fn unhealthy_threshold(mut self, n: u32) -> Self {
        self.unhealthy_threshold = n.max(1);
        self
    }

    /// Whether a new endpoint waits for its first passed probe before it
    /// gets traffic (default: no, it is eligible until a probe says
    /// otherwise).
    pub fn start_unhealthy(mut self, unhealthy: bool) -> Self {
        self.start_unhealthy = unhealthy;
        self
    }

    /// Probes `endpoint` once; the error says why it failed.
    #[cfg_attr(not(feature = "reqwest"), allow(unused_variables))]
    pub(crate) async fn probe(
        &self,
        endpoint: &Endpoint,
        default_client: &ProbeClient,
    ) -> Result<(), String> {
        let run = async {
            match &self.probe {
                #[cfg(feature = "reqwest")]
                Probe::Http {
                    path,
                    expected,
                    client,
                } => {
                    let client = client.as_ref().unwrap_or(&default_client.0);
                    let url = format!("{}://{}{}", endpoint.scheme(), endpoint.authority(), path);
                    let response = client
                        .get(&url)
                        .send()
                        .await
                        .map_err(|e| chain_message(&e))?;
                    let status = response.status().as_u16();
                    if expected.contains(&status) {
                        Ok(())
                    } else {
                        Err(format!("GET {path} answered {status}"))
                    }
                }
                Probe::Custom(check) => check(endpoint.clone())
                    .await
                    .map_err(|e| chain_message(&*e)),
            }
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

/// The client HTTP probes share when the user gave none.
#[derive(Clone, Default)]
pub(crate) struct ProbeClient(#[cfg(feature = "reqwest")] reqwest::Client);

impl ProbeClient {
    pub(crate) fn for_check(check: &HealthCheck) -> Self {
        #[cfg(feature = "reqwest")]
        {
            // Pooled connections would hide a server that stopped accepting:
            // every probe opens its own.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .connect_timeout(check.timeout)
                .timeout(check.timeout)
                .build()
                .unwrap_or_default();
            ProbeClient(client)
        }
        #[cfg(not(feature = "reqwest"))]
        {
            let _ = check;
            ProbeClient()
        }
    }
}

impl fmt::Debug for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("HealthCheck");
        match &self.probe {
            #[cfg(feature = "reqwest")]
            Probe::Http { path, expected, .. } => d.field("http", path).field("expected", expected),
            Probe::Custom(_) => d.field("custom", &".."),
        };
        d.field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("healthy_threshold", &self.healthy_threshold)
            .field("unhealthy_threshold", &self.unhealthy_threshold)
            .field("start_unhealthy", &self.start_unhealthy)
            .finish()
    }
}
