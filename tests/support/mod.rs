//! The integration tests' one support module, one file per concern:
//!
//! - [`greet`]: the examples' greet server (`examples/support/greet.rs`,
//!   included here so test files need not include it themselves);
//! - [`instances`]: real greet instances on 127.0.0.1, started in bulk;
//! - [`requests`]: one request through the balanced client;
//! - [`pool`]: looking into a pool (keys, stats, requests in flight);
//! - [`processes`]: binaries a test requires, free ports, temporary
//!   directories, child processes killed on drop;
//! - [`etcd`], [`dnsmasq`]: real discovery backends built on those;
//! - [`retry`]: refusing endpoints, in-memory instances behind a real
//!   `LoadBalance` layer, and checks on `Attempts`.
//!
//! This file holds what they all share: the one bound on a wait, the client
//! type, the reqwest client, logs, and bounded waits.

// Each test binary uses only part of this module.
#![allow(dead_code)]

pub mod captured;
#[path = "../../examples/support/greet.rs"]
pub mod greet;

pub mod dnsmasq;
pub mod etcd;
pub mod faulty;
pub mod instances;
pub mod pool;
pub mod processes;
// Sending through `LoadBalance<reqwest::Client>` needs the crate's `reqwest`
// feature; the tests that need no reqwest build without it.
#[cfg(feature = "reqwest")]
pub mod requests;
pub mod retry;
pub mod simulated;
pub mod tls;

use std::future::Future;
use std::time::Duration;

use tower_lb::LoadBalance;

/// An upper bound for any single wait in a test: generous enough for a
/// loaded 2-core machine, but a hung test fails instead of hanging the
/// suite.
pub const WAIT: Duration = Duration::from_secs(10);

/// The balanced reqwest client the tests build.
pub type Client = LoadBalance<reqwest::Client>;

/// A plain reqwest client for 127.0.0.1 (no proxy, whatever the environment says).
pub fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build a reqwest client")
}

/// Sends the crate's logs (`RUST_LOG`, default `tower_lb=debug`) to the
/// test's captured output, shown when a test fails.
pub fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "tower_lb=debug".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Polls `condition` every few milliseconds until it holds; panics with
/// `what` if it does not within [`WAIT`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "timed out after {WAIT:?} waiting until {what}"
    );
}

/// Awaits `future`, panicking with `what` if it takes longer than [`WAIT`].
pub async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}
