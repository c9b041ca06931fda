//! The watched JSON file source, through the load-balancing layer against
//! real greet instances: edits are picked up, a half-written file is
//! ignored (the last good set stays, marked stale), bad entries are skipped.

#![cfg(all(feature = "file", feature = "reqwest"))]

mod support;

use std::path::Path;
use std::time::Duration;

use support::greet::GreetServer;
use support::pool::{key_set, keys};
use support::processes::TempDir;
use support::requests::greet_n;
use support::{Client, bounded, reqwest_client, wait_until};
use tower::ServiceBuilder;
use tower_lb::discover::JsonFile;
use tower_lb::{Error, LoadBalanceLayer};

const CHECK: Duration = Duration::from_millis(50);

fn client(path: &Path) -> (LoadBalanceLayer, Client) {
    let layer = LoadBalanceLayer::builder()
        .service("greet", JsonFile::new(path).interval(CHECK))
        .build()
        .expect("build the layer");
    let client = ServiceBuilder::new()
        .layer(layer.clone())
        .service(reqwest_client());
    (layer, client)
}

/// Writes a new file beside and renames it over `path`, as a deploy would.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn list(servers: &[&GreetServer]) -> String {
    let entries: Vec<String> = servers.iter().map(|s| format!("\"{}\"", s.url())).collect();
    format!("{{\"endpoints\": [{}]}}", entries.join(", "))
}

#[tokio::test]
async fn edits_are_picked_up_and_traffic_follows() {
    support::logs();
    let dir = TempDir::new("file-edit");
    let path = dir.path().join("greet.json");
    let a = GreetServer::start("a").await.unwrap();
    let b = GreetServer::start("b").await.unwrap();
    let c = GreetServer::start("c").await.unwrap();
    replace(&path, &list(&[&a, &b]));

    let (layer, client) = client(&path);
    let pool = layer.pool("greet").unwrap().clone();
    bounded("the pool is ready", pool.ready()).await.unwrap();
    assert_eq!(keys(&pool), key_set(&[a.addr(), b.addr()]));
    let counts = greet_n(&client, "greet", 20).await;
    assert_eq!((counts["a"], counts["b"]), (10, 10), "{counts:?}");

    // A new file renamed into place.
    replace(&path, &list(&[&b, &c]));
    wait_until("the pool follows the renamed file", || {
        keys(&pool) == key_set(&[b.addr(), c.addr()])
    })
    .await;
    let before = a.hits();
    let counts = greet_n(&client, "greet", 20).await;
    assert_eq!(a.hits(), before, "a left the file and must get no traffic");
    assert_eq!((counts["b"], counts["c"]), (10, 10), "{counts:?}");

    // An in-place write, with weights.
    let text = format!(r#"[{{"addr": "{}", "weight": 3}}, "{}"]"#, a.url(), c.url());
    std::fs::write(&path, text).unwrap();
    wait_until("the pool follows the edited file", || {
        keys(&pool) == key_set(&[a.addr(), c.addr()])
    })
    .await;
    let weights: Vec<u32> = pool.endpoints().iter().map(|e| e.weight()).collect();
    let a_first = pool.endpoints()[0].key() == format!("http://{}", a.addr());
    assert_eq!(weights, if a_first { vec![3, 1] } else { vec![1, 3] });
    assert!(!pool.stats().discovery_stale);
}

#[tokio::test]
async fn a_half_written_file_is_ignored_until_complete() {
    support::logs();
    let dir = TempDir::new("file-half");
    let path = dir.path().join("greet.json");
    let a = GreetServer::start("a").await.unwrap();
    let b = GreetServer::start("b").await.unwrap();
    replace(&path, &list(&[&a, &b]));

    let (layer, client) = client(&path);
    let pool = layer.pool("greet").unwrap().clone();
    bounded("the pool is ready", pool.ready()).await.unwrap();

    // An editor or script caught mid-write: truncated JSON.
    let full = list(&[&a]);
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    wait_until("the broken file is reported as stale", || {
        pool.stats().discovery_stale
    })
    .await;
    let stats = pool.stats();
    let error = stats.discovery_last_error.clone().unwrap_or_default();
    assert!(
        error.contains("greet.json"),
        "the error names the file: {error}"
    );
    assert_eq!(
        keys(&pool),
        key_set(&[a.addr(), b.addr()]),
        "the last good set stays"
    );
    let counts = greet_n(&client, "greet", 10).await;
    assert_eq!(counts.len(), 2, "{counts:?}");

    // An empty file (truncated before the write) is ignored too.
    std::fs::write(&path, "").unwrap();
    tokio::time::sleep(CHECK * 4).await;
    assert_eq!(keys(&pool), key_set(&[a.addr(), b.addr()]));

    // Completed: picked up, no longer stale.
    std::fs::write(&path, &full).unwrap();
    wait_until("the completed file is picked up", || {
        keys(&pool) == key_set(&[a.addr()]) && !pool.stats().discovery_stale
    })
    .await;
}

#[tokio::test]
async fn bad_entries_are_skipped_and_an_empty_list_never_empties_the_pool() {
    support::logs();
    let dir = TempDir::new("file-bad");
    let path = dir.path().join("greet.json");
    let a = GreetServer::start("a").await.unwrap();
    let b = GreetServer::start("b").await.unwrap();
    let text = format!(
        r#"{{"endpoints": [
            "{}",
            "not an address",
            {{"addr": "{}", "weight": 0}},
            {{"addr": "127.0.0.1:99999"}},
            {{"addr": "{}", "zone": "z1", "metadata": {{"version": "2"}}}},
            17
        ]}}"#,
        a.url(),
        b.url(),
        b.url()
    );
    replace(&path, &text);

    let (layer, client) = client(&path);
    let pool = layer.pool("greet").unwrap().clone();
    bounded("the pool is ready", pool.ready()).await.unwrap();
    assert_eq!(keys(&pool), key_set(&[a.addr(), b.addr()]));
    let b_endpoint = pool
        .endpoints()
        .into_iter()
        .find(|e| e.port() == b.addr().port())
        .unwrap();
    assert_eq!(b_endpoint.zone(), Some("z1"));
    assert_eq!(b_endpoint.metadata()["version"], "2");
    greet_n(&client, "greet", 4).await;

    // A list with nothing usable must not take the service dark.
    replace(
        &path,
        r#"["bad address", {"addr": "127.0.0.1:1", "weight": 0}]"#,
    );
    wait_until("the empty replacement is refused", || {
        pool.stats().discovery_rejected_updates > 0
    })
    .await;
    assert_eq!(keys(&pool), key_set(&[a.addr(), b.addr()]));
    greet_n(&client, "greet", 4).await;
}

#[tokio::test]
async fn a_missing_file_fails_readiness_with_its_path_then_recovers() {
    support::logs();
    let dir = TempDir::new("file-missing");
    let path = dir.path().join("later.json");
    let a = GreetServer::start("a").await.unwrap();

    let layer = LoadBalanceLayer::builder()
        .service("greet", JsonFile::new(&path).interval(CHECK))
        .ready_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let pool = layer.pool("greet").unwrap().clone();
    match bounded("readiness fails", pool.ready()).await {
        Err(Error::NotReady { last_error, .. }) => {
            let error = last_error.unwrap_or_default();
            assert!(
                error.contains("later.json"),
                "the error names the file: {error}"
            );
        }
        other => panic!("expected NotReady, got {other:?}"),
    }

    replace(&path, &list(&[&a]));
    wait_until("the file is found once written", || pool.is_ready()).await;
    assert_eq!(keys(&pool), key_set(&[a.addr()]));
}
