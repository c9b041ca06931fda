//! Service discovery: where a pool learns which endpoints exist.
//!
//! A source implements [`Discover`]: an async method that yields the next
//! [`Update`]. The pool's background task calls it in a loop, so a source
//! simply waits until it has something new to say. Built in:
//!
//! - [`Fixed`]: a list that never changes;
//! - [`Push`] / [`PushHandle`]: updates pushed from any task;
//! - [`Poller`]: any async function called on an interval, its results
//!   diffed into updates;
//! - `Dns` (feature `dns`): A/AAAA or SRV records, re-resolved on TTL;
//! - `etcd::Etcd` (feature `etcd`): a watched key prefix in etcd v3, and
//!   `etcd::Registration` to register this instance under a lease;
//! - `JsonFile` (feature `file`): a JSON file of endpoints, re-read when it
//!   changes.
//!
//! Writing your own for a registry takes a dozen lines:
//!
//! ```
//! use std::time::Duration;
//! use tower_lb::discover::{Discover, Update};
//! use tower_lb::{BoxError, Endpoint};
//!
//! /// Asks our registry for the instances every 5 s.
//! struct MyRegistry {
//!     first: bool,
//! }
//!
//! impl Discover for MyRegistry {
//!     async fn next_update(&mut self) -> Result<Update, BoxError> {
//!         if !std::mem::take(&mut self.first) {
//!             tokio::time::sleep(Duration::from_secs(5)).await;
//!         }
//!         let addrs = ["10.0.0.7:8080", "10.0.0.8:8080"]; // ask the registry here
//!         let endpoints = addrs.iter().map(|a| Endpoint::new(a)).collect::<Result<_, _>>()?;
//!         Ok(Update::Replace(endpoints))
//!     }
//! }
//! ```

#[cfg(feature = "dns")]
pub mod dns;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "file")]
pub mod file;
mod fixed;
mod poller;
mod push;

use std::future::Future;
use std::pin::Pin;

pub use fixed::Fixed;
pub use poller::Poller;
pub use push::{Push, PushError, PushHandle};

#[cfg(feature = "dns")]
pub use dns::{DEFAULT_DNS_TIMEOUT, Dns, DnsError, SRV_WEIGHT_SCALE};
#[cfg(feature = "etcd")]
pub use etcd::Etcd;
#[cfg(feature = "file")]
pub use file::JsonFile;

use crate::{BoxError, Endpoint};

/// A change to a pool's endpoint set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The complete set: endpoints not listed are removed.
    ///
    /// An empty replacement of a non-empty set is treated as a discovery
    /// fault and ignored unless the pool allows it
    /// ([`PoolBuilder::allow_empty`](crate::PoolBuilder::allow_empty)):
    /// a registry glitch must not take a service dark.
    Replace(Vec<Endpoint>),
    /// Endpoints added, or updated (new weight, zone, metadata) when their
    /// key is already present.
    Insert(Vec<Endpoint>),
    /// Endpoints removed, matched by key.
    Remove(Vec<Endpoint>),
}

/// A source of endpoint updates for one logical service.
///
/// `next_update` is called again as soon as the previous update has been
/// applied; it should wait (for a watch event, a timer, a message) until it
/// has something new. A source with nothing more to say may stay pending
/// forever. An `Err` keeps the pool's last good set: the pool logs it,
/// reports it in its stats, backs off and calls again.
///
/// Implement it with an `async fn`; the returned future must be `Send`.
/// For a type-erased source use [`BoxDiscover`].
pub trait Discover: Send + 'static {
    /// Waits for and returns the next change.
    fn next_update(&mut self) -> impl Future<Output = Result<Update, BoxError>> + Send;
}

/// The object-safe twin of [`Discover`], implemented for every `Discover`;
/// it exists so sources of different types can live in one collection.
pub trait DynDiscover: Send + 'static {
    /// [`Discover::next_update`], boxed.
    fn next_update_boxed(
        &mut self,
    ) -> Pin<Box<dyn Future<Output = Result<Update, BoxError>> + Send + '_>>;
}

impl<D: Discover> DynDiscover for D {
    fn next_update_boxed(
        &mut self,
    ) -> Pin<Box<dyn Future<Output = Result<Update, BoxError>> + Send + '_>> {
        Box::pin(self.next_update())
    }
}

/// A type-erased discovery source.
///
/// ```
/// use tower_lb::discover::{BoxDiscover, Fixed, Push};
///
/// let sources: Vec<BoxDiscover> = vec![
///     Box::new(Fixed::new(["127.0.0.1:5001"])?),
///     Box::new(Push::new().0),
/// ];
/// # Ok::<(), tower_lb::EndpointError>(())
/// ```
pub type BoxDiscover = Box<dyn DynDiscover>;

impl Discover for BoxDiscover {
    fn next_update(&mut self) -> impl Future<Output = Result<Update, BoxError>> + Send {
        (**self).next_update_boxed()
    }
}
