//! etcd discovery with authentication on, against a real etcd: a user in
//! a role that may only read `greet/`, its password exchanged for a token,
//! the token renewed after etcd forgets it (a restart), and the password
//! never in an error.
//!
//! Needs `etcd` and `etcdctl`; skipped with a message when missing, except
//! in CI (`CI=true`), where that fails.

#![cfg(feature = "etcd")]

mod support;

use std::time::Duration;

use support::etcd::EtcdServer;
use support::greet::GreetServer;
use support::pool::{key, key_set, keys};
use support::requests::greet_n;
use support::{bounded, reqwest_client, wait_until};
use tower::ServiceBuilder;
use tower_lb::LoadBalanceLayer;
use tower_lb::Pool;
use tower_lb::balance::RoundRobin;
use tower_lb::discover::Discover;
use tower_lb::discover::etcd::{Etcd, EtcdConfig, EtcdError};

const ROOT_PASSWORD: &str = "root-pw";
const PASSWORD: &str = "app-pw-Zq81";

fn config(etcd: &EtcdServer) -> EtcdConfig {
    EtcdConfig::new([etcd.url()])
        .unwrap()
        .request_timeout(Duration::from_secs(2))
}

fn put(etcd: &EtcdServer, key: &str, addr: impl std::fmt::Display) {
    etcd.etcdctl_as_root(
        ROOT_PASSWORD,
        &["put", key, &format!(r#"{{"Addr":"{addr}"}}"#)],
    );
}

/// The first error a source's `next_update` gives, as text.
async fn first_error(mut source: Etcd) -> String {
    let result = bounded("the source's first answer", source.next_update()).await;
    let error = result.expect_err("the source should fail");
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_limited_to_the_prefix_discovers_and_survives_token_loss() {
    support::logs();
    let Some(mut etcd) = EtcdServer::start() else {
        return;
    };
    let a = GreetServer::start("a").await.unwrap();
    let b = GreetServer::start("b").await.unwrap();
    etcd.enable_auth(ROOT_PASSWORD, "app", PASSWORD, "greet/");
    put(&etcd, &format!("greet/{}", a.addr()), a.addr());
    put(&etcd, "other/x", b.addr());

    // Without credentials etcd refuses, and says so.
    let anonymous = first_error(Etcd::new(config(&etcd), "greet").unwrap()).await;
    assert!(anonymous.contains("user name is empty"), "{anonymous}");

    // A wrong password is a typed error that repeats no password.
    let wrong = Etcd::new(config(&etcd).credentials("app", "not-the-pw-Xy7"), "greet").unwrap();
    let mut wrong_source = wrong;
    let error = bounded("a wrong password", wrong_source.next_update())
        .await
        .expect_err("a wrong password fails");
    let auth_error = error
        .downcast_ref::<EtcdError>()
        .and_then(|e| match e {
            EtcdError::Discovery { source, .. } => Some(&**source),
            _ => None,
        })
        .expect("an EtcdError::Discovery");
    assert!(
        matches!(auth_error, EtcdError::Auth { user, .. } if user == "app"),
        "{auth_error:?}"
    );
    let printed = format!("{auth_error} {auth_error:?}");
    assert!(printed.contains("authentication failed"), "{printed}");
    assert!(!printed.contains("not-the-pw-Xy7"), "{printed}");

    // Outside the role's prefix: permission denied, even with a token.
    let outside =
        first_error(Etcd::new(config(&etcd).credentials("app", PASSWORD), "other").unwrap()).await;
    assert!(outside.contains("permission denied"), "{outside}");
    assert!(!outside.contains(PASSWORD), "{outside}");

    // With the right credentials: discovered and balanced.
    let credentials = config(&etcd).credentials("app", PASSWORD);
    assert!(!format!("{credentials:?}").contains(PASSWORD));
    let pool = Pool::builder("greet", Etcd::new(credentials, "greet").unwrap())
        .balancer(RoundRobin::new())
        .discovery_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .build();
    let layer = LoadBalanceLayer::builder()
        .pool(pool.clone())
        .build()
        .unwrap();
    let client = ServiceBuilder::new().layer(layer).service(reqwest_client());
    let counts = greet_n(&client, "greet", 4).await;
    assert_eq!(counts.get("a"), Some(&4), "{counts:?}");

    // A change is watched with the same token.
    put(&etcd, &format!("greet/{}", b.addr()), b.addr());
    wait_until("b is discovered through the watch", || {
        keys(&pool) == key_set(&[a.addr(), b.addr()])
    })
    .await;

    // etcd forgets simple tokens when it restarts: the watch is refused
    // ("invalid auth token"), the source authenticates again and carries on.
    etcd.restart();
    etcd.etcdctl_as_root(ROOT_PASSWORD, &["del", &format!("greet/{}", a.addr())]);
    wait_until(
        "a is gone after the restart, seen with a fresh token",
        || keys(&pool) == vec![key(b.addr())],
    )
    .await;
    let counts = greet_n(&client, "greet", 4).await;
    assert_eq!(counts.get("b"), Some(&4), "{counts:?}");
    let stats = serde_json::to_string(&pool.stats()).unwrap();
    assert!(!stats.contains(PASSWORD), "{stats}");
}
