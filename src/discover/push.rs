use tokio::sync::mpsc;

use crate::discover::{Discover, Update};
use crate::endpoint::{EndpointError, IntoEndpoint};
use crate::{BoxError, Endpoint};

/// A source fed by hand: whatever is sent through its [`PushHandle`]s.
///
/// Use it to bridge a registry client that delivers callbacks, or to change
/// endpoints from an admin endpoint or a test.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_lb::discover::Push;
/// use tower_lb::Pool;
///
/// let (source, handle) = Push::new();
/// let pool = Pool::builder("greet", source).build();
/// handle.replace(["127.0.0.1:5001", "127.0.0.1:5002"])?;
/// handle.remove("127.0.0.1:5002")?;
/// pool.ready().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Push {
    updates: mpsc::UnboundedReceiver<Update>,
}

/// Sends updates to a [`Push`] source. Cheap to clone; usable from any task.
#[derive(Debug, Clone)]
pub struct PushHandle {
    updates: mpsc::UnboundedSender<Update>,
}

/// Why a [`PushHandle`] could not deliver an update.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// An endpoint in the update was invalid; nothing was sent.
    #[error(transparent)]
    Invalid(#[from] EndpointError),
    /// The pool that read this source is gone.
    #[error("the pool fed by this push handle has been dropped")]
    Closed,
}

impl Push {
    /// A new source and the first handle to it.
    pub fn new() -> (Push, PushHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Push { updates: rx }, PushHandle { updates: tx })
    }
}

impl Discover for Push {
    async fn next_update(&mut self) -> Result<Update, BoxError> {
        match self.updates.recv().await {
            Some(update) => Ok(update),
            // Every handle is gone: the set can no longer change. Keep it.
            None => std::future::pending().await,
        }
    }
}

impl PushHandle {
    /// Adds one endpoint (or updates it, when its key is present).
    pub fn add(&self, endpoint: impl IntoEndpoint) -> Result<(), PushError> {
        self.send(Update::Insert(vec![endpoint.into_endpoint()?]))
    }

    /// Removes one endpoint, matched by key.
    pub fn remove(&self, endpoint: impl IntoEndpoint) -> Result<(), PushError> {
        self.send(Update::Remove(vec![endpoint.into_endpoint()?]))
    }

    /// Replaces the whole set. Validates every endpoint first: on an
    /// invalid one nothing is sent.
    pub fn replace<I>(&self, endpoints: I) -> Result<(), PushError>
    where
        I: IntoIterator,
        I::Item: IntoEndpoint,
    {
        let endpoints = endpoints
            .into_iter()
            .map(IntoEndpoint::into_endpoint)
            .collect::<Result<Vec<Endpoint>, _>>()?;
        self.send(Update::Replace(endpoints))
    }

    /// Sends any update as is.
    pub fn send(&self, update: Update) -> Result<(), PushError> {
        self.updates.send(update).map_err(|_| PushError::Closed)
    }
}
