//! DNS discovery: A/AAAA records of a host name, or SRV records. Feature
//! `dns`, built on `hickory-resolver`.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower_lb::LoadBalanceLayer;
//! use tower_lb::discover::Dns;
//!
//! let lb = LoadBalanceLayer::builder()
//!     // Every address of greet.internal, port 8080, re-resolved as the TTL says.
//!     .service("greet", Dns::host("greet.internal", 8080)?.max_ttl(Duration::from_secs(30)))
//!     // Targets, ports and weights from SRV records, asking one name server.
//!     .service("users", Dns::srv("_http._tcp.users.internal")?.name_servers(["10.0.0.2:53".parse()?]))
//!     .build()?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::rdata::SRV;
use hickory_resolver::proto::rr::{Name, RData};
use tokio::time::Instant;

use crate::discover::{Discover, Update};
use crate::{BoxError, Endpoint};

/// Endpoints from DNS: the A/AAAA records of a host name with a port
/// ([`Dns::host`]), or SRV records ([`Dns::srv`]).
///
/// The name is resolved at once, then again when the answer's TTL expires,
/// with the wait held between a floor ([`min_ttl`](Dns::min_ttl), default
/// 1 s) and a cap ([`max_ttl`](Dns::max_ttl), default 60 s). A changed
/// answer becomes an [`Update::Replace`]; an unchanged one says nothing.
///
/// SRV records give each target's port and weight. Weights follow RFC 2782:
/// in a group where other records have a weight above 0, a weight-0 target
/// is chosen rarely (it gets weight 1 while the other weights are scaled by
/// [`SRV_WEIGHT_SCALE`]); a group whose weights are all 0 is chosen from
/// evenly. A target with several addresses gives each the record's weight. Only the lowest-priority group that resolves to at
/// least one address is used, so higher-numbered priorities are a fallback
/// for when the whole preferred group is gone. Targets found in the answer's
/// additional section are not looked up again.
///
/// Every resolution is bounded by the source's [`timeout`](Dns::timeout)
/// (default [`DEFAULT_DNS_TIMEOUT`], 2 s): a name server that vanished
/// makes the pool stale within that time, not after the resolver's own
/// retries.
///
/// Failures never empty the pool: a lookup error, a name with no records,
/// or SRV records none of whose targets resolve, are returned as a
/// [`DnsError`]; the pool keeps its last good set, reports it as stale and
/// asks again with backoff. A single SRV record that cannot be used (port
/// 0, a target without addresses) is skipped with a warning naming it.
///
/// Endpoints are `http://ip:port`.
pub struct Dns {
    target: Target,
    timeout: Duration,
    choice: ResolverChoice,
    resolver: Option<TokioResolver>,
    min_ttl: Duration,
    max_ttl: Duration,
    next_at: Option<Instant>,
    last: Option<Vec<Endpoint>>,
    /// An error was returned since the last update: announce the next good
    /// answer even when unchanged, so the pool knows it is fresh again.
    reannounce: bool,
}

/// How long one resolution may take by default: 2 s.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(2);

/// The factor applied to non-zero SRV weights in a group that also has
/// weight-0 records, so that those (weight 1) are chosen rarely: with one
/// weight-1 record beside a weight-0 one, the weight-0 target gets 1 pick
/// in 101.
pub const SRV_WEIGHT_SCALE: u32 = 100;

#[derive(Clone)]
enum Target {
    Host { name: Name, port: u16 },
    Srv { name: Name },
}

enum ResolverChoice {
    System,
    NameServers(Vec<SocketAddr>),
    Given,
}

/// Why a DNS source could not produce endpoints. Messages name the queried
/// name and record type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The name is not a valid DNS name.
    #[error("`{name}` is not a valid DNS name: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Port 0 was given for a host lookup.
    #[error("port 0 is not a usable port for `{name}`")]
    InvalidPort {
        /// The name.
        name: String,
    },
    /// The resolver could not be set up (the system configuration could
    /// not be read, or no name server was given).
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
    /// The name exists with no records of the type, or does not exist.
    #[error("no {record_type} records for `{name}`")]
    NoRecords {
        /// The queried name.
        name: String,
        /// `A/AAAA` or `SRV`.
        record_type: &'static str,
    },
    /// The lookup failed (timeout, refused, server failure).
    #[error("{record_type} lookup of `{name}` failed")]
    Lookup {
        /// The queried name.
        name: String,
        /// `A/AAAA` or `SRV`.
        record_type: &'static str,
        /// The resolver's error.
        #[source]
        source: Box<NetError>,
    },
    /// The resolution took longer than the source's timeout.
    #[error("{record_type} lookup of `{name}` got no answer within {timeout:?}")]
    Timeout {
        /// The queried name.
        name: String,
        /// `A/AAAA` or `SRV`.
        record_type: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// SRV records were found but none could be used (see the warnings
    /// logged for each record).
    #[error("none of the SRV records of `{name}` has a usable target")]
    NoUsableTarget {
        /// The queried name.
        name: String,
    },
}

impl Dns {
    /// Every A and AAAA address of `name`, each as `http://ip:port`.
    ///
    /// A name without a trailing dot may be completed with the resolver's
    /// search domains (as in `/etc/resolv.conf`); end it with `.` to avoid
    /// that.
    pub fn host(name: &str, port: u16) -> Result<Self, DnsError> {
        if port == 0 {
            return Err(DnsError::InvalidPort { name: name.into() });
        }
        Ok(Self::new(Target::Host {
            name: parse_name(name)?,
            port,
        }))
    }

    /// The targets of the SRV records of `name`, e.g.
    /// `_http._tcp.greet.internal`.
    pub fn srv(name: &str) -> Result<Self, DnsError> {
        Ok(Self::new(Target::Srv {
            name: parse_name(name)?,
        }))
    }

    fn new(target: Target) -> Self {
        Self {
            target,
            timeout: DEFAULT_DNS_TIMEOUT,
            choice: ResolverChoice::System,
            resolver: None,
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(60),
            next_at: None,
            last: None,
            reannounce: false,
        }
    }

    /// Asks these name servers (UDP, then TCP for large answers) instead of
    /// the system's. Each has its own port, so a test can point the source
    /// at a DNS server on a loopback port.
    pub fn name_servers(mut self, servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.choice = ResolverChoice::NameServers(servers.into_iter().collect());
        self.resolver = None;
        self
    }

    /// Uses this resolver, configured as you like (its cache, timeouts,
    /// `ip_strategy` are then yours to set).
    pub fn resolver(mut self, resolver: TokioResolver) -> Self {
        self.choice = ResolverChoice::Given;
        self.resolver = Some(resolver);
        self
    }

    /// The shortest wait before resolving again, whatever the TTL
    /// (default 1 s): keeps TTL-0 records from turning into a busy loop.
    pub fn min_ttl(mut self, floor: Duration) -> Self {
        self.min_ttl = floor.max(Duration::from_millis(10));
        self.max_ttl = self.max_ttl.max(self.min_ttl);
        self
    }

    /// The longest wait before resolving again, whatever the TTL
    /// (default 60 s): bounds how late a change with a long TTL is seen.
    pub fn max_ttl(mut self, cap: Duration) -> Self {
        self.max_ttl = cap.max(self.min_ttl);
        self
    }

    /// How long one resolution (with its SRV targets' lookups) may take
    /// before it fails with [`DnsError::Timeout`] and the pool is marked
    /// stale (default [`DEFAULT_DNS_TIMEOUT`], 2 s; at least 1 ms). The
    /// built-in resolvers also ask each name server once within it; a
    /// resolver given with [`resolver`](Self::resolver) keeps its own
    /// settings, bounded by this.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        if !matches!(self.choice, ResolverChoice::Given) {
            self.resolver = None;
        }
        self
    }

    /// The queried name.
    pub fn name(&self) -> String {
        match &self.target {
            Target::Host { name, .. } | Target::Srv { name } => name.to_string(),
        }
    }

    fn resolver_handle(&mut self) -> Result<TokioResolver, DnsError> {
        if let Some(resolver) = &self.resolver {
            return Ok(resolver.clone());
        }
        let resolver = match &self.choice {
            ResolverChoice::System => {
                let mut builder = TokioResolver::builder_tokio()
                    .map_err(|e| DnsError::Resolver(format!("system configuration: {e}")))?;
                builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
                builder.options_mut().timeout = self.timeout;
                builder.options_mut().attempts = 1;
                builder.build()
            }
            ResolverChoice::NameServers(servers) => {
                if servers.is_empty() {
                    return Err(DnsError::Resolver("no name server given".into()));
                }
                let servers = servers
                    .iter()
                    .map(|addr| {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = addr.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = addr.port();
                        NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                    })
                    .collect();
                let mut builder = TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(servers),
                    TokioRuntimeProvider::default(),
                );
                builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
                builder.options_mut().timeout = self.timeout;
                builder.options_mut().attempts = 1;
                builder.build()
            }
            ResolverChoice::Given => {
                return Err(DnsError::Resolver("the given resolver is gone".into()));
            }
        }
        .map_err(|e| DnsError::Resolver(e.to_string()))?;
        self.resolver = Some(resolver.clone());
        Ok(resolver)
    }

    /// One resolution: the endpoint set (sorted by key) and when it expires.
    async fn resolve(&mut self) -> Result<(Vec<Endpoint>, std::time::Instant), DnsError> {
        let resolver = self.resolver_handle()?;
        let (name, record_type) = match &self.target {
            Target::Host { name, .. } => (name.clone(), "A/AAAA"),
            Target::Srv { name } => (name.clone(), "SRV"),
        };
        let resolution = async {
            match self.target.clone() {
                Target::Host { name, port } => resolve_host(&resolver, &name, port).await,
                Target::Srv { name } => resolve_srv(&resolver, &name).await,
            }
        };
        let (set, until) = tokio::time::timeout(self.timeout, resolution)
            .await
            .map_err(|_| DnsError::Timeout {
                name: name.to_string(),
                record_type,
                timeout: self.timeout,
            })??;
        Ok((set.into_values().collect(), until))
    }
}

impl Discover for Dns {
    async fn next_update(&mut self) -> Result<Update, BoxError> {
        loop {
            if let Some(at) = self.next_at {
                tokio::time::sleep_until(at).await;
            }
            match self.resolve().await {
                Ok((endpoints, until)) => {
                    let ttl = until.saturating_duration_since(std::time::Instant::now());
                    let wait = ttl.clamp(self.min_ttl, self.max_ttl);
                    self.next_at = Some(crate::time::after(wait));
                    let changed = self.last.as_ref() != Some(&endpoints);
                    tracing::debug!(
                        name = %self.name(),
                        endpoints = endpoints.len(),
                        changed,
                        next_in_ms = wait.as_millis() as u64,
                        "DNS resolved"
                    );
                    if changed || std::mem::take(&mut self.reannounce) {
                        self.last = Some(endpoints.clone());
                        return Ok(Update::Replace(endpoints));
                    }
                }
                Err(error) => {
                    // The pool backs off before calling again; then resolve
                    // at once rather than after a TTL.
                    self.next_at = None;
                    self.reannounce = true;
                    return Err(error.into());
                }
            }
        }
    }
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Dns");
        match &self.target {
            Target::Host { name, port } => d.field("host", &name.to_string()).field("port", port),
            Target::Srv { name } => d.field("srv", &name.to_string()),
        };
        let resolver = match &self.choice {
            ResolverChoice::System => "system".to_string(),
            ResolverChoice::NameServers(s) => format!("{s:?}"),
            ResolverChoice::Given => "given".to_string(),
        };
        d.field("resolver", &resolver)
            .field("min_ttl", &self.min_ttl)
            .field("max_ttl", &self.max_ttl)
            .finish()
    }
}

fn parse_name(name: &str) -> Result<Name, DnsError> {
    let invalid = |reason: String| DnsError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.trim().is_empty() {
        return Err(invalid("it is empty".into()));
    }
    let parsed = Name::from_utf8(name).map_err(|e| invalid(e.to_string()))?;
    if parsed.is_root() {
        return Err(invalid("the root is not a host".into()));
    }
    Ok(parsed)
}

fn lookup_error(name: &Name, record_type: &'static str, source: NetError) -> DnsError {
    if source.is_no_records_found() {
        DnsError::NoRecords {
            name: name.to_string(),
            record_type,
        }
    } else {
        DnsError::Lookup {
            name: name.to_string(),
            record_type,
            source: Box::new(source),
        }
    }
}

fn endpoint(ip: IpAddr, port: u16) -> Endpoint {
    Endpoint::from_addr(SocketAddr::new(ip, port))
}

type Found = (BTreeMap<String, Endpoint>, std::time::Instant);

async fn resolve_host(resolver: &TokioResolver, name: &Name, port: u16) -> Result<Found, DnsError> {
    let lookup = resolver
        .lookup_ip(name.clone())
        .await
        .map_err(|e| lookup_error(name, "A/AAAA", e))?;
    let set: BTreeMap<String, Endpoint> = lookup
        .iter()
        .map(|ip| endpoint(ip, port))
        .map(|e| (e.key().to_string(), e))
        .collect();
    if set.is_empty() {
        return Err(DnsError::NoRecords {
            name: name.to_string(),
            record_type: "A/AAAA",
        });
    }
    Ok((set, lookup.valid_until()))
}

async fn resolve_srv(resolver: &TokioResolver, name: &Name) -> Result<Found, DnsError> {
    let lookup = resolver
        .srv_lookup(name.clone())
        .await
        .map_err(|e| lookup_error(name, "SRV", e))?;
    let mut until = lookup.valid_until();
    let mut groups: BTreeMap<u16, Vec<&SRV>> = BTreeMap::new();
    for record in lookup.answers() {
        if let RData::SRV(srv) = &record.data {
            groups.entry(srv.priority).or_default().push(srv);
        }
    }
    if groups.is_empty() {
        return Err(DnsError::NoRecords {
            name: name.to_string(),
            record_type: "SRV",
        });
    }
    for (priority, records) in groups {
        let mut set: BTreeMap<String, Endpoint> = BTreeMap::new();
        let mixed =
            records.iter().any(|srv| srv.weight == 0) && records.iter().any(|srv| srv.weight > 0);
        for srv in records {
            let record = format!(
                "{name} SRV {} {} {} {}",
                srv.priority, srv.weight, srv.port, srv.target
            );
            if srv.port == 0 {
                tracing::warn!(%record, "skipping an SRV record with port 0");
                continue;
            }
            if srv.target.is_root() {
                // RFC 2782: "." means the service is decidedly not here.
                tracing::debug!(%record, "skipping an SRV record whose target is `.`");
                continue;
            }
            let mut ips: Vec<IpAddr> = lookup
                .additionals()
                .iter()
                .filter(|r| r.name == srv.target)
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                    _ => None,
                })
                .collect();
            if ips.is_empty() {
                match resolver.lookup_ip(srv.target.clone()).await {
                    Ok(found) => {
                        until = until.min(found.valid_until());
                        ips.extend(found.iter());
                    }
                    Err(e) if e.is_no_records_found() => {
                        tracing::warn!(%record, "skipping an SRV record whose target has no A/AAAA records");
                        continue;
                    }
                    // A transient failure must not shrink the set: fail the
                    // whole resolution so the pool keeps the last good one.
                    Err(e) => return Err(lookup_error(&srv.target, "A/AAAA", e)),
                }
            }
            let weight = srv_weight(srv.weight, mixed);
            for ip in ips {
                let fresh = endpoint(ip, srv.port);
                let merged = match set.get(fresh.key()) {
                    // Two records naming one address: their weights add up.
                    Some(seen) => seen
                        .clone()
                        .with_weight(seen.weight().saturating_add(weight)),
                    None => fresh.with_weight(weight),
                };
                match merged {
                    Ok(e) => {
                        set.insert(e.key().to_string(), e);
                    }
                    Err(error) => tracing::warn!(%record, %error, "skipping an SRV target"),
                }
            }
        }
        if !set.is_empty() {
            return Ok((set, until));
        }
        tracing::warn!(%name, priority, "no usable target in this SRV priority group; trying the next");
    }
    Err(DnsError::NoUsableTarget {
        name: name.to_string(),
    })
}

/// The endpoint weight of an SRV record of `weight` (RFC 2782), `mixed`
/// when its priority group has both weight-0 records and others: there,
/// weight 0 becomes 1 and the others are scaled by [`SRV_WEIGHT_SCALE`].
/// Elsewhere a weight is itself, and 0 (an all-zero group) is 1.
pub(crate) fn srv_weight(weight: u16, mixed: bool) -> u32 {
    match (weight, mixed) {
        (0, _) => 1,
        (w, false) => u32::from(w),
        (w, true) => u32::from(w).saturating_mul(SRV_WEIGHT_SCALE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_weight_zero_is_rare_beside_weighted_records_and_even_alone() {
        assert_eq!(srv_weight(0, true), 1);
        assert_eq!(srv_weight(1, true), SRV_WEIGHT_SCALE);
        assert_eq!(
            srv_weight(u16::MAX, true),
            u32::from(u16::MAX) * SRV_WEIGHT_SCALE
        );
        assert_eq!(srv_weight(0, false), 1);
        assert_eq!((srv_weight(3, false), srv_weight(1, false)), (3, 1));
        // Weights of a mixed group keep their ratios.
        assert_eq!(srv_weight(2, true), 2 * srv_weight(1, true));
    }

    #[test]
    fn rejects_bad_names_and_ports() {
        assert!(matches!(
            Dns::host("", 80),
            Err(DnsError::InvalidName { .. })
        ));
        assert!(matches!(
            Dns::host(".", 80),
            Err(DnsError::InvalidName { .. })
        ));
        assert!(matches!(
            Dns::host("greet.test", 0),
            Err(DnsError::InvalidPort { .. })
        ));
        let long = "a".repeat(64);
        let err = Dns::srv(&format!("{long}.test")).unwrap_err();
        assert!(err.to_string().contains(&long), "{err}");
        assert_eq!(
            Dns::srv("_http._tcp.greet.test.").unwrap().name(),
            "_http._tcp.greet.test."
        );
    }

    #[test]
    fn ttl_bounds_stay_ordered() {
        let dns = Dns::host("greet.test", 80)
            .unwrap()
            .max_ttl(Duration::from_millis(1))
            .min_ttl(Duration::from_secs(5));
        assert_eq!(
            (dns.min_ttl, dns.max_ttl),
            (Duration::from_secs(5), Duration::from_secs(5))
        );
    }
}
