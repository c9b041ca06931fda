//! Health: taking bad endpoints out of rotation and bringing them back.
//!
//! Clients such as reqwest are always ready, so nothing in tower ever takes
//! a dead instance out of rotation. A pool does, three ways:
//!
//! - **Passive outlier detection** ([`OutlierDetection`], on by default):
//!   every finished request is evidence; an endpoint that fails 5 in a row
//!   is ejected for a while that grows with each ejection. At most half a
//!   pool is ejected at once.
//! - **Active health checks** ([`HealthCheck`], optional): a probe on an
//!   interval, off the request path, with healthy and unhealthy thresholds.
//! - **Panic mode**: when fewer than the panic threshold's share (default
//!   50%) of endpoints are eligible, the pool balances over all of them,
//!   as Envoy does, rather than crushing the few that remain.
//!
//! Optionally, **slow start** ramps a new or returning endpoint's share of
//! traffic up over a window.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower_lb::{Pool, discover::Fixed};
//! use tower_lb::health::{HealthCheck, OutlierDetection};
//!
//! let pool = Pool::builder("greet", Fixed::new(["127.0.0.1:5001", "127.0.0.1:5002"])?)
//!     .outlier_detection(OutlierDetection::new().consecutive_failures(3))
//!     .health_check(HealthCheck::http("/health").interval(Duration::from_secs(5)))
//!     .panic_threshold(0.5)
//!     .slow_start(Duration::from_secs(30))
//!     .build();
//! # Ok(()) }
//! ```

mod book;
mod check;
pub(crate) mod outlier;
mod prober;

use tokio::time::Instant;

pub use book::HealthState;
pub use check::HealthCheck;
pub use outlier::OutlierDetection;

pub(crate) use book::{Changes, HealthBook, Views, remaining};
pub(crate) use outlier::MonitorShared;
pub(crate) use prober::run as run_checks;

/// What the request path and the prober tell a pool's driver.
#[derive(Debug)]
pub(crate) enum HealthEvent {
    /// Requests to `key` crossed a failure threshold.
    Failing {
        key: Box<str>,
        reason: String,
        at: Instant,
    },
    /// A probe of `key` finished.
    Probe {
        key: Box<str>,
        result: Result<(), String>,
    },
}

/// The default panic threshold: below half the endpoints eligible, use all.
pub const DEFAULT_PANIC_THRESHOLD: f64 = 0.5;
