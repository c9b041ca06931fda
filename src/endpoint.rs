//! [`Endpoint`]: one instance of a service, parsed and validated once.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use http::uri::{Authority, Scheme};

use crate::redact;

mod parse;

/// One instance of a logical service: where to send requests, and how much.
///
/// An endpoint is identified by its *key*, the scheme plus host and port
/// (`http://127.0.0.1:5001`); two endpoints with the same key are the same
/// instance even if their weight or metadata differ. Weight, zone and
/// metadata are hints for balancers and for the user's own code.
///
/// Endpoints are cheap to clone (one reference count) and immutable; the
/// `with_*` methods return a modified copy.
///
/// ```
/// use tower_lb::Endpoint;
///
/// let ep: Endpoint = "http://127.0.0.1:5001".parse()?;
/// assert_eq!(ep.key(), "http://127.0.0.1:5001");
/// assert_eq!(ep.weight(), 1);
///
/// // A bare `host:port` means plain HTTP.
/// let ep = Endpoint::new("10.0.0.7:8080")?.with_weight(3)?.with_zone("eu-west-1a");
/// assert_eq!(ep.key(), "http://10.0.0.7:8080");
/// assert_eq!(ep.zone(), Some("eu-west-1a"));
///
/// // Bad input is a typed error that names the input.
/// let err = Endpoint::new("http://10.0.0.7:8080/api").unwrap_err();
/// assert!(err.to_string().contains("http://10.0.0.7:8080/api"));
/// # Ok::<(), tower_lb::EndpointError>(())
/// ```
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    /// The scheme, `https` or else `http` (the only two an endpoint can
    /// have): a flag where a `Scheme` took 16 bytes.
    https: bool,
    /// The authority and the `Host` header value share one text (see
    /// [`shared_text`]).
    authority: Authority,
    /// Precomputed so that routing a request never parses a header value.
    host_header: HeaderValue,
    /// The host as an address, when it is one: routing a `reqwest::Request`
    /// sets it without parsing the host again.
    ip: Option<IpAddr>,
    port: u16,
    /// `scheme://host:port`, the host lowercase: [`Endpoint::host`] is a
    /// range of it, found from the scheme and the port's digits (a second
    /// copy of the host cost 48 bytes an endpoint, and offsets of it would
    /// push `Inner` into the next allocation size).
    key: Box<str>,
    weight: u32,
    /// Zone and metadata, which most endpoints lack: boxed apart, so that
    /// an endpoint without them pays one pointer (it was 40 bytes).
    extras: Option<Box<Extras>>,
    /// `server.address` and `server.port` as metric label values, made on
    /// first use and then shared by every series of this endpoint.
    #[cfg(feature = "metrics")]
    labels: std::sync::OnceLock<MetricLabels>,
}

/// An endpoint's rarely set hints.
#[derive(Clone, Default)]
struct Extras {
    zone: Option<Box<str>>,
    metadata: BTreeMap<String, String>,
}

/// The two schemes an endpoint can have, for [`Endpoint::scheme`].
static HTTP: Scheme = Scheme::HTTP;
static HTTPS: Scheme = Scheme::HTTPS;

/// The scheme's name, as the key spells it.
fn scheme_str(https: bool) -> &'static str {
    if https { "https" } else { "http" }
}

/// How many decimal digits `port` has.
fn digits(port: u16) -> usize {
    match port {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    }
}

/// The authority's text, for the `Authority` and the `Host` header value
/// to share: one allocation where each had a buffer of its own and, once
/// a request cloned them, a shared header each besides (a `Bytes` made
/// from a vector allocates one on its first clone). Up to 15 bytes
/// (`10.1.2.3:8080`), the text sits inside the allocation that counts its
/// references, 32 bytes in all (bytes 1.12); up to 31, 48 bytes. The
/// churn bench's endpoints took 32 bytes less each.
fn shared_text(text: &str) -> Bytes {
    let text = text.as_bytes();
    if let Some(inline) = Inline::<15>::new(text) {
        Bytes::from_owner(inline)
    } else if let Some(inline) = Inline::<31>::new(text) {
        Bytes::from_owner(inline)
    } else {
        Bytes::from_owner(Box::<[u8]>::from(text))
    }
}

/// Up to `N` bytes, stored inline.
struct Inline<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Inline<N> {
    /// `text` inline, if it fits.
    fn new(text: &[u8]) -> Option<Self> {
        let mut bytes = [0; N];
        bytes.get_mut(..text.len())?.copy_from_slice(text);
        Some(Self {
            len: u8::try_from(text.len()).ok()?,
            bytes,
        })
    }
}

impl<const N: usize> AsRef<[u8]> for Inline<N> {
    fn as_ref(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

/// The metadata of an endpoint that has none.
static NO_METADATA: BTreeMap<String, String> = BTreeMap::new();

/// Why a string, address or weight could not become an [`Endpoint`].
///
/// The message quotes the offending input, with any userinfo replaced by
/// `***`: a rejected `http://user:secret@host` never repeats the secret.
///
/// ```
/// use tower_lb::{Endpoint, EndpointErrorKind};
///
/// let err = Endpoint::new("http://app:s3cret@10.0.0.7:8080").unwrap_err();
/// assert_eq!(err.kind(), &EndpointErrorKind::UserInfo);
/// assert!(!err.to_string().contains("s3cret"));
/// assert_eq!(err.input(), "http://***@10.0.0.7:8080");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint `{input}`: {reason}")]
pub struct EndpointError {
    input: String,
    reason: EndpointErrorKind,
}

impl EndpointError {
    pub(crate) fn new(input: &str, reason: EndpointErrorKind) -> Self {
        Self {
            input: redact::userinfo(input).into_owned(),
            reason,
        }
    }

    /// The input that was rejected, as given but for its userinfo (`***`).
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What was wrong with it.
    pub fn kind(&self) -> &EndpointErrorKind {
        &self.reason
    }
}

/// An endpoint's `server.address` and `server.port` as metric label values
/// (feature `metrics`), made once and shared by every series.
#[cfg(feature = "metrics")]
#[derive(Debug, Clone)]
pub(crate) struct MetricLabels {
    pub(crate) address: Arc<str>,
    pub(crate) port: Arc<str>,
}

/// The specific problem behind an [`EndpointError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointErrorKind {
    /// The input was empty.
    #[error("it is empty")]
    Empty,
    /// The input is not a URI at all.
    #[error("not a valid URI ({0})")]
    Malformed(String),
    /// The URI has no host.
    #[error("it has no host")]
    MissingHost,
    /// The host is not a DNS name, an IPv4 address or a bracketed IPv6
    /// address (with an optional zone).
    #[error("the host is malformed: {0}")]
    BadHost(String),
    /// The port is not digits only, with a value from 1 to 65535.
    #[error("the port is not a number from 1 to 65535")]
    BadPort,
    /// Only `http` and `https` can be balanced.
    #[error("scheme `{0}` is not supported (use http or https)")]
    UnsupportedScheme(String),
    /// An endpoint names an instance, not a resource: no path or query.
    #[error("it has a path or query `{0}`; an endpoint is only scheme://host:port")]
    UnexpectedPath(String),
    /// Credentials do not belong in an endpoint address.
    #[error("it contains user info (`user@`); credentials do not belong in an endpoint")]
    UserInfo,
    /// A weight of zero would mean "never pick"; remove the endpoint instead.
    #[error("weight 0 is not allowed; weights start at 1")]
    ZeroWeight,
}

impl Endpoint {
    /// Parses an endpoint from `scheme://host:port` or a bare `host:port`
    /// (plain HTTP). The port defaults to the scheme's (80 or 443).
    ///
    /// Strict: exactly one host (a DNS name, a dotted IPv4 address, or a
    /// bracketed IPv6 address with an optional `%25zone`), a port of 1 to
    /// 5 digits from 1 to 65535, an optional trailing `/`, and nothing else:
    /// no userinfo, path, query or fragment. Surrounding whitespace is
    /// ignored.
    ///
    /// ```
    /// use tower_lb::{Endpoint, EndpointErrorKind};
    ///
    /// assert!(Endpoint::new("http://[fe80::1%25eth0]:8080").is_ok());
    /// for bad in ["10.0.0.7[:8080]", "http://a:+1", "http://a:", "http://10.0.0.256:1"] {
    ///     assert!(Endpoint::new(bad).is_err(), "{bad}");
    /// }
    /// assert!(matches!(
    ///     Endpoint::new("10.0.0.7[:8080]").unwrap_err().kind(),
    ///     EndpointErrorKind::BadHost(_)
    /// ));
    /// ```
    pub fn new(input: &str) -> Result<Self, EndpointError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(EndpointError::new(input, EndpointErrorKind::Empty));
        }
        let parsed = parse::parse(trimmed).map_err(|kind| EndpointError::new(input, kind))?;
        Ok(Self::from_parts(
            parsed.scheme,
            parsed.authority,
            parsed.host,
            parsed.port,
        ))
    }

    /// The endpoint `http://{addr}`.
    ///
    /// ```
    /// use std::net::{IpAddr, SocketAddr};
    /// use tower_lb::Endpoint;
    ///
    /// let addr: SocketAddr = "[::1]:8080".parse().unwrap();
    /// assert_eq!(Endpoint::from_addr(addr).key(), "http://[::1]:8080");
    /// ```
    pub fn from_addr(addr: SocketAddr) -> Self {
        // An IPv6 scope id is written `%25id` in a URI (RFC 6874).
        let text = match addr {
            SocketAddr::V6(v6) if v6.scope_id() != 0 => {
                format!("[{}%25{}]:{}", v6.ip(), v6.scope_id(), v6.port())
            }
            _ => addr.to_string(),
        };
        // A socket address always formats as a valid authority; without
        // its scope id if that one does not.
        let authority = Authority::try_from(text.as_str())
            .or_else(|_| Authority::try_from(SocketAddr::new(addr.ip(), addr.port()).to_string()))
            .unwrap_or_else(|_| Authority::from_static("invalid.invalid"));
        let host = authority.host().to_ascii_lowercase();
        Self::from_parts(Scheme::HTTP, authority, host, addr.port())
    }

    fn from_parts(scheme: Scheme, authority: Authority, host: String, port: u16) -> Self {
        // Only the two schemes an endpoint can have; `host()` relies on the
        // key starting with the one the flag says.
        let https = scheme == Scheme::HTTPS;
        let key = format!("{}://{}:{}", scheme_str(https), host, port);
        // An `Authority` holds only visible ASCII, which is always a valid
        // header value; the fallbacks are for the impossible case.
        let text = shared_text(authority.as_str());
        let host_header = HeaderValue::from_maybe_shared(text.clone())
            .unwrap_or_else(|_| HeaderValue::from_static("invalid.invalid"));
        let authority = Authority::from_maybe_shared(text).unwrap_or(authority);
        // Kept parsed, so that routing a reqwest request sets it without
        // parsing the host again (no IDNA); a scoped IPv6 address is not.
        let ip = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&host)
            .parse()
            .ok();
        Self {
            inner: Arc::new(Inner {
                https,
                authority,
                host_header,
                ip,
                port,
                key: key.into_boxed_str(),
                weight: 1,
                extras: None,
                #[cfg(feature = "metrics")]
                labels: std::sync::OnceLock::new(),
            }),
        }
    }

    /// This endpoint's metric label values, made once.
    #[cfg(feature = "metrics")]
    pub(crate) fn metric_labels(&self) -> &MetricLabels {
        self.inner.labels.get_or_init(|| MetricLabels {
            address: self.host().into(),
            port: self.port().to_string().into(),
        })
    }

    /// Returns a copy with the given weight. Zero is rejected.
    pub fn with_weight(mut self, weight: u32) -> Result<Self, EndpointError> {
        if weight == 0 {
            return Err(EndpointError::new(
                self.key(),
                EndpointErrorKind::ZeroWeight,
            ));
        }
        Arc::make_mut(&mut self.inner).weight = weight;
        Ok(self)
    }

    /// Returns a copy placed in the given zone (a locality label).
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.inner)
            .extras
            .get_or_insert_default()
            .zone = Some(zone.into().into_boxed_str());
        self
    }

    /// Returns a copy with one metadata entry added or replaced.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.inner)
            .extras
            .get_or_insert_default()
            .metadata
            .insert(key.into(), value.into());
        self
    }

    /// The identity of this instance: `scheme://host:port`, lowercase host,
    /// port always explicit.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &Scheme {
        if self.inner.https { &HTTPS } else { &HTTP }
    }

    /// Host and port as given (the port may be implied by the scheme).
    pub fn authority(&self) -> &Authority {
        &self.inner.authority
    }

    /// The host, lowercase (IPv6 literals keep their brackets).
    pub fn host(&self) -> &str {
        // The key is `scheme://host:port`: the host starts after the
        // scheme's `://` and ends before the `:` and the port's digits.
        let start = scheme_str(self.inner.https).len() + "://".len();
        let end = self
            .inner
            .key
            .len()
            .saturating_sub(1 + digits(self.inner.port));
        self.inner.key.get(start..end).unwrap_or_default()
    }

    /// The host as an IP address, when it is one (`127.0.0.1`, `[::1]`);
    /// `None` for a name.
    pub fn ip(&self) -> Option<IpAddr> {
        self.inner.ip
    }

    /// The port, explicit or the scheme's default.
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// The relative weight (1 unless set); always at least 1.
    pub fn weight(&self) -> u32 {
        self.inner.weight
    }

    /// The zone label, if any.
    pub fn zone(&self) -> Option<&str> {
        self.inner.extras.as_ref()?.zone.as_deref()
    }

    /// Free-form metadata from discovery or from the user.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        self.inner
            .extras
            .as_ref()
            .map_or(&NO_METADATA, |extras| &extras.metadata)
    }

    /// The value for the `Host` header of a request sent here.
    pub(crate) fn host_header(&self) -> &HeaderValue {
        &self.inner.host_header
    }

    /// True when both endpoints are the same instance (same key), whatever
    /// their weight or metadata.
    pub fn same_instance(&self, other: &Endpoint) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.key() == other.key()
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::new(s)
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint::from_addr(addr)
    }
}

impl PartialEq for Endpoint {
    /// Endpoints are equal when every field is: key, weight, zone, metadata.
    /// Use [`Endpoint::same_instance`] to compare identity only.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
            || (self.inner.key == other.inner.key
                && self.inner.weight == other.inner.weight
                && self.zone() == other.zone()
                && self.metadata() == other.metadata())
    }
}

impl Eq for Endpoint {}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Endpoint");
        d.field("key", &self.key()).field("weight", &self.weight());
        if let Some(zone) = self.zone() {
            d.field("zone", &zone);
        }
        if !self.metadata().is_empty() {
            d.field("metadata", self.metadata());
        }
        d.finish()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Anything that can be turned into an [`Endpoint`]: strings, socket
/// addresses and endpoints themselves. Lets discovery constructors accept
/// `["http://a:1", "b:2"]` as readily as a list of `SocketAddr`s.
pub trait IntoEndpoint {
    /// Converts, or says what was wrong.
    fn into_endpoint(self) -> Result<Endpoint, EndpointError>;
}

impl IntoEndpoint for Endpoint {
    fn into_endpoint(self) -> Result<Endpoint, EndpointError> {
        Ok(self)
    }
}

impl IntoEndpoint for &Endpoint {
    fn into_endpoint(self) -> Result<Endpoint, EndpointError> {
        Ok(self.clone())
    }
}

impl IntoEndpoint for &str {
    fn into_endpoint(self) -> Result<Endpoint, EndpointError> {
        Endpoint::new(self)
    }
}

impl IntoEndpoint for String {
    fn into_endpoint(self) -> Result<Endpoint, EndpointError> {
        Endpoint::new(&self)
    }
}

impl IntoEndpoint for &String {
    fn into_endpoint(self) -> Result<Endpoint, EndpointError> {
        Endpoint::new(self)
    }
}

impl IntoEndpoint for SocketAddr {
    fn into_endpoint(self) -> Result<Endpoint, EndpointError> {
        Ok(Endpoint::from_addr(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(input: &str) -> EndpointErrorKind {
        Endpoint::new(input).unwrap_err().kind().clone()
    }

    #[test]
    fn parses_and_normalizes_keys() {
        assert_eq!(
            Endpoint::new("http://A.example:80").unwrap().key(),
            "http://a.example:80"
        );
        assert_eq!(
            Endpoint::new("https://a.example").unwrap().key(),
            "https://a.example:443"
        );
        assert_eq!(
            Endpoint::new("a.example").unwrap().key(),
            "http://a.example:80"
        );
        assert_eq!(
            Endpoint::new("a.example:8080").unwrap().key(),
            "http://a.example:8080"
        );
        assert_eq!(
            Endpoint::new("http://[::1]:9000/").unwrap().key(),
            "http://[::1]:9000"
        );
        assert_eq!(Endpoint::new(" http://h:1 ").unwrap().port(), 1);
    }

    #[test]
    fn keeps_the_host_as_an_address_when_it_is_one() {
        let ip = |s: &str| Endpoint::new(s).unwrap().ip().map(|ip| ip.to_string());
        assert_eq!(ip("http://10.0.0.7:80").as_deref(), Some("10.0.0.7"));
        assert_eq!(ip("http://[::1]:9000").as_deref(), Some("::1"));
        assert_eq!(ip("http://a.example:80"), None);
        assert_eq!(ip("http://10.0.0.7.example:80"), None);
        let addr: SocketAddr = "[::1]:8080".parse().unwrap();
        assert_eq!(Endpoint::from_addr(addr).ip(), Some(addr.ip()));
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        assert_eq!(kind(""), EndpointErrorKind::Empty);
        assert_eq!(
            kind("ftp://h:21"),
            EndpointErrorKind::UnsupportedScheme("ftp".into())
        );
        assert_eq!(
            kind("http://h:1/api"),
            EndpointErrorKind::UnexpectedPath("/api".into())
        );
        assert_eq!(
            kind("http://h:1?x=1"),
            EndpointErrorKind::UnexpectedPath("?x=1".into())
        );
        assert_eq!(kind("http://h:99999"), EndpointErrorKind::BadPort);
        assert_eq!(kind("http://h:0"), EndpointErrorKind::BadPort);
        assert_eq!(kind("http://u:p@h:1"), EndpointErrorKind::UserInfo);
        assert_eq!(kind("http://h:+1"), EndpointErrorKind::BadPort);
        assert_eq!(kind("http://h:"), EndpointErrorKind::BadPort);
        assert_eq!(kind("http://h:0080x"), EndpointErrorKind::BadPort);
        assert!(matches!(
            kind("10.0.0.7[:8080]"),
            EndpointErrorKind::BadHost(_)
        ));
        assert!(matches!(
            kind("http://10.0.0.256:1"),
            EndpointErrorKind::BadHost(_)
        ));
        assert!(matches!(
            kind("http://[::1:1"),
            EndpointErrorKind::BadHost(_)
        ));
        assert!(matches!(
            kind("http://[::1]x:1"),
            EndpointErrorKind::BadHost(_)
        ));
        assert!(matches!(
            kind("http://[zz]:1"),
            EndpointErrorKind::BadHost(_)
        ));
        assert!(matches!(
            kind("http://a..b:1"),
            EndpointErrorKind::BadHost(_)
        ));
        assert!(matches!(kind("http://-a:1"), EndpointErrorKind::BadHost(_)));
        assert!(matches!(
            kind("http://a b:1"),
            EndpointErrorKind::BadHost(_)
        ));
        assert!(matches!(kind("http://h:1:2"), EndpointErrorKind::BadPort));
        assert!(matches!(
            kind("http://h:1#x"),
            EndpointErrorKind::UnexpectedPath(_)
        ));
        assert!(matches!(
            kind("http://"),
            EndpointErrorKind::Malformed(_) | EndpointErrorKind::MissingHost
        ));
        assert!(matches!(kind("not a uri"), EndpointErrorKind::BadHost(_)));
        assert!(matches!(
            kind("ht tp://h:1"),
            EndpointErrorKind::Malformed(_)
        ));
        let zero = Endpoint::new("h:1").unwrap().with_weight(0).unwrap_err();
        assert_eq!(zero.kind(), &EndpointErrorKind::ZeroWeight);
        assert!(zero.to_string().contains("http://h:1"), "{zero}");
    }

    #[test]
    fn accepts_every_host_form() {
        for (input, key) in [
            (
                "http://[fe80::1%25eth0]:8080",
                "http://[fe80::1%25eth0]:8080",
            ),
            ("HTTP://Greet.Test.:1", "http://greet.test.:1"),
            ("my_service:65535", "http://my_service:65535"),
            ("https://10.0.0.7", "https://10.0.0.7:443"),
        ] {
            assert_eq!(Endpoint::new(input).unwrap().key(), key, "{input}");
        }
        let scoped: SocketAddr = "[fe80::1%2]:8080".parse().unwrap();
        assert_eq!(
            Endpoint::from_addr(scoped).key(),
            "http://[fe80::1%252]:8080"
        );
    }

    #[test]
    fn userinfo_is_rejected_without_repeating_the_secret() {
        for input in [
            "http://user:canary@h:1",
            "canary@h:1",
            "https://u:canary@[::1]:1/",
            "http://u:canary@h:1/path",
        ] {
            let err = Endpoint::new(input).unwrap_err();
            assert_eq!(err.kind(), &EndpointErrorKind::UserInfo, "{input}");
            for printed in [err.to_string(), format!("{err:?}"), err.input().to_string()] {
                assert!(!printed.contains("canary"), "{printed}");
            }
        }
    }

    #[test]
    fn host_is_the_keys_host_lowercase() {
        for (input, host) in [
            ("http://A.example:80", "a.example"),
            ("https://10.0.0.7", "10.0.0.7"),
            ("http://[::1]:9000/", "[::1]"),
            ("http://[fe80::1%25eth0]:8080", "[fe80::1%25eth0]"),
            ("HTTP://Greet.Test.:1", "greet.test."),
        ] {
            assert_eq!(Endpoint::new(input).unwrap().host(), host, "{input}");
        }
        let scoped: SocketAddr = "[fe80::1%2]:8080".parse().unwrap();
        assert_eq!(Endpoint::from_addr(scoped).host(), "[fe80::1%252]");
    }

    #[test]
    fn host_is_found_whatever_the_ports_digits() {
        for port in [1, 9, 10, 99, 100, 999, 1000, 9999, 10000, 65535] {
            let ep = Endpoint::new(&format!("https://h.example:{port}")).unwrap();
            assert_eq!(ep.host(), "h.example", "{port}");
            assert_eq!(ep.port(), port);
        }
    }

    #[cfg(not(feature = "metrics"))]
    #[test]
    fn an_endpoint_is_one_small_allocation() {
        // With the reference counts, 136 bytes: glibc's 144-byte class.
        assert!(std::mem::size_of::<Inner>() <= 120);
    }

    #[test]
    fn the_authority_and_host_header_share_their_text() {
        for input in [
            "10.1.2.3:8080",
            "https://Service.Example:8443",
            "http://a-rather-long-service-name.namespace.svc.cluster.local:8080",
        ] {
            let ep = Endpoint::new(input).unwrap();
            let authority = ep.authority().as_str();
            assert_eq!(ep.host_header().as_bytes(), authority.as_bytes());
            assert_eq!(
                ep.host_header().as_bytes().as_ptr(),
                authority.as_ptr(),
                "{input}"
            );
        }
        assert_eq!(Inline::<15>::new(&[b'a'; 16]).map(|i| i.len), None);
        assert_eq!(
            Inline::<15>::new(b"10.1.2.3:80")
                .as_ref()
                .map(AsRef::as_ref),
            Some(&b"10.1.2.3:80"[..])
        );
    }

    #[test]
    fn keeps_the_scheme() {
        let scheme = |s: &str| Endpoint::new(s).unwrap().scheme().clone();
        assert_eq!(scheme("HTTPS://h:1"), Scheme::HTTPS);
        assert_eq!(scheme("http://h:1"), Scheme::HTTP);
        assert_eq!(scheme("h:1"), Scheme::HTTP);
    }

    #[test]
    fn zone_and_metadata_are_kept_together() {
        let bare = Endpoint::new("h:1").unwrap();
        assert_eq!(bare.zone(), None);
        assert!(bare.metadata().is_empty());
        let ep = bare
            .clone()
            .with_metadata("rack", "r1")
            .with_zone("z1")
            .with_metadata("az", "a");
        assert_eq!(ep.zone(), Some("z1"));
        assert_eq!(ep.metadata().len(), 2);
        assert_eq!(ep.metadata().get("rack").map(String::as_str), Some("r1"));
        assert_ne!(ep, bare);
        assert_ne!(ep, bare.clone().with_zone("z1"));
        assert_eq!(
            ep,
            Endpoint::new("h:1")
                .unwrap()
                .with_zone("z1")
                .with_metadata("rack", "r1")
                .with_metadata("az", "a")
        );
        assert!(bare.metadata().is_empty(), "the original is unchanged");
    }

    #[test]
    fn identity_ignores_weight_but_equality_does_not() {
        let a = Endpoint::new("h:1").unwrap();
        let b = a.clone().with_weight(5).unwrap();
        assert!(a.same_instance(&b));
        assert_ne!(a, b);
        assert_eq!(a, Endpoint::new("http://h:1").unwrap());
    }
}
