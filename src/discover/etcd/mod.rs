//! etcd v3: discover instances under a key prefix ([`Etcd`]) and register
//! this one under a lease ([`Registration`]). Feature `etcd`.
//!
//! Both speak the key layout and value format of etcd's Go naming package
//! (`go.etcd.io/etcd/client/v3/naming/endpoints`): one key per instance,
//! `<service>/<id>`, whose value is `{"Addr":"host:port","Metadata":...}`.
//! Go services registered with etcd's official client are found as they
//! are, and Go clients using etcd's gRPC resolver find the instances
//! registered from Rust.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tower::ServiceBuilder;
//! use tower_lb::LoadBalanceLayer;
//! use tower_lb::discover::etcd::{Etcd, EtcdConfig, Registration};
//!
//! let etcd = EtcdConfig::new(["http://127.0.0.1:2379"])?;
//!
//! // A server announces itself...
//! let registration = Registration::builder(etcd.clone(), "greet", "127.0.0.1:5001")?
//!     .register()
//!     .await?;
//!
//! // ...and clients find it.
//! let lb = LoadBalanceLayer::builder()
//!     .service("greet", Etcd::new(etcd, "greet")?)
//!     .build()?;
//! let client = ServiceBuilder::new().layer(lb).service(reqwest::Client::new());
//! # Ok(()) }
//! ```
//!
//! # Why the HTTP/JSON gateway, not gRPC
//!
//! etcd serves its v3 API over gRPC and, on the same port, through a
//! gateway that maps it to HTTP POSTs with JSON bodies (keys and values in
//! base64, 64-bit numbers as strings). This module uses the gateway:
//!
//! - it needs only `reqwest`, which the crate already depends on, while a
//!   gRPC client (`etcd-client`) brings tonic, prost, a protobuf build and
//!   their transitive dependencies, for the six calls used here (range,
//!   watch, put, delete, lease grant/keepalive/revoke);
//! - every etcd since 3.4 serves it (`/v3/`) by default, including etcd
//!   clusters behind an HTTP load balancer or proxy;
//! - a watch is a streamed HTTP response of one JSON object per line, and
//!   a keepalive a plain POST, which is all discovery and registration need.
//!
//! What the gateway costs: one watch per HTTP connection (a gRPC client can
//! multiplex them; one per service is enough here), and no server push of
//! lease keepalives (this module sends one every third of the TTL). A gRPC
//! client would be clearly better only for many watches on one process or
//! for features the gateway lacks (none used here).
//!
//! Authentication (etcd users and roles): [`EtcdConfig::credentials`]; a
//! role that may read `<service>/` is all discovery needs (registration
//! also writes there and grants leases). TLS and client certificates work
//! through your own `reqwest::Client` ([`EtcdConfig::client`]).

mod auth;
mod client;
pub(crate) mod codec;
mod register;
mod watch;

pub use client::EtcdConfig;
pub use register::{Registration, RegistrationBuilder};
pub use watch::Etcd;

use crate::EndpointError;

/// What went wrong talking to etcd. Messages name the key prefix, the key
/// or the gateway path concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// An etcd endpoint (or a registered instance's address) is invalid.
    #[error("invalid etcd address `{input}`")]
    InvalidEndpoint {
        /// The input as given, userinfo replaced by `***`.
        input: String,
        /// Why it was rejected.
        #[source]
        source: EndpointError,
    },
    /// Authenticating as an etcd user failed (wrong password, unknown
    /// user, etcd unreachable). The password is not in the message.
    #[error("etcd authentication as user `{user}` failed: {reason}")]
    Auth {
        /// The etcd user name.
        user: String,
        /// etcd's answer or the failure.
        reason: String,
    },
    /// Something else in the configuration is invalid.
    #[error("invalid etcd configuration: {0}")]
    Config(String),
    /// No endpoint answered.
    #[error("etcd is unreachable at {endpoints} (POST {path}): {reason}")]
    Unreachable {
        /// Every endpoint tried, comma-separated.
        endpoints: String,
        /// The gateway path called.
        path: &'static str,
        /// The last failure.
        reason: String,
    },
    /// etcd answered with an error.
    #[error("etcd answered POST {path} with HTTP {status}: {message}")]
    Status {
        /// The gateway path called.
        path: &'static str,
        /// The HTTP status.
        status: u16,
        /// The gRPC status code etcd reported (0 if none).
        code: i32,
        /// etcd's message.
        message: String,
    },
    /// etcd's answer was not in the expected shape.
    #[error("cannot read etcd's answer to POST {path}")]
    Decode {
        /// The gateway path called.
        path: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The watch failed or was canceled by etcd.
    #[error("the watch stopped: {reason}")]
    WatchFailed {
        /// What happened.
        reason: String,
    },
    /// An [`Etcd`] source failed; the pool keeps its last good set and
    /// calls again with backoff.
    #[error("etcd discovery of prefix `{prefix}` failed")]
    Discovery {
        /// The watched prefix.
        prefix: String,
        /// The cause.
        #[source]
        source: Box<EtcdError>,
    },
    /// Registering or deregistering an instance failed.
    #[error("etcd registration of key `{key}` failed")]
    Registration {
        /// The instance's key.
        key: String,
        /// The cause.
        #[source]
        source: Box<EtcdError>,
    },
}
