use crate::discover::{Discover, Update};
use crate::endpoint::{EndpointError, IntoEndpoint};
use crate::{BoxError, Endpoint};

/// A fixed list of endpoints: one [`Update::Replace`], then silence.
///
/// ```
/// use tower_lb::discover::Fixed;
///
/// let source = Fixed::new(["http://127.0.0.1:5001", "127.0.0.1:5002"])?;
/// assert_eq!(source.endpoints().len(), 2);
/// # Ok::<(), tower_lb::EndpointError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Fixed {
    endpoints: Vec<Endpoint>,
    sent: bool,
}

impl Fixed {
    /// Parses every item; the first invalid one is the error.
    pub fn new<I>(endpoints: I) -> Result<Self, EndpointError>
    where
        I: IntoIterator,
        I::Item: IntoEndpoint,
    {
        let endpoints = endpoints
            .into_iter()
            .map(IntoEndpoint::into_endpoint)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            endpoints,
            sent: false,
        })
    }

    /// The endpoints this source announces.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }
}

impl Discover for Fixed {
    async fn next_update(&mut self) -> Result<Update, BoxError> {
        if self.sent {
            // Nothing will ever change; the pool drops this future when it stops.
            std::future::pending::<()>().await;
        }
        self.sent = true;
        Ok(Update::Replace(self.endpoints.clone()))
    }
}
