//! Discovery through the layer against real instances: hand-written sources,
//! push updates under load, polling, failing and empty sources, readiness,
//! and the pool's background task stopping with its last handle.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use support::instances::{start_instances, stop_all, urls};
use support::pool::{endpoint_stats, pool_has, total_in_flight};
use support::requests::send;
use support::{Client, WAIT, bounded, reqwest_client, wait_until};
use tokio::sync::{mpsc, oneshot};
use tower::ServiceBuilder;
use tower_lb::discover::{Discover, Poller, Push, Update};
use tower_lb::{BoxError, Endpoint, Error, LoadBalanceLayer, Pool};

const URL: &str = "http://greet/api/greet?name=Alice";

fn client_with(layer: LoadBalanceLayer) -> Client {
    ServiceBuilder::new().layer(layer).service(reqwest_client())
}

/// A layer over one `greet` service fed by `source`.
fn client_for(source: impl Discover) -> Client {
    client_with(
        LoadBalanceLayer::builder()
            .service("greet", source)
            .build()
            .unwrap(),
    )
}

/// A layer over one pool built with its own settings.
fn client_for_pool(pool: Pool) -> Client {
    client_with(LoadBalanceLayer::builder().pool(pool).build().unwrap())
}

/// Sends `n` requests sequentially; all must succeed with 200. Returns the
/// names of the instances that answered, with counts.
async fn answers(client: &Client, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let answer = bounded("a request", send(client, URL))
            .await
            .expect("the request failed");
        assert_eq!(answer.status, StatusCode::OK);
        *counts.entry(answer.instance.unwrap()).or_insert(0) += 1;
    }
    counts
}

fn names(counts: &HashMap<String, usize>) -> BTreeSet<&str> {
    counts.keys().map(String::as_str).collect()
}

fn keys(pool: &Pool) -> BTreeSet<String> {
    pool.endpoints()
        .iter()
        .map(|e| e.key().to_owned())
        .collect()
}

fn key_set(urls: &[String]) -> BTreeSet<String> {
    urls.iter()
        .map(|u| Endpoint::new(u).unwrap().key().to_owned())
        .collect()
}

/// A registry client as a user would write it: each list received on the
/// channel is the complete set.
struct ChannelRegistry {
    lists: mpsc::Receiver<Vec<String>>,
}

impl Discover for ChannelRegistry {
    async fn next_update(&mut self) -> Result<Update, BoxError> {
        match self.lists.recv().await {
            Some(list) => {
                let endpoints = list
                    .iter()
                    .map(|u| Endpoint::new(u))
                    .collect::<Result<_, _>>()?;
                Ok(Update::Replace(endpoints))
            }
            // The registry went away: nothing will change any more.
            None => std::future::pending().await,
        }
    }
}

#[tokio::test]
async fn a_hand_written_source_drives_the_layer() {
    let instances = start_instances(3).await;
    let all = urls(&instances);
    let (tx, rx) = mpsc::channel(4);
    let client = client_for(ChannelRegistry { lists: rx });
    let pool = client.pool("greet").unwrap().clone();

    tx.send(all[..2].to_vec()).await.unwrap();
    let counts = answers(&client, 10).await;
    assert_eq!(
        names(&counts),
        BTreeSet::from(["greet-0", "greet-1"]),
        "{counts:?}"
    );
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), [5, 5]);

    tx.send(all[2..].to_vec()).await.unwrap();
    wait_until("the pool holds only greet-2", || {
        keys(&pool) == key_set(&all[2..])
    })
    .await;
    let counts = answers(&client, 5).await;
    assert_eq!(names(&counts), BTreeSet::from(["greet-2"]));
    assert_eq!(instances[2].hits(), 5);
    assert_eq!(pool.stats().discovery_updates, 2);
    stop_all(instances).await;
}

/// What the client tasks of the load test saw.
#[derive(Default)]
struct Load {
    sent: AtomicU64,
    ok: AtomicU64,
    errors: Mutex<Vec<String>>,
    /// Requests answered by the removed instance, in total and among those
    /// whose call began after the removal was seen.
    from_removed: AtomicU64,
    from_removed_after_seen: AtomicU64,
    from_added: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_updates_apply_under_concurrent_load_without_losing_requests() {
    const TASKS: usize = 8;
    let mut instances = start_instances(4).await;
    let added = instances.pop().unwrap(); // greet-3: joins later
    for instance in &instances {
        // Short, but long enough that requests are in flight at any moment.
        instance.set_delay(Duration::from_millis(1));
    }
    // The one to be removed is slower, so it has requests in flight then.
    instances[1].set_delay(Duration::from_millis(20));
    let all = urls(&instances);
    let removed_url = all[1].clone();
    let removed_key = Endpoint::new(&removed_url).unwrap();

    let (source, handle) = Push::new();
    handle.replace(&all).unwrap();
    let client = client_for(source);
    let pool = client.pool("greet").unwrap().clone();

    let load = Arc::new(Load::default());
    let seen = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    // Per task: has a request that began after `seen` completed?
    let caught_up: Arc<Vec<AtomicBool>> =
        Arc::new((0..TASKS).map(|_| AtomicBool::new(false)).collect());
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let (client, load, seen, stop, caught_up) = (
            client.clone(),
            load.clone(),
            seen.clone(),
            stop.clone(),
            caught_up.clone(),
        );
        let removed_key = removed_key.clone();
        tasks.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                // Read before the call: the pick happens inside it.
                let after_seen = seen.load(Ordering::SeqCst);
                load.sent.fetch_add(1, Ordering::SeqCst);
                match send(&client, URL).await {
                    Ok(answer) if answer.status == StatusCode::OK => {
                        load.ok.fetch_add(1, Ordering::SeqCst);
                        let instance = answer.instance.unwrap_or_default();
                        let endpoint = answer.endpoint.expect("Endpoint extension");
                        if instance == "greet-1" || endpoint.same_instance(&removed_key) {
                            load.from_removed.fetch_add(1, Ordering::SeqCst);
                            if after_seen {
                                load.from_removed_after_seen.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        if instance == "greet-3" {
                            load.from_added.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Ok(answer) => load
                        .errors
                        .lock()
                        .unwrap()
                        .push(format!("status {}", answer.status)),
                    Err(error) => load.errors.lock().unwrap().push(error.to_string()),
                }
                if after_seen {
                    caught_up[t].store(true, Ordering::SeqCst);
                }
            }
        });
    }

    // Everyone is being served.
    wait_until("every instance has served requests", || {
        instances.iter().all(|i| i.hits() >= 20)
    })
    .await;

    // Remove greet-1 while the load runs. Its live state outlives the
    // update in the requests still holding it.
    let member = pool
        .members()
        .into_iter()
        .find(|m| m.endpoint().same_instance(&removed_key))
        .unwrap();
    handle.remove(removed_url.as_str()).unwrap();
    bounded("the removal to be seen", async {
        while pool_has(&pool, &removed_url) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    seen.store(true, Ordering::SeqCst);
    // In flight first, then hits: a hit counted after this read comes from
    // a request that was in flight at the first read.
    let in_flight_at_seen = member.state().in_flight() as u64;
    let hits_at_seen = instances[1].hits();

    // Every task has completed a request begun after the update was seen,
    // so every request begun before it has completed too.
    wait_until("every task has caught up", || {
        caught_up.iter().all(|c| c.load(Ordering::SeqCst))
    })
    .await;
    assert_eq!(
        member.state().in_flight(),
        0,
        "requests to the removed instance still in flight"
    );
    let hits_drained = instances[1].hits();
    assert!(
        hits_drained - hits_at_seen <= in_flight_at_seen,
        "{} requests reached the removed instance after the update was seen, only {in_flight_at_seen} were in flight",
        hits_drained - hits_at_seen
    );

    // Add greet-3: it starts receiving traffic.
    let sent_before_add = load.sent.load(Ordering::SeqCst);
    handle.add(added.url()).unwrap();
    wait_until("the addition is seen", || pool_has(&pool, &added.url())).await;
    wait_until("the new instance serves requests", || added.hits() >= 50).await;
    // And keeps its share while the others keep theirs.
    let hits_other: Vec<u64> = [0, 2].iter().map(|&i| instances[i].hits()).collect();
    wait_until("the load goes on for a while", || {
        load.sent.load(Ordering::SeqCst) >= sent_before_add + 400
    })
    .await;

    stop.store(true, Ordering::SeqCst);
    bounded("the client tasks to stop", async {
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap();
        }
    })
    .await;

    // Nothing went to the removed instance once the removal was seen.
    assert_eq!(load.from_removed_after_seen.load(Ordering::SeqCst), 0);
    assert_eq!(
        instances[1].hits(),
        hits_drained,
        "the removed instance got requests after draining"
    );
    assert_eq!(
        load.from_removed.load(Ordering::SeqCst),
        instances[1].hits()
    );
    // The new one, and the remaining ones, kept serving.
    assert_eq!(load.from_added.load(Ordering::SeqCst), added.hits());
    assert!(instances[0].hits() > hits_other[0] && instances[2].hits() > hits_other[1]);
    // No request was lost.
    let errors = load.errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} requests failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let (sent, ok) = (
        load.sent.load(Ordering::SeqCst),
        load.ok.load(Ordering::SeqCst),
    );
    assert_eq!(sent, ok);
    let served: u64 = instances.iter().chain([&added]).map(|i| i.hits()).sum();
    assert_eq!(served, sent, "every request reached exactly one instance");

    let stats = pool.stats();
    assert_eq!(stats.discovery_updates, 3);
    assert_eq!(total_in_flight(&pool), 0);
    assert_eq!(stats.endpoints.len(), 3);
    stop_all(instances).await;
    added.stop().await;
}

#[tokio::test]
async fn a_poller_picks_up_a_changed_list() {
    let instances = start_instances(3).await;
    let all = urls(&instances);
    let registry = Arc::new(Mutex::new(all[..2].to_vec()));
    let fetches = Arc::new(AtomicU64::new(0));
    let source = registry_poller(&registry, Duration::from_millis(20), &fetches);
    let client = client_for(source);
    let pool = client.pool("greet").unwrap().clone();

    let counts = answers(&client, 10).await;
    assert_eq!(names(&counts), BTreeSet::from(["greet-0", "greet-1"]));

    // Unchanged answers make no updates.
    let before = fetches.load(Ordering::SeqCst);
    wait_until("a few more polls", || {
        fetches.load(Ordering::SeqCst) >= before + 3
    })
    .await;
    assert_eq!(pool.stats().discovery_updates, 1);

    *registry.lock().unwrap() = all[1..].to_vec();
    wait_until("the poller applies the new list", || {
        keys(&pool) == key_set(&all[1..])
    })
    .await;
    let hits_0 = instances[0].hits();
    let counts = answers(&client, 10).await;
    assert_eq!(names(&counts), BTreeSet::from(["greet-1", "greet-2"]));
    assert_eq!(instances[0].hits(), hits_0);
    assert_eq!(pool.stats().discovery_updates, 2);
    stop_all(instances).await;
}

/// Answers `Replace(list)` once, then fails while `failing` is set and
/// answers the list again (as a full replace) when it is cleared.
struct Flaky {
    list: Vec<String>,
    failing: Arc<AtomicBool>,
    answered: bool,
}

impl Discover for Flaky {
    async fn next_update(&mut self) -> Result<Update, BoxError> {
        if self.answered {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            let cause =
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "registry refused");
            return Err(Box::new(RegistryError(cause)));
        }
        self.answered = true;
        let endpoints = self
            .list
            .iter()
            .map(|u| Endpoint::new(u))
            .collect::<Result<_, _>>()?;
        Ok(Update::Replace(endpoints))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("registry lookup failed")]
struct RegistryError(#[source] std::io::Error);

#[tokio::test]
async fn a_failing_source_keeps_the_last_good_set() {
    let instances = start_instances(3).await;
    let all = urls(&instances);
    let failing = Arc::new(AtomicBool::new(false));
    let source = Flaky {
        list: all.clone(),
        failing: failing.clone(),
        answered: false,
    };
    let pool = Pool::builder("greet", source)
        .discovery_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .build();
    let client = client_for_pool(pool.clone());
    answers(&client, 3).await;
    let stats = pool.stats();
    assert!(stats.ready && !stats.discovery_stale && stats.discovery_last_error.is_none());

    failing.store(true, Ordering::SeqCst);
    wait_until("the source fails a few times", || {
        pool.stats().discovery_errors >= 3
    })
    .await;
    let stats = pool.stats();
    assert!(stats.discovery_stale);
    let last_error = stats
        .discovery_last_error
        .expect("the last error is reported");
    assert!(
        last_error.contains("registry lookup failed") && last_error.contains("registry refused"),
        "the error and its cause: {last_error}"
    );
    // The last good set stays and serves.
    assert_eq!(keys(&pool), key_set(&all));
    let counts = answers(&client, 30).await;
    assert_eq!(counts.len(), 3, "{counts:?}");

    // Recovery clears the stale flag.
    failing.store(false, Ordering::SeqCst);
    wait_until("the source recovers", || !pool.stats().discovery_stale).await;
    assert_eq!(keys(&pool), key_set(&all));
    stop_all(instances).await;
}

/// A poller over a registry of URLs that counts its fetches.
fn registry_poller(
    registry: &Arc<Mutex<Vec<String>>>,
    every: Duration,
    fetches: &Arc<AtomicU64>,
) -> impl Discover {
    let (registry, fetches) = (registry.clone(), fetches.clone());
    Poller::new(every, move || {
        let list = registry.lock().unwrap().clone();
        fetches.fetch_add(1, Ordering::SeqCst);
        async move {
            list.iter()
                .map(|u| Endpoint::new(u))
                .collect::<Result<Vec<_>, _>>()
        }
    })
}

/// A poller over a fixed list whose fetch fails while `failing` is set.
fn failing_poller(all: &[String], failing: &Arc<AtomicBool>) -> impl Discover {
    let (failing, all) = (failing.clone(), all.to_vec());
    Poller::new(Duration::from_millis(5), move || {
        let result = if failing.load(Ordering::SeqCst) {
            Err("registry unreachable")
        } else {
            Ok(all
                .iter()
                .map(|u| Endpoint::new(u).unwrap())
                .collect::<Vec<_>>())
        };
        async move { result }
    })
}

/// Starts a pool over `failing_poller`, lets it fail, and checks that it
/// keeps serving the last good set meanwhile.
async fn fail_a_poller(all: &[String], failing: &Arc<AtomicBool>) -> (Pool, Client) {
    let pool = Pool::builder("greet", failing_poller(all, failing))
        .discovery_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .build();
    let client = client_for_pool(pool.clone());
    answers(&client, 3).await;

    failing.store(true, Ordering::SeqCst);
    wait_until("the poller fails", || pool.stats().discovery_errors >= 2).await;
    let stats = pool.stats();
    assert!(stats.discovery_stale);
    assert_eq!(
        stats.discovery_last_error.as_deref(),
        Some("registry unreachable")
    );
    assert_eq!(keys(&pool), key_set(all));
    let counts = answers(&client, 30).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    (pool, client)
}

#[tokio::test]
async fn a_failing_poller_keeps_the_last_good_set() {
    let instances = start_instances(3).await;
    let failing = Arc::new(AtomicBool::new(false));
    fail_a_poller(&urls(&instances), &failing).await;
    stop_all(instances).await;
}

#[tokio::test]
async fn a_recovered_poller_is_no_longer_stale() {
    let instances = start_instances(3).await;
    let failing = Arc::new(AtomicBool::new(false));
    let (pool, _client) = fail_a_poller(&urls(&instances), &failing).await;

    // The registry answers again, with the same list as before.
    failing.store(false, Ordering::SeqCst);
    wait_until(
        "the pool is no longer stale once the poller succeeds",
        || !pool.stats().discovery_stale,
    )
    .await;
    stop_all(instances).await;
}

#[tokio::test]
async fn an_empty_replace_does_not_empty_the_pool_by_default() {
    let instances = start_instances(3).await;
    let all = urls(&instances);
    let (source, handle) = Push::new();
    handle.replace(&all).unwrap();
    let client = client_for(source);
    let pool = client.pool("greet").unwrap().clone();
    answers(&client, 3).await;

    handle.send(Update::Replace(vec![])).unwrap();
    wait_until("the empty update is rejected", || {
        pool.stats().discovery_rejected_updates == 1
    })
    .await;
    let stats = pool.stats();
    assert_eq!(stats.discovery_updates, 1);
    assert_eq!(stats.endpoints.len(), 3);
    let counts = answers(&client, 9).await;
    assert_eq!(counts.len(), 3);
    stop_all(instances).await;
}

#[tokio::test]
async fn a_poller_whose_registry_suddenly_lists_nothing_does_not_empty_the_pool() {
    let instances = start_instances(3).await;
    let all = urls(&instances);
    let registry = Arc::new(Mutex::new(all.clone()));
    let source = registry_poller(&registry, Duration::from_millis(5), &Arc::default());
    let client = client_for(source);
    let pool = client.pool("greet").unwrap().clone();
    answers(&client, 3).await;

    // The registry glitches and lists nothing: the pool's default guard
    // against an empty set applies to a poller as to any other source.
    registry.lock().unwrap().clear();
    let rejected = tokio::time::timeout(Duration::from_millis(500), async {
        while pool.stats().discovery_rejected_updates == 0 && !pool.endpoints().is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert_eq!(
        keys(&pool),
        key_set(&all),
        "the pool was emptied (rejected wait: {rejected:?})"
    );
    let counts = answers(&client, 3).await;
    assert_eq!(counts.len(), 3);
    stop_all(instances).await;
}

#[tokio::test]
async fn an_empty_replace_empties_the_pool_when_allowed() {
    let instances = start_instances(3).await;
    let all = urls(&instances);
    let (source, handle) = Push::new();
    handle.replace(&all).unwrap();
    let pool = Pool::builder("greet", source).allow_empty(true).build();
    let client = client_for_pool(pool.clone());
    answers(&client, 3).await;

    handle.send(Update::Replace(vec![])).unwrap();
    wait_until("the pool is emptied", || pool.endpoints().is_empty()).await;
    assert_eq!(pool.stats().discovery_rejected_updates, 0);
    let error = bounded("a request", send(&client, URL)).await.unwrap_err();
    assert!(
        matches!(&error, Error::NoEndpoints { service } if &**service == "greet"),
        "{error:?}"
    );
    assert!(error.to_string().contains("`greet`"), "{error}");
    assert_eq!(error.service(), Some("greet"));
    let hits: u64 = instances.iter().map(|i| i.hits()).sum();
    assert_eq!(hits, 3, "nothing was sent");

    // And it fills up again.
    handle.add(all[0].as_str()).unwrap();
    wait_until("the pool has an endpoint again", || {
        !pool.endpoints().is_empty()
    })
    .await;
    let counts = answers(&client, 2).await;
    assert_eq!(names(&counts), BTreeSet::from(["greet-0"]));
    stop_all(instances).await;
}

#[tokio::test]
async fn endpoint_state_survives_an_update_that_keeps_the_endpoint() {
    let instances = start_instances(3).await;
    let all = urls(&instances);
    let (source, handle) = Push::new();
    handle.replace(&all[..2]).unwrap();
    let client = client_for(source);
    let pool = client.pool("greet").unwrap().clone();
    answers(&client, 4).await; // two each
    assert_eq!(endpoint_stats(&pool, &all[0]).unwrap().requests, 2);

    // One request held in flight at greet-0, the only endpoint left.
    handle.replace(&all[..1]).unwrap();
    wait_until("the pool holds greet-0 only", || {
        keys(&pool) == key_set(&all[..1])
    })
    .await;
    instances[0].set_delay(Duration::from_millis(300));
    let slow = tokio::spawn({
        let client = client.clone();
        async move { send(&client, URL).await }
    });
    wait_until("the request is in flight", || {
        endpoint_stats(&pool, &all[0]).unwrap().in_flight == 1
    })
    .await;

    // Updates that keep greet-0: a replace adding the others, an insert
    // changing its weight.
    handle.replace(&all).unwrap();
    handle
        .send(Update::Insert(vec![
            Endpoint::new(&all[0]).unwrap().with_weight(5).unwrap(),
        ]))
        .unwrap();
    wait_until("both updates are applied", || {
        pool.stats().discovery_updates == 4
    })
    .await;
    let kept = endpoint_stats(&pool, &all[0]).unwrap();
    assert_eq!(
        (kept.in_flight, kept.requests, kept.weight),
        (1, 2, 5),
        "{kept:?}"
    );
    assert!(kept.latency_ms.is_some());
    // greet-2 is new to the pool: fresh counters.
    assert_eq!(endpoint_stats(&pool, &all[2]).unwrap().requests, 0);

    let answer = bounded("the slow request", slow).await.unwrap().unwrap();
    assert_eq!(answer.instance.as_deref(), Some("greet-0"));
    let kept = endpoint_stats(&pool, &all[0]).unwrap();
    assert_eq!(
        (kept.in_flight, kept.requests, kept.failures),
        (0, 3, 0),
        "{kept:?}"
    );
    stop_all(instances).await;
}

#[tokio::test]
async fn a_source_that_never_answers_fails_requests_after_the_ready_timeout() {
    struct Silent;
    impl Discover for Silent {
        async fn next_update(&mut self) -> Result<Update, BoxError> {
            std::future::pending().await
        }
    }
    let timeout = Duration::from_millis(200);
    let layer = LoadBalanceLayer::builder()
        .service("greet", Silent)
        .ready_timeout(timeout)
        .build()
        .unwrap();
    let client = client_with(layer);
    let started = Instant::now();
    let error = bounded("a request", send(&client, URL)).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= timeout && elapsed < WAIT,
        "failed after {elapsed:?}"
    );
    match &error {
        Error::NotReady {
            service,
            waited,
            last_error,
        } => {
            assert_eq!(&**service, "greet");
            assert_eq!(*waited, timeout);
            assert_eq!(*last_error, None);
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("`greet`") && message.contains("200ms"),
        "{message}"
    );
    let stats = client.pool("greet").unwrap().stats();
    assert!(!stats.ready);
}

#[tokio::test]
async fn not_ready_names_the_last_discovery_error() {
    struct Broken;
    impl Discover for Broken {
        async fn next_update(&mut self) -> Result<Update, BoxError> {
            Err("registry is down".into())
        }
    }
    let pool = Pool::builder("greet", Broken)
        .ready_timeout(Duration::from_millis(200))
        .discovery_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .build();
    let client = client_for_pool(pool);
    let error = bounded("a request", send(&client, URL)).await.unwrap_err();
    assert!(matches!(error, Error::NotReady { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("`greet`") && message.contains("registry is down"),
        "{message}"
    );
}

#[tokio::test]
async fn a_request_waits_for_a_slow_first_answer() {
    let instances = start_instances(3).await;
    struct Late(Vec<String>, bool);
    impl Discover for Late {
        async fn next_update(&mut self) -> Result<Update, BoxError> {
            if std::mem::replace(&mut self.1, true) {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(Update::Replace(
                self.0.iter().map(|u| Endpoint::new(u).unwrap()).collect(),
            ))
        }
    }
    let client = client_for(Late(urls(&instances), false));
    assert!(!client.pool("greet").unwrap().is_ready());
    let started = Instant::now();
    let answer = bounded("a request", send(&client, URL)).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.endpoint.is_some());
    assert!(
        elapsed >= Duration::from_millis(90),
        "answered after {elapsed:?}"
    );
    let pool = client.pool("greet").unwrap();
    assert!(pool.is_ready());
    assert_eq!(total_in_flight(pool), 0);
    assert_eq!(
        pool.stats()
            .endpoints
            .iter()
            .map(|e| e.requests)
            .sum::<u64>(),
        1
    );
    stop_all(instances).await;
}

/// A source that tells, when dropped, that its pool's task has stopped.
struct Guarded {
    list: Vec<String>,
    answered: bool,
    dropped: Option<oneshot::Sender<()>>,
}

impl Discover for Guarded {
    async fn next_update(&mut self) -> Result<Update, BoxError> {
        if std::mem::replace(&mut self.answered, true) {
            std::future::pending::<()>().await;
        }
        Ok(Update::Replace(
            self.list
                .iter()
                .map(|u| Endpoint::new(u).unwrap())
                .collect(),
        ))
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(tx) = self.dropped.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_background_task() {
    let instances = start_instances(3).await;
    let (tx, mut dropped) = oneshot::channel();
    let source = Guarded {
        list: urls(&instances),
        answered: false,
        dropped: Some(tx),
    };
    let layer = LoadBalanceLayer::builder()
        .service("greet", source)
        .build()
        .unwrap();
    let client = client_with(layer.clone());
    let pool = layer.pool("greet").unwrap().clone();
    answers(&client, 3).await;

    // Any handle keeps it running: the layer, the client, a pool clone.
    drop(layer);
    drop(client);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        dropped.try_recv().is_err(),
        "stopped while a pool handle was alive"
    );
    assert_eq!(pool.endpoints().len(), 3);

    drop(pool);
    bounded("the source to be dropped", dropped)
        .await
        .expect("the source was dropped");
    stop_all(instances).await;
}

#[tokio::test]
async fn dropping_a_pool_that_never_became_ready_stops_its_task() {
    struct Pending(#[allow(dead_code)] oneshot::Sender<()>);
    impl Discover for Pending {
        async fn next_update(&mut self) -> Result<Update, BoxError> {
            std::future::pending().await
        }
    }
    let (tx, closed) = oneshot::channel::<()>();
    let layer = LoadBalanceLayer::builder()
        .service("greet", Pending(tx))
        .build()
        .unwrap();
    tokio::task::yield_now().await;
    drop(layer);
    // The sender is dropped with the source: the receiver sees it closed.
    assert!(bounded("the source to be dropped", closed).await.is_err());
}

#[test]
fn a_layer_built_outside_a_runtime_starts_discovery_on_first_use() {
    let (source, handle) = Push::new();
    let layer = LoadBalanceLayer::builder()
        .service("greet", source)
        .ready_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let instances = start_instances(3).await;
        handle.replace(urls(&instances)).unwrap();
        let client = client_with(layer);
        let counts = answers(&client, 6).await;
        assert_eq!(counts.len(), 3, "{counts:?}");
        stop_all(instances).await;
    });
}

/// A pool kept across runtimes (a client in a static, shared by tests that
/// each run their own runtime): when the runtime its background task ran on
/// shuts down, the next pick on another runtime starts the task again, and
/// an incremental update applies to the set it had.
#[test]
fn a_pool_outlives_the_runtime_its_task_started_on() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let (source, handle) = Push::new();
    let pool = Pool::builder("svc", source).build();
    let keys = |pool: &Pool| -> BTreeSet<String> {
        pool.endpoints()
            .iter()
            .map(|e| e.key().to_owned())
            .collect()
    };

    let first = runtime();
    first.block_on(async {
        handle.replace(["10.0.0.1:80", "10.0.0.2:80"]).unwrap();
        pool.ready().await.unwrap();
    });
    assert_eq!(keys(&pool).len(), 2);
    // As when a #[tokio::test] fails: its runtime is dropped while the
    // test's panic unwinds (resume_unwind: no panic message printed).
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _runtime = first;
        std::panic::resume_unwind(Box::new("a failing test"));
    }));
    assert!(unwound.is_err());

    // The first runtime took the task with it; this update waits for the
    // next one.
    handle.add("10.0.0.3:80").unwrap();
    let second = runtime();
    let seen = second.block_on(async {
        drop(pool.pick().unwrap());
        tokio::time::timeout(Duration::from_secs(5), async {
            while keys(&pool).len() != 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    });
    assert!(
        seen.is_ok(),
        "the update was never applied: {:?}",
        keys(&pool)
    );
    assert_eq!(
        keys(&pool),
        [
            "http://10.0.0.1:80",
            "http://10.0.0.2:80",
            "http://10.0.0.3:80"
        ]
        .map(String::from)
        .into(),
    );
}
