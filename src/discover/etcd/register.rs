//! [`Registration`]: this instance's key in etcd, kept alive under a lease.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;

use super::codec::{self, InstanceValue};
use super::{EtcdConfig, EtcdError};
use crate::Endpoint;
use crate::endpoint::IntoEndpoint;

/// The shortest lease etcd grants in practice; a shorter TTL is raised.
const MIN_TTL: Duration = Duration::from_secs(2);

/// This instance, registered in etcd under `<service>/<id>` with a lease.
///
/// [`register`](RegistrationBuilder::register) grants a lease with the TTL,
/// writes the key under it, and keeps the lease alive from a background
/// task (a keepalive every third of the TTL). If etcd goes away the task
/// keeps trying; if the lease was lost meanwhile (etcd was down longer than
/// the TTL, or the lease was revoked), it registers again under a new lease.
///
/// [`deregister`](Registration::deregister) deletes the key and revokes the
/// lease, so clients stop sending here at once. Dropping the registration
/// does the same on a best-effort basis (in a task spawned on the current
/// runtime, if there is one); a process that dies without either is removed
/// when its lease expires, one TTL later.
///
/// The value is written in the format of etcd's Go naming package,
/// `{"Op":0,"Addr":"10.0.0.7:8080","Metadata":{...}}`, so Go services using
/// etcd's gRPC resolver and [`Etcd`](super::Etcd) sources both find it.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tower_lb::discover::etcd::{EtcdConfig, Registration};
///
/// let etcd = EtcdConfig::new(["http://127.0.0.1:2379"])?;
/// let registration = Registration::builder(etcd, "greet", "10.0.0.7:8080")?
///     .ttl(Duration::from_secs(10))
///     .weight(2)
///     .zone("eu-west-1a")
///     .metadata("version", "1.4.2")
///     .register()
///     .await?;
/// assert_eq!(registration.key(), "greet/10.0.0.7:8080");
/// // ... serve ...
/// registration.deregister().await?;
/// # Ok(()) }
/// ```
pub struct Registration {
    config: EtcdConfig,
    key: String,
    endpoint: Endpoint,
    lease: Arc<Mutex<i64>>,
    task: Option<JoinHandle<()>>,
}

/// Configures a [`Registration`]. Made by [`Registration::builder`].
pub struct RegistrationBuilder {
    config: EtcdConfig,
    service: String,
    endpoint: Endpoint,
    id: Option<String>,
    ttl: Duration,
    weight: Option<u32>,
    metadata: BTreeMap<String, Value>,
}

impl Registration {
    /// Registers `endpoint` (`host:port` or `http(s)://host:port`, as
    /// clients should reach it) under `<service>/`. Fails when the service
    /// name is empty or the endpoint is invalid.
    pub fn builder(
        config: EtcdConfig,
        service: &str,
        endpoint: impl IntoEndpoint,
    ) -> Result<RegistrationBuilder, EtcdError> {
        let service = service.trim_end_matches('/');
        if service.is_empty() {
            return Err(EtcdError::Config(
                "an empty service name cannot be registered in etcd".into(),
            ));
        }
        let endpoint = endpoint
            .into_endpoint()
            .map_err(|source| EtcdError::InvalidEndpoint {
                input: source.input().to_string(),
                source,
            })?;
        Ok(RegistrationBuilder {
            config,
            service: service.to_string(),
            endpoint,
            id: None,
            ttl: Duration::from_secs(10),
            weight: None,
            metadata: BTreeMap::new(),
        })
    }

    /// The etcd key, `<service>/<id>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The registered endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The current lease, or `None` while the key is being registered again
    /// after the lease was lost.
    pub fn lease_id(&self) -> Option<i64> {
        let id = *self.lease.lock().unwrap_or_else(PoisonError::into_inner);
        (id != 0).then_some(id)
    }

    /// Deletes the key and revokes the lease, then stops the keepalive.
    ///
    /// Fails when etcd cannot be reached; the key then disappears when its
    /// lease expires, as the keepalive has stopped either way.
    pub async fn deregister(mut self) -> Result<(), EtcdError> {
        self.stop();
        let lease = std::mem::take(&mut *self.lease.lock().unwrap_or_else(PoisonError::into_inner));
        let result = remove(&self.config, &self.key, lease).await;
        match &result {
            Ok(()) => tracing::info!(key = %self.key, "deregistered from etcd"),
            Err(error) => {
                tracing::warn!(key = %self.key, %error, "deregistration failed; the key expires with its lease")
            }
        }
        result.map_err(|e| EtcdError::Registration {
            key: self.key.clone(),
            source: Box::new(e),
        })
    }

    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Deletes the key (watchers see it go at once), then revokes the lease.
async fn remove(config: &EtcdConfig, key: &str, lease: i64) -> Result<(), EtcdError> {
    let deleted = config.delete(key.as_bytes()).await;
    if lease != 0
        && let Err(error) = config.lease_revoke(lease).await
    {
        tracing::debug!(key, %error, "lease revoke failed; it will expire");
    }
    deleted
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return; // deregistered
        };
        task.abort();
        let lease = std::mem::take(&mut *self.lease.lock().unwrap_or_else(PoisonError::into_inner));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(key = %self.key, "registration dropped outside a runtime; the key expires with its lease");
            return;
        };
        let config = self.config.clone();
        let key = std::mem::take(&mut self.key);
        runtime.spawn(async move {
            if let Err(error) = remove(&config, &key, lease).await {
                tracing::debug!(%key, %error, "best-effort deregistration on drop failed; the key expires with its lease");
            }
        });
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .field("endpoint", &self.endpoint)
            .field("lease_id", &self.lease_id())
            .finish()
    }
}

impl RegistrationBuilder {
    /// The instance's id, the last part of its key (default: the endpoint's
    /// `host:port`, as Go services usually do).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The lease TTL (default 10 s, at least 2 s): how long after a crash
    /// the instance still appears registered.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(MIN_TTL);
        self
    }

    /// Writes `weight` into the metadata (read by [`Etcd`](super::Etcd)
    /// sources). Zero makes [`register`](Self::register) fail.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Writes `zone` into the metadata.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.metadata
            .insert("zone".into(), Value::String(zone.into()));
        self
    }

    /// Adds one metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata
            .insert(key.into(), Value::String(value.into()));
        self
    }

    /// Registers and starts the keepalive task (on the current tokio
    /// runtime). Fails, naming the key, when etcd cannot be reached or
    /// refuses the lease or the key.
    pub async fn register(self) -> Result<Registration, EtcdError> {
        let id = self.id.unwrap_or_else(|| codec::addr_of(&self.endpoint));
        let key = format!("{}/{}", self.service, id);
        let wrap = |source: EtcdError| EtcdError::Registration {
            key: key.clone(),
            source: Box::new(source),
        };
        let mut metadata = self.metadata;
        match self.weight {
            Some(0) => {
                return Err(wrap(EtcdError::Config(
                    "weight 0 is not allowed; weights start at 1".into(),
                )));
            }
            Some(w) => {
                metadata.insert("weight".into(), Value::from(w));
            }
            None => {}
        }
        let addr = codec::addr_of(&self.endpoint);
        let value = serde_json::to_vec(&InstanceValue {
            op: 0,
            addr: &addr,
            metadata: (!metadata.is_empty()).then_some(&metadata),
        })
        .map_err(|e| wrap(EtcdError::Config(format!("cannot encode the value: {e}"))))?;

        let lease = register_once(&self.config, &key, &value, self.ttl)
            .await
            .map_err(wrap)?;
        tracing::info!(%key, lease, ttl_s = self.ttl.as_secs(), "registered in etcd");
        let lease = Arc::new(Mutex::new(lease));
        let task = tokio::spawn(keep_alive(
            self.config.clone(),
            key.clone(),
            value,
            self.ttl,
            lease.clone(),
        ));
        Ok(Registration {
            config: self.config,
            key,
            endpoint: self.endpoint,
            lease,
            task: Some(task),
        })
    }
}

impl fmt::Debug for RegistrationBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationBuilder")
            .field("service", &self.service)
            .field("endpoint", &self.endpoint)
            .field("id", &self.id)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Grants a lease and writes the key under it; returns the lease.
async fn register_once(
    config: &EtcdConfig,
    key: &str,
    value: &[u8],
    ttl: Duration,
) -> Result<i64, EtcdError> {
    let lease = config.lease_grant(ttl).await?;
    if let Err(e) = config.put(key.as_bytes(), value, lease).await {
        let _ = config.lease_revoke(lease).await;
        return Err(e);
    }
    Ok(lease)
}

/// Keeps the lease alive; registers again when it was lost. Runs until
/// aborted by the registration.
async fn keep_alive(
    config: EtcdConfig,
    key: String,
    value: Vec<u8>,
    ttl: Duration,
    lease: Arc<Mutex<i64>>,
) {
    let period = (ttl / 3).max(Duration::from_millis(200));
    let mut failures = 0u32;
    loop {
        let delay = if failures == 0 {
            period
        } else {
            // Retry well within the TTL: the lease is still alive for a while.
            (Duration::from_millis(100) * (1 << failures.min(6))).min(period)
        };
        tokio::time::sleep(delay).await;
        let current = *lease.lock().unwrap_or_else(PoisonError::into_inner);
        let outcome = if current == 0 {
            reregister(&config, &key, &value, ttl, &lease).await
        } else {
            match config.lease_keepalive(current).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => {
                    tracing::warn!(%key, lease = current, "etcd lease lost; registering again");
                    *lease.lock().unwrap_or_else(PoisonError::into_inner) = 0;
                    reregister(&config, &key, &value, ttl, &lease).await
                }
                Err(e) => Err(e),
            }
        };
        match outcome {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(%key, "etcd registration kept alive again");
                }
                failures = 0;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::warn!(%key, %error, failures, "etcd keepalive failed; retrying");
            }
        }
    }
}

async fn reregister(
    config: &EtcdConfig,
    key: &str,
    value: &[u8],
    ttl: Duration,
    lease: &Mutex<i64>,
) -> Result<(), EtcdError> {
    let id = register_once(config, key, value, ttl).await?;
    *lease.lock().unwrap_or_else(PoisonError::into_inner) = id;
    tracing::info!(key, lease = id, "registered in etcd again");
    Ok(())
}
