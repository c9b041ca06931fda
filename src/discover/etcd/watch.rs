//! [`Etcd`]: the discovery source. Lists a key prefix, then watches it.

use std::collections::BTreeMap;
use std::fmt;

use super::client::{StreamEnd, WatchStream};
use super::codec::{self, InvalidInstance, KeyValue};
use super::{EtcdConfig, EtcdError};
use crate::discover::{Discover, Update};
use crate::{BoxError, Endpoint};

/// Discovers the instances registered in etcd under `<service>/`.
///
/// Each key under the prefix is one instance; its value is what etcd's Go
/// naming package writes, `{"Addr":"10.0.0.7:8080","Metadata":{...}}`, so
/// services registered with etcd's official Go client (or with
/// [`Registration`](super::Registration), or by hand with
/// `etcdctl put greet/10.0.0.7:8080 '{"Addr":"10.0.0.7:8080"}'`) are found
/// as they are. `Metadata` may carry `weight` and `zone`; its other scalar
/// entries become the endpoint's metadata.
///
/// How it behaves:
///
/// - It lists the prefix (the pool's first endpoint set), then watches it
///   from the next revision, turning events into inserts and removes.
/// - A value that cannot be read (bad JSON, bad address, zero weight) is
///   skipped with a warning naming the key; if that key held a good value
///   before, the good value stays. The watch goes on.
/// - When etcd goes away the error reaches the pool, which keeps the last
///   good set, marks it stale in its stats and calls again with backoff;
///   the watch then resumes from the last revision seen, so no event is
///   lost, and the set is re-announced so the pool knows it is fresh again.
/// - When that revision has been compacted meanwhile, it lists again.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tower::ServiceBuilder;
/// use tower_lb::LoadBalanceLayer;
/// use tower_lb::discover::etcd::{Etcd, EtcdConfig};
///
/// let etcd = EtcdConfig::new(["http://127.0.0.1:2379"])?;
/// let lb = LoadBalanceLayer::builder()
///     .service("greet", Etcd::new(etcd, "greet")?)
///     .build()?;
/// let client = ServiceBuilder::new().layer(lb).service(reqwest::Client::new());
/// # Ok(()) }
/// ```
pub struct Etcd {
    config: EtcdConfig,
    prefix: String,
    /// Every readable key under the prefix and its instance.
    instances: BTreeMap<Vec<u8>, Endpoint>,
    /// What the pool was last told, by endpoint key.
    announced: BTreeMap<String, Endpoint>,
    /// The revision `instances` reflects; 0 before the first list.
    revision: i64,
    state: State,
    /// An error was returned since the last update: announce the set
    /// again once the watch is back, so the pool clears its staleness.
    reannounce: bool,
}

enum State {
    List,
    Open,
    Streaming(WatchStream),
}

impl Etcd {
    /// Watches `<service>/` (a `service` that already ends in `/` is used
    /// as the prefix as is). Fails when `service` is empty.
    pub fn new(config: EtcdConfig, service: &str) -> Result<Self, EtcdError> {
        if service.trim_matches('/').is_empty() {
            return Err(EtcdError::Config(format!(
                "`{service}` is not a service name to watch in etcd"
            )));
        }
        let prefix = if service.ends_with('/') {
            service.to_string()
        } else {
            format!("{service}/")
        };
        Ok(Self {
            config,
            prefix,
            instances: BTreeMap::new(),
            announced: BTreeMap::new(),
            revision: 0,
            state: State::List,
            reannounce: false,
        })
    }

    /// The watched key prefix, e.g. `greet/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn fail(&self, source: EtcdError) -> EtcdError {
        EtcdError::Discovery {
            prefix: self.prefix.clone(),
            source: Box::new(source),
        }
    }

    async fn next(&mut self) -> Result<Update, EtcdError> {
        loop {
            match &mut self.state {
                State::List => {
                    let listed = self
                        .config
                        .range_prefix(self.prefix.as_bytes())
                        .await
                        .map_err(|e| self.fail(e))?;
                    if listed.more {
                        // A range without a limit returns everything; if a
                        // proxy capped it we would silently lose instances.
                        return Err(self.fail(EtcdError::Status {
                            path: "/v3/kv/range",
                            status: 200,
                            code: 0,
                            message: "the listing was truncated".into(),
                        }));
                    }
                    self.instances.clear();
                    for kv in listed.kvs {
                        self.put(kv);
                    }
                    self.revision = listed.header.revision;
                    self.state = State::Open;
                    self.reannounce = false;
                    tracing::debug!(
                        prefix = %self.prefix,
                        revision = self.revision,
                        instances = self.instances.len(),
                        "etcd prefix listed"
                    );
                    return Ok(self.announce_all());
                }
                State::Open => {
                    let mut stream = self
                        .config
                        .watch_prefix(self.prefix.as_bytes(), self.revision.saturating_add(1))
                        .await
                        .map_err(|e| self.fail(e))?;
                    // The first message says whether the watch exists; a
                    // compacted start revision cancels it right away.
                    let first = tokio::time::timeout(self.config.timeout(), stream.next_line())
                        .await
                        .unwrap_or(Err(StreamEnd::Idle(self.config.timeout())))
                        .map_err(|e| self.ended(e))?;
                    if let Some(error) = first.error {
                        self.config.token_rejected(error.grpc_code, &error.message);
                        return Err(self.fail(EtcdError::WatchFailed {
                            reason: error.message,
                        }));
                    }
                    let result = first.result.unwrap_or_default();
                    if result.canceled {
                        self.canceled(&result)?;
                        continue;
                    }
                    if !result.created {
                        return Err(self.fail(EtcdError::WatchFailed {
                            reason: "etcd did not confirm the watch".into(),
                        }));
                    }
                    tracing::debug!(prefix = %self.prefix, from = self.revision.saturating_add(1), "etcd watch open");
                    self.state = State::Streaming(stream);
                    if std::mem::take(&mut self.reannounce) {
                        return Ok(self.announce_all());
                    }
                }
                State::Streaming(stream) => {
                    let line = match stream.next_line().await {
                        Ok(line) => line,
                        Err(end) => return Err(self.ended(end)),
                    };
                    if let Some(error) = line.error {
                        // etcd stopping sends this ("transport is closing").
                        self.state = State::Open;
                        return Err(self.fail(EtcdError::WatchFailed {
                            reason: error.message,
                        }));
                    }
                    let Some(result) = line.result else {
                        continue;
                    };
                    if result.canceled {
                        self.canceled(&result)?;
                        continue;
                    }
                    if result.events.is_empty() {
                        // A progress notification: everything up to this
                        // revision has been delivered.
                        if !result.created {
                            self.revision = self.revision.max(result.header.revision);
                        }
                        continue;
                    }
                    for event in result.events {
                        self.revision = self.revision.max(event.kv.mod_revision);
                        if event.is_delete() {
                            self.instances.remove(&event.kv.key);
                        } else {
                            self.put(event.kv);
                        }
                    }
                    if let Some(update) = self.announce_changes() {
                        return Ok(update);
                    }
                }
            }
        }
    }

    /// The watch was canceled by etcd: list again when compaction was the
    /// reason, otherwise report it.
    fn canceled(&mut self, result: &codec::WatchResult) -> Result<(), EtcdError> {
        if result.compact_revision > 0 {
            tracing::info!(
                prefix = %self.prefix,
                revision = self.revision,
                compacted_to = result.compact_revision,
                "etcd compacted past the watched revision; listing again"
            );
            self.state = State::List;
            return Ok(());
        }
        self.state = State::Open;
        self.config.token_rejected(0, &result.cancel_reason);
        let reason = if result.cancel_reason.is_empty() {
            "etcd canceled the watch".to_string()
        } else {
            result.cancel_reason.clone()
        };
        Err(self.fail(EtcdError::WatchFailed { reason }))
    }

    fn ended(&mut self, end: StreamEnd) -> EtcdError {
        self.state = State::Open;
        self.fail(EtcdError::WatchFailed {
            reason: end.to_string(),
        })
    }

    /// Records one PUT: a readable value replaces the key's instance; an
    /// unreadable one is logged and leaves the previous value in place.
    fn put(&mut self, kv: KeyValue) {
        match codec::decode_instance(&kv.value) {
            Ok(endpoint) => {
                self.instances.insert(kv.key, endpoint);
            }
            Err(reason) => self.skip(&kv.key, &reason),
        }
    }

    fn skip(&self, key: &[u8], reason: &InvalidInstance) {
        let kept = self.instances.contains_key(key);
        tracing::warn!(
            prefix = %self.prefix,
            key = %crate::redact::userinfo(&String::from_utf8_lossy(key)),
            %reason,
            kept_previous_value = kept,
            "skipping an etcd key that is not a valid instance"
        );
    }

    /// The current set, deduplicated by endpoint key (two etcd keys may
    /// name one instance; it stays while either does).
    fn current(&self) -> BTreeMap<String, Endpoint> {
        let mut set = BTreeMap::new();
        for endpoint in self.instances.values() {
            set.entry(endpoint.key().to_string())
                .or_insert_with(|| endpoint.clone());
        }
        set
    }

    fn announce_all(&mut self) -> Update {
        self.announced = self.current();
        Update::Replace(self.announced.values().cloned().collect())
    }

    /// The update from what was announced to the current set, if any.
    fn announce_changes(&mut self) -> Option<Update> {
        let current = self.current();
        let changed: Vec<Endpoint> = current
            .iter()
            .filter(|(k, e)| self.announced.get(*k) != Some(e))
            .map(|(_, e)| e.clone())
            .collect();
        let removed: Vec<Endpoint> = self
            .announced
            .iter()
            .filter(|(k, _)| !current.contains_key(*k))
            .map(|(_, e)| e.clone())
            .collect();
        let update = match (changed.is_empty(), removed.is_empty()) {
            (true, true) => return None,
            (false, true) => Update::Insert(changed),
            (true, false) => Update::Remove(removed),
            (false, false) => Update::Replace(current.values().cloned().collect()),
        };
        self.announced = current;
        Some(update)
    }
}

impl Discover for Etcd {
    async fn next_update(&mut self) -> Result<Update, BoxError> {
        match self.next().await {
            Ok(update) => Ok(update),
            Err(e) => {
                self.reannounce = true;
                Err(e.into())
            }
        }
    }
}

impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::List => "list",
            State::Open => "open",
            State::Streaming(_) => "streaming",
        };
        f.debug_struct("Etcd")
            .field("endpoints", &self.config.endpoints())
            .field("prefix", &self.prefix)
            .field("revision", &self.revision)
            .field("instances", &self.instances.len())
            .field("state", &state)
            .finish()
    }
}
