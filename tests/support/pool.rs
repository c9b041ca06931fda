//! Looking into a pool: its endpoint keys, one endpoint's stats, requests
//! in flight.

use std::net::SocketAddr;

use tower_lb::stats::EndpointStats;
use tower_lb::{Endpoint, Pool};

/// The stats of `endpoint` (matched by key) in `pool`, if it is a member.
pub fn endpoint_stats(pool: &Pool, endpoint: &str) -> Option<EndpointStats> {
    let key = Endpoint::new(endpoint)
        .expect("a valid endpoint")
        .key()
        .to_owned();
    pool.stats()
        .endpoints
        .into_iter()
        .find(|e| e.endpoint == key)
}

/// Requests in flight in `pool`, over all its endpoints.
pub fn total_in_flight(pool: &Pool) -> usize {
    pool.stats().endpoints.iter().map(|e| e.in_flight).sum()
}

/// True when `pool`'s current set contains `url` (matched by key).
pub fn pool_has(pool: &Pool, url: &str) -> bool {
    let key = Endpoint::new(url).expect("a valid endpoint");
    pool.endpoints().iter().any(|e| e.same_instance(&key))
}

/// The pool's endpoint keys, sorted.
pub fn keys(pool: &Pool) -> Vec<String> {
    pool.endpoints()
        .iter()
        .map(|e| e.key().to_string())
        .collect()
}

/// `http://{addr}`, an endpoint key.
pub fn key(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// The sorted keys of these addresses.
pub fn key_set(addrs: &[SocketAddr]) -> Vec<String> {
    let mut keys: Vec<String> = addrs.iter().copied().map(key).collect();
    keys.sort();
    keys
}
