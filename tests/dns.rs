//! DNS discovery against a real DNS server (dnsmasq) on a loopback port,
//! through the load-balancing layer to real greet instances: A records,
//! SRV records with weights and priorities, changes seen after the TTL,
//! and a vanished name keeping the last good set.
//!
//! Needs `dnsmasq` (Debian `dnsmasq-base`); skipped with a message when it
//! is missing, except in CI (`CI=true`), where that fails.

#![cfg(all(feature = "dns", feature = "reqwest"))]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use support::dnsmasq::Dnsmasq;
use support::greet::GreetServer;
use support::pool::{key_set, keys};
use support::requests::greet_n;
use support::{Client, bounded, reqwest_client, wait_until};
use tower::ServiceBuilder;
use tower_lb::balance::WeightedRoundRobin;
use tower_lb::discover::Dns;
use tower_lb::{Error, LoadBalanceLayer, Pool};

fn client(source: Dns) -> (Pool, Client) {
    let layer = LoadBalanceLayer::builder()
        .service("greet", source)
        .balancer(WeightedRoundRobin::new())
        .build()
        .expect("build the layer");
    let pool = layer.pool("greet").unwrap().clone();
    let client = ServiceBuilder::new().layer(layer).service(reqwest_client());
    (pool, client)
}

/// A greet instance on `ip` and `port` (0: any).
async fn instance(name: &str, ip: &str, port: u16) -> GreetServer {
    let ip: IpAddr = ip.parse().unwrap();
    GreetServer::start_on(SocketAddr::new(ip, port), name)
        .await
        .unwrap_or_else(|e| panic!("start {name} on {ip}:{port}: {e}"))
}

fn weights(pool: &Pool) -> Vec<(u16, u32)> {
    pool.endpoints()
        .iter()
        .map(|e| (e.port(), e.weight()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_are_balanced_and_a_change_is_seen_after_the_ttl() {
    support::logs();
    // Three instances on three loopback addresses, one port: what a name
    // with several A records looks like.
    let a = instance("a", "127.0.0.1", 0).await;
    let port = a.addr().port();
    let b = instance("b", "127.0.0.2", port).await;
    let c = instance("c", "127.0.0.3", port).await;
    let Some(dns) = Dnsmasq::start(&[]) else {
        return;
    };
    dns.set_hosts(&[("127.0.0.1", "greet.test"), ("127.0.0.2", "greet.test")]);

    let source = Dns::host("greet.test.", port)
        .unwrap()
        .name_servers([dns.addr()])
        .min_ttl(Duration::from_millis(100));
    let (pool, client) = client(source);
    wait_until("both A records are discovered", || {
        keys(&pool) == key_set(&[a.addr(), b.addr()])
    })
    .await;
    let counts = greet_n(&client, "greet", 20).await;
    assert_eq!((counts["a"], counts["b"]), (10, 10), "{counts:?}");

    // The record changes; dnsmasq serves it with a 1 s TTL.
    let changed = Instant::now();
    dns.set_hosts(&[("127.0.0.3", "greet.test")]);
    wait_until("the changed A record is picked up", || {
        keys(&pool) == key_set(&[c.addr()])
    })
    .await;
    let took = changed.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?} for a 1 s TTL");
    let (a_before, b_before) = (a.hits(), b.hits());
    let counts = greet_n(&client, "greet", 10).await;
    assert_eq!(counts["c"], 10, "{counts:?}");
    assert_eq!((a.hits(), b.hits()), (a_before, b_before));
    assert!(!pool.stats().discovery_stale);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aaaa_and_a_records_are_used_together() {
    support::logs();
    let v4 = instance("v4", "127.0.0.1", 0).await;
    let port = v4.addr().port();
    let v6 = instance("v6", "::1", port).await;
    let Some(dns) = Dnsmasq::start(&[]) else {
        return;
    };
    dns.set_hosts(&[("127.0.0.1", "dual.test"), ("::1", "dual.test")]);

    let source = Dns::host("dual.test.", port)
        .unwrap()
        .name_servers([dns.addr()]);
    let (pool, client) = client(source);
    bounded("the pool is ready", pool.ready()).await.unwrap();
    wait_until("both address families are discovered", || {
        keys(&pool) == key_set(&[v4.addr(), v6.addr()])
    })
    .await;
    assert!(keys(&pool).contains(&format!("http://[::1]:{port}")));
    let counts = greet_n(&client, "greet", 10).await;
    assert_eq!((counts["v4"], counts["v6"]), (5, 5), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_ports_and_weights_and_only_the_best_priority() {
    support::logs();
    let a = instance("a", "127.0.0.1", 0).await;
    let b = instance("b", "127.0.0.1", 0).await;
    let c = instance("c", "127.0.0.1", 0).await;
    let (pa, pb, pc) = (a.addr().port(), b.addr().port(), c.addr().port());
    let srv = |target: &str, port: u16, priority: u16, weight: u16| {
        format!("--srv-host=_http._tcp.greet.test,{target},{port},{priority},{weight}")
    };
    let host = "--host-record=node.test,127.0.0.1".to_string();
    let Some(mut dns) = Dnsmasq::start(&[
        host.clone(),
        srv("node.test", pa, 0, 3),
        srv("node.test", pb, 0, 1),
        // Unusable records in the preferred group are skipped...
        srv("node.test", 0, 0, 5),
        srv("nowhere.test", 5999, 0, 5),
        // ...and the fallback group is not used while the first has targets.
        srv("node.test", pc, 10, 1),
    ]) else {
        return;
    };

    let source = Dns::srv("_http._tcp.greet.test.")
        .unwrap()
        .name_servers([dns.addr()])
        .min_ttl(Duration::from_millis(100));
    let (pool, client) = client(source);
    bounded("the pool is ready", pool.ready()).await.unwrap();
    let mut expected = vec![(pa, 3), (pb, 1)];
    expected.sort();
    let mut got = weights(&pool);
    got.sort();
    assert_eq!(got, expected);
    let counts = greet_n(&client, "greet", 40).await;
    assert_eq!(
        (counts["a"], counts["b"]),
        (30, 10),
        "weighted 3:1: {counts:?}"
    );
    assert_eq!(c.hits(), 0);

    // New records (SRV records change with a restart of dnsmasq): the
    // preferred group now has only b, with weight 2.
    dns.restart(&[
        host.clone(),
        srv("node.test", pb, 0, 2),
        srv("node.test", pc, 10, 1),
    ]);
    wait_until("the changed SRV records are picked up", || {
        weights(&pool) == vec![(pb, 2)]
    })
    .await;

    // The preferred group is gone: the fallback takes over.
    dns.restart(&[host, srv("node.test", pc, 10, 1)]);
    wait_until("the fallback priority group is used", || {
        weights(&pool) == vec![(pc, 1)]
    })
    .await;
    let counts = greet_n(&client, "greet", 5).await;
    assert_eq!(counts["c"], 5, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_name_keeps_the_last_good_set_and_shows_stale() {
    support::logs();
    let a = instance("a", "127.0.0.1", 0).await;
    let Some(dns) = Dnsmasq::start(&[]) else {
        return;
    };
    dns.set_hosts(&[("127.0.0.1", "greet.test")]);
    let source = Dns::host("greet.test.", a.addr().port())
        .unwrap()
        .name_servers([dns.addr()])
        .min_ttl(Duration::from_millis(100));
    let (pool, client) = client(source);
    bounded("the pool is ready", pool.ready()).await.unwrap();

    dns.set_hosts(&[]);
    wait_until("the missing name shows as stale", || {
        pool.stats().discovery_stale
    })
    .await;
    let error = pool.stats().discovery_last_error.unwrap_or_default();
    assert!(
        error.contains("greet.test"),
        "the error names the record: {error}"
    );
    assert_eq!(keys(&pool), key_set(&[a.addr()]), "the last good set stays");
    greet_n(&client, "greet", 3).await;

    dns.set_hosts(&[("127.0.0.1", "greet.test")]);
    wait_until("the name is back and the set fresh", || {
        !pool.stats().discovery_stale
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_name_fails_readiness_naming_it() {
    support::logs();
    let Some(dns) = Dnsmasq::start(&[]) else {
        return;
    };
    let layer = LoadBalanceLayer::builder()
        .service(
            "greet",
            Dns::srv("_http._tcp.missing.test.")
                .unwrap()
                .name_servers([dns.addr()]),
        )
        .ready_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    match bounded("readiness fails", layer.pool("greet").unwrap().ready()).await {
        Err(Error::NotReady { last_error, .. }) => {
            let error = last_error.unwrap_or_default();
            assert!(
                error.contains("_http._tcp.missing.test") && error.contains("SRV"),
                "{error}"
            );
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_weight_zero_is_chosen_rarely_and_an_all_zero_group_evenly() {
    support::logs();
    let a = instance("a", "127.0.0.1", 0).await;
    let b = instance("b", "127.0.0.1", 0).await;
    let (pa, pb) = (a.addr().port(), b.addr().port());
    let srv = |port: u16, weight: u16| {
        format!("--srv-host=_http._tcp.greet.test,node.test,{port},0,{weight}")
    };
    let host = "--host-record=node.test,127.0.0.1".to_string();
    let Some(mut dns) = Dnsmasq::start(&[host.clone(), srv(pa, 0), srv(pb, 1)]) else {
        return;
    };
    let source = Dns::srv("_http._tcp.greet.test.")
        .unwrap()
        .name_servers([dns.addr()])
        .min_ttl(Duration::from_millis(100));
    let (pool, client) = client(source);
    bounded("the pool is ready", pool.ready()).await.unwrap();
    let mut got = weights(&pool);
    got.sort();
    let mut expected = vec![(pa, 1), (pb, tower_lb::discover::SRV_WEIGHT_SCALE)];
    expected.sort();
    assert_eq!(got, expected, "weight 0 beside weight 1");
    // Weighted round robin over 1:100: the weight-0 target gets one pick.
    let counts = greet_n(&client, "greet", 101).await;
    assert_eq!(counts.get("a").copied().unwrap_or(0), 1, "{counts:?}");

    dns.restart(&[host, srv(pa, 0), srv(pb, 0)]);
    wait_until("the all-zero group is picked up", || {
        let mut w = weights(&pool);
        w.sort();
        let mut even = vec![(pa, 1), (pb, 1)];
        even.sort();
        w == even
    })
    .await;
    let counts = greet_n(&client, "greet", 20).await;
    assert_eq!((counts["a"], counts["b"]), (10, 10), "{counts:?}");
}

/// A name server that vanished and whose port now swallows every query (a
/// UDP socket and a TCP listener that never answer): the pool turns stale
/// within the source's timeout, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_name_server_marks_the_pool_stale_within_the_timeout() {
    support::logs();
    let a = instance("a", "127.0.0.1", 0).await;
    let Some(mut dns) = Dnsmasq::start(&[]) else {
        return;
    };
    dns.set_hosts(&[("127.0.0.1", "greet.test")]);
    let timeout = Duration::from_millis(500);
    let source = Dns::host("greet.test.", a.addr().port())
        .unwrap()
        .name_servers([dns.addr()])
        .timeout(timeout)
        .min_ttl(Duration::from_millis(100));
    let (pool, client) = client(source);
    bounded("the pool is ready", pool.ready()).await.unwrap();

    dns.stop();
    // Take over the port: held for the rest of the test, never answering.
    let (_udp, _tcp) = bounded("bind the silent name server", async {
        loop {
            if let (Ok(udp), Ok(tcp)) = (
                std::net::UdpSocket::bind(dns.addr()),
                std::net::TcpListener::bind(dns.addr()),
            ) {
                return (udp, tcp);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let silent_since = Instant::now();
    wait_until("the silent name server shows as stale", || {
        pool.stats().discovery_stale
    })
    .await;
    let took = silent_since.elapsed();
    println!("stale after {took:?} with a {timeout:?} DNS timeout");
    let error = pool.stats().discovery_last_error.unwrap_or_default();
    assert!(
        error.contains("greet.test") && error.contains("no answer within 500ms"),
        "the source's own timeout fired: {error}"
    );
    assert_eq!(keys(&pool), key_set(&[a.addr()]), "the last good set stays");
    greet_n(&client, "greet", 3).await;
}

#[test]
fn the_default_dns_timeout_is_at_most_two_seconds() {
    assert!(tower_lb::discover::DEFAULT_DNS_TIMEOUT <= Duration::from_secs(2));
}
