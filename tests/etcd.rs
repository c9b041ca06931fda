//! etcd discovery and registration against a real etcd (Debian's
//! `etcd-server`) started on loopback ports with a temporary data dir,
//! through the load-balancing layer to real greet instances.
//!
//! Instances register themselves and are balanced across; one deregisters
//! and gets no more traffic; one is killed (a child process, SIGKILL) and
//! disappears when its lease expires; etcd restarts mid-test and the client
//! keeps its endpoints and resumes its watch; keys written by `etcdctl` in
//! etcd's Go naming format are found; malformed values are skipped; a
//! compacted revision is listed again; a lost lease is re-registered.
//!
//! Needs `etcd` and `etcdctl`; skipped with a message when missing, except
//! in CI (`CI=true`), where that fails.

#![cfg(feature = "etcd")]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::etcd::EtcdServer;
use support::greet::GreetServer;
use support::pool::{key, key_set, keys};
use support::processes::spawn_helper;
use support::requests::greet_n;
use support::{Client, bounded, reqwest_client, wait_until};
use tower::ServiceBuilder;
use tower_lb::balance::RoundRobin;
use tower_lb::discover::etcd::{Etcd, EtcdConfig, Registration};
use tower_lb::discover::{Discover, Update};
use tower_lb::{LoadBalanceLayer, Pool};

/// The shortest lease the tests use: etcd started with
/// `--heartbeat-interval=10 --election-timeout=100` grants it.
const TTL: Duration = Duration::from_secs(2);

const CHILD_ETCD: &str = "TOWER_LB_TEST_ETCD_URL";
const CHILD_NAME: &str = "TOWER_LB_TEST_INSTANCE";

fn config(etcd: &EtcdServer) -> EtcdConfig {
    EtcdConfig::new([etcd.url()])
        .unwrap()
        .request_timeout(Duration::from_secs(2))
}

/// A client balancing `greet` round robin over what etcd lists under
/// `greet/`, retrying a failed source quickly.
fn client(etcd: &EtcdServer) -> (Pool, Client) {
    let pool = Pool::builder("greet", Etcd::new(config(etcd), "greet").unwrap())
        .balancer(RoundRobin::new())
        .discovery_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .build();
    let layer = LoadBalanceLayer::builder()
        .pool(pool.clone())
        .build()
        .unwrap();
    let client = ServiceBuilder::new().layer(layer).service(reqwest_client());
    (pool, client)
}

async fn register(etcd: &EtcdServer, server: &GreetServer) -> Registration {
    bounded(
        "register",
        Registration::builder(config(etcd), "greet", server.addr())
            .unwrap()
            .ttl(TTL)
            .register(),
    )
    .await
    .expect("register in etcd")
}

/// `greet/<addr>` = `{"Addr":"<addr>"}`, written by etcdctl as a Go service
/// using etcd's naming package would.
fn put_go_style(etcd: &EtcdServer, addr: SocketAddr, metadata: &str) {
    let value = if metadata.is_empty() {
        format!(r#"{{"Addr":"{addr}"}}"#)
    } else {
        format!(r#"{{"Op":0,"Addr":"{addr}","Metadata":{metadata}}}"#)
    };
    etcd.etcdctl(&["put", &format!("greet/{addr}"), &value]);
}

/// Not a test: the body of a child process, so that a test can kill an
/// instance the way a crash would (SIGKILL, no deregistration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper run as a child process by instances_register_balance_deregister_and_expire"]
async fn child_instance() {
    let (Ok(url), Ok(name)) = (std::env::var(CHILD_ETCD), std::env::var(CHILD_NAME)) else {
        return;
    };
    let server = GreetServer::start(&name).await.unwrap();
    let config = EtcdConfig::new([url]).unwrap();
    let registration = Registration::builder(config, "greet", server.addr())
        .unwrap()
        .ttl(TTL)
        .register()
        .await
        .unwrap();
    println!("READY {}", server.addr());
    // Killed long before this; bounded so an orphan never lingers.
    tokio::time::sleep(Duration::from_secs(60)).await;
    registration.deregister().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_register_balance_deregister_and_expire() {
    support::logs();
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let a = GreetServer::start("a").await.unwrap();
    let b = GreetServer::start("b").await.unwrap();
    let reg_a = register(&etcd, &a).await;
    let reg_b = register(&etcd, &b).await;
    assert_eq!(reg_a.key(), format!("greet/{}", a.addr()));
    // The third instance lives in another process, to be killed.
    let (mut child, c_addr) = spawn_helper(
        "child_instance",
        &[(CHILD_ETCD, etcd.url()), (CHILD_NAME, "c".to_string())],
    );
    let c_addr: SocketAddr = c_addr.parse().unwrap();

    let (pool, client) = client(&etcd);
    wait_until("all three instances are discovered", || {
        keys(&pool) == key_set(&[a.addr(), b.addr(), c_addr])
    })
    .await;
    let counts = greet_n(&client, "greet", 30).await;
    assert_eq!(
        (counts["a"], counts["b"], counts["c"]),
        (10, 10, 10),
        "{counts:?}"
    );

    // b leaves cleanly: gone at once, no more traffic.
    bounded("deregister", reg_b.deregister()).await.unwrap();
    wait_until("b is gone after deregistering", || {
        keys(&pool) == key_set(&[a.addr(), c_addr])
    })
    .await;
    let b_hits = b.hits();
    let counts = greet_n(&client, "greet", 20).await;
    assert_eq!(b.hits(), b_hits, "a deregistered instance gets no traffic");
    assert_eq!((counts["a"], counts["c"]), (10, 10), "{counts:?}");

    // c crashes: its key stays until the lease expires, then it goes.
    let killed = Instant::now();
    child.kill();
    wait_until("c is gone when its lease expires", || {
        keys(&pool) == key_set(&[a.addr()])
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took > Duration::from_millis(500),
        "removed after {took:?}: too fast for a lease expiry"
    );
    let counts = greet_n(&client, "greet", 10).await;
    assert_eq!(counts["a"], 10, "{counts:?}");
    assert!(!pool.stats().discovery_stale);

    bounded("deregister", reg_a.deregister()).await.unwrap();
    assert!(etcd.keys("greet/").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_keeps_endpoints_and_resumes_the_watch() {
    support::logs();
    let Some(mut etcd) = EtcdServer::start() else {
        return;
    };
    let a = GreetServer::start("a").await.unwrap();
    let b = GreetServer::start("b").await.unwrap();
    let c = GreetServer::start("c").await.unwrap();
    let reg_a = register(&etcd, &a).await;
    put_go_style(&etcd, b.addr(), "");

    let (pool, client) = client(&etcd);
    wait_until("a and b are discovered", || {
        keys(&pool) == key_set(&[a.addr(), b.addr()])
    })
    .await;

    // etcd crashes: the client keeps its endpoints and says it is stale.
    // (A crash rather than SIGTERM: with a watch open, etcd takes about 5 s
    // to stop cleanly, its gateway refusing keepalives meanwhile, so a 2 s
    // lease would rightly expire. A clean stop is tested below, without
    // leases.)
    etcd.kill();
    wait_until("the pool reports the outage as stale", || {
        pool.stats().discovery_stale
    })
    .await;
    assert_eq!(keys(&pool), key_set(&[a.addr(), b.addr()]));
    let counts = greet_n(&client, "greet", 10).await;
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (Some(&5), Some(&5)),
        "{counts:?} {:?}",
        pool.stats()
    );

    // etcd is back: the watch resumes, the set is fresh again, and a key
    // written now (Go naming format, with a weight) is seen.
    etcd.restart();
    wait_until("the pool is fresh again", || !pool.stats().discovery_stale).await;
    put_go_style(&etcd, c.addr(), r#"{"weight":2,"zone":"z1"}"#);
    wait_until("c, written after the restart, is discovered", || {
        keys(&pool) == key_set(&[a.addr(), b.addr(), c.addr()])
    })
    .await;
    let c_endpoint = pool
        .endpoints()
        .into_iter()
        .find(|e| e.key() == key(c.addr()))
        .unwrap();
    assert_eq!((c_endpoint.weight(), c_endpoint.zone()), (2, Some("z1")));

    // The registration's lease survived the restart and is still kept alive.
    tokio::time::sleep(TTL + Duration::from_secs(1)).await;
    assert!(etcd.keys("greet/").contains(&reg_a.key().to_string()));
    assert!(keys(&pool).contains(&key(a.addr())));

    etcd.etcdctl(&["del", &format!("greet/{}", b.addr())]);
    wait_until("b, deleted with etcdctl, is gone", || {
        keys(&pool) == key_set(&[a.addr(), c.addr()])
    })
    .await;
    greet_n(&client, "greet", 6).await;
    assert!(pool.stats().discovery_errors > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_values_are_skipped_and_never_stop_the_watch() {
    support::logs();
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let a = GreetServer::start("a").await.unwrap();
    let b = GreetServer::start("b").await.unwrap();
    put_go_style(
        &etcd,
        a.addr(),
        r#"{"weight":3,"zone":"eu-1","version":"1.0"}"#,
    );
    etcd.etcdctl(&["put", "greet/not-json", "hello"]);
    etcd.etcdctl(&[
        "put",
        "greet/zero-weight",
        r#"{"Addr":"127.0.0.1:5999","Metadata":{"weight":0}}"#,
    ]);
    etcd.etcdctl(&["put", "greet/bad-port", r#"{"Addr":"127.0.0.1:99999"}"#]);
    etcd.etcdctl(&["put", "greet/no-addr", r#"{"Metadata":{}}"#]);
    etcd.etcdctl(&[
        "put",
        "greeting/other-service",
        &format!(r#"{{"Addr":"{}"}}"#, b.addr()),
    ]);

    let (pool, client) = client(&etcd);
    bounded("the pool is ready", pool.ready()).await.unwrap();
    assert_eq!(keys(&pool), key_set(&[a.addr()]));
    let found = &pool.endpoints()[0];
    assert_eq!((found.weight(), found.zone()), (3, Some("eu-1")));
    assert_eq!(found.metadata()["version"], "1.0");
    greet_n(&client, "greet", 3).await;

    // A good key overwritten with garbage keeps its last good value; the
    // watch goes on (b, written after, is seen).
    etcd.etcdctl(&["put", &format!("greet/{}", a.addr()), "{oops"]);
    put_go_style(&etcd, b.addr(), "");
    wait_until("b is discovered after the garbage", || {
        keys(&pool) == key_set(&[a.addr(), b.addr()])
    })
    .await;
    let a_endpoint = pool
        .endpoints()
        .into_iter()
        .find(|e| e.key() == key(a.addr()))
        .unwrap();
    assert_eq!(a_endpoint.weight(), 3, "the last good value stays");
    let counts = greet_n(&client, "greet", 8).await;
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(!pool.stats().discovery_stale);
    assert_eq!(pool.stats().discovery_errors, 0);
}

/// Polls the source directly, bounded.
async fn next(source: &mut Etcd) -> Update {
    bounded("the next update", source.next_update())
        .await
        .expect("an update, not an error")
}

fn sorted_keys(endpoints: &[tower_lb::Endpoint]) -> Vec<String> {
    let mut keys: Vec<String> = endpoints.iter().map(|e| e.key().to_string()).collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_revision_is_listed_again() {
    support::logs();
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    put_go_style(&etcd, addr(5001), "");
    let mut source = Etcd::new(config(&etcd), "greet").unwrap();
    match next(&mut source).await {
        Update::Replace(list) => assert_eq!(sorted_keys(&list), key_set(&[addr(5001)])),
        other => panic!("expected the listing, got {other:?}"),
    }

    // While the source is not watching: changes, then a compaction past
    // the revision it would resume from.
    put_go_style(&etcd, addr(5002), "");
    etcd.etcdctl(&["del", "greet/127.0.0.1:5001"]);
    put_go_style(&etcd, addr(5003), "");
    let revision = etcd.revision();
    etcd.etcdctl(&["compaction", &revision.to_string()]);

    match next(&mut source).await {
        Update::Replace(list) => {
            assert_eq!(sorted_keys(&list), key_set(&[addr(5002), addr(5003)]));
        }
        other => panic!("expected a new listing after compaction, got {other:?}"),
    }
    // And the watch then runs from the new listing.
    put_go_style(&etcd, addr(5004), "");
    match next(&mut source).await {
        Update::Insert(list) => assert_eq!(sorted_keys(&list), key_set(&[addr(5004)])),
        other => panic!("expected an insert, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_watch_replays_what_it_missed() {
    support::logs();
    let Some(mut etcd) = EtcdServer::start() else {
        return;
    };
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    put_go_style(&etcd, addr(5001), "");
    put_go_style(&etcd, addr(5002), "");
    let mut source = Etcd::new(config(&etcd), "greet").unwrap();
    assert!(matches!(next(&mut source).await, Update::Replace(l) if l.len() == 2));

    // The watch is open and waiting when etcd stops.
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        etcd.stop();
        etcd
    });
    let failed = bounded("the watch fails", source.next_update()).await;
    let error = failed.expect_err("etcd stopped");
    let text = format!("{error}");
    assert!(
        text.contains("greet/"),
        "the error names the prefix: {text}"
    );
    let mut etcd = stopper.join().unwrap();

    // Back, with changes the source has not seen.
    etcd.restart();
    etcd.etcdctl(&["del", "greet/127.0.0.1:5002"]);
    put_go_style(&etcd, addr(5003), "");

    // First the known set again (the pool clears its staleness), then the
    // missed events, replayed from the last revision.
    let mut model: BTreeSet<String> = match next(&mut source).await {
        Update::Replace(l) => l.iter().map(|e| e.key().to_string()).collect(),
        other => panic!("expected the known set again, got {other:?}"),
    };
    assert_eq!(model.len(), 2);
    let expected: BTreeSet<String> = key_set(&[addr(5001), addr(5003)]).into_iter().collect();
    while model != expected {
        match next(&mut source).await {
            Update::Replace(l) => model = l.iter().map(|e| e.key().to_string()).collect(),
            Update::Insert(l) => model.extend(l.iter().map(|e| e.key().to_string())),
            Update::Remove(l) => {
                for e in l {
                    model.remove(e.key());
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_is_registered_again_and_drop_deregisters() {
    support::logs();
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let a = GreetServer::start("a").await.unwrap();
    let registration = register(&etcd, &a).await;
    let (pool, _client) = client(&etcd);
    wait_until("a is discovered", || keys(&pool) == key_set(&[a.addr()])).await;

    // Someone revokes the lease: the key goes, the keepalive notices and
    // registers again under a new lease.
    let lease = registration.lease_id().unwrap();
    etcd.etcdctl(&["lease", "revoke", &format!("{lease:x}")]);
    wait_until("the key is re-registered under a new lease", || {
        registration.lease_id().is_some_and(|id| id != lease)
    })
    .await;
    wait_until("a is discovered again", || {
        keys(&pool) == key_set(&[a.addr()])
    })
    .await;
    assert_eq!(etcd.keys("greet/"), [registration.key().to_string()]);

    // Dropping the registration deletes the key (best effort, at once).
    let dropped = Instant::now();
    drop(registration);
    wait_until("a is gone after the drop", || pool.endpoints().is_empty()).await;
    assert!(dropped.elapsed() < TTL, "deleted, not expired");
    assert!(etcd.keys("greet/").is_empty());
}
