//! Health against real greet servers on 127.0.0.1: passive ejection of
//! killed and failing instances, active health checks, the ejection cap,
//! panic mode and slow start.

mod support;

use std::time::Duration;

use support::greet::GreetServer;
use support::instances::{start_instances, stop_all, urls};
use support::pool::{endpoint_stats, pool_has};
use support::requests::send;
use support::{Client, reqwest_client, wait_until};
use tower::ServiceBuilder;
use tower_lb::discover::{Fixed, Push};
use tower_lb::health::{HealthCheck, HealthState, OutlierDetection};
use tower_lb::stats::PoolStats;
use tower_lb::{Error, LoadBalanceLayer, Pool};

const GREET: &str = "http://greet/api/greet?name=health";

fn client_for(pool: Pool) -> Client {
    let layer = LoadBalanceLayer::builder().pool(pool).build().unwrap();
    ServiceBuilder::new().layer(layer).service(reqwest_client())
}

fn health_of(pool: &Pool, url: &str) -> HealthState {
    endpoint_stats(pool, url).expect("a member").health
}

/// Kills one of three instances mid-load: it is out of rotation after at
/// most the threshold of failed requests, the rest keep serving, and once
/// it runs again it is back after its ejection period. On tokio's paused
/// clock, so the 30 s ejection passes in no time and exactly.
#[tokio::test(start_paused = true)]
async fn a_killed_instance_is_ejected_and_returns_after_its_ejection() {
    let instances = start_instances(3).await;
    let pool = Pool::builder("greet", Fixed::new(urls(&instances)).unwrap()).build();
    let client = client_for(pool.clone());
    for _ in 0..30 {
        send(&client, GREET).await.unwrap();
    }

    let mut instances = instances;
    let killed = instances.remove(1);
    let (addr, url) = (killed.addr(), killed.url());
    killed.stop().await;

    let mut failures = 0;
    for _ in 0..300 {
        match send(&client, GREET).await {
            Ok(answer) => assert_eq!(answer.status, 200),
            Err(Error::Inner {
                endpoint: Some(e), ..
            }) if e.key() == url => failures += 1,
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(
        failures, 5,
        "exactly the threshold of requests failed on the dead instance"
    );
    assert_eq!(health_of(&pool, &url), HealthState::Ejected);
    let ejected_for = endpoint_stats(&pool, &url)
        .unwrap()
        .ejected_for_secs
        .unwrap();
    assert!((29.0..=30.0).contains(&ejected_for), "{ejected_for}");

    // Started again on the same port: back within one ejection period.
    let revived = GreetServer::start_on(addr, "revived").await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    wait_until("the revived instance is back", || {
        health_of(&pool, &url) == HealthState::Healthy
    })
    .await;
    for _ in 0..30 {
        send(&client, GREET).await.unwrap();
    }
    assert!(
        revived.hits() >= 5,
        "the revived instance gets traffic again: {}",
        revived.hits()
    );
    revived.stop().await;
    stop_all(instances).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_instance_is_ejected_a_404_one_is_not() {
    let instances = start_instances(3).await;
    instances[0].set_status(Some(503));
    instances[1].set_status(Some(404));
    let pool = Pool::builder("greet", Fixed::new(urls(&instances)).unwrap()).build();
    let client = client_for(pool.clone());
    for _ in 0..60 {
        send(&client, GREET).await.unwrap();
    }
    assert_eq!(health_of(&pool, &instances[0].url()), HealthState::Ejected);
    assert_eq!(instances[0].hits(), 5, "ejected after exactly 5 failures");
    assert_eq!(health_of(&pool, &instances[1].url()), HealthState::Healthy);
    assert_eq!(health_of(&pool, &instances[2].url()), HealthState::Healthy);
    let stats = pool.stats();
    assert_eq!((stats.eligible, stats.panic), (2, false));
    stop_all(instances).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_rate_ejects_an_instance_that_fails_often_but_not_in_a_row() {
    let instances = start_instances(3).await;
    let pool = Pool::builder("greet", Fixed::new(urls(&instances)).unwrap())
        .outlier_detection(
            OutlierDetection::new()
                .consecutive_failures(1000)
                .failure_rate(0.4, 10, Duration::from_secs(10)),
        )
        .build();
    let client = client_for(pool.clone());
    // Instance 0 fails every other request it gets.
    let flaky = instances[0].control();
    for i in 0..120 {
        flaky.set_status((i % 2 == 0).then_some(500));
        let _ = send(&client, GREET).await;
    }
    assert_eq!(health_of(&pool, &instances[0].url()), HealthState::Ejected);
    stop_all(instances).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_take_out_an_unhealthy_instance_before_user_requests_fail() {
    let instances = start_instances(3).await;
    let check = HealthCheck::http("/health")
        .interval(Duration::from_millis(50))
        .timeout(Duration::from_millis(500))
        .unhealthy_threshold(3)
        .healthy_threshold(2);
    let pool = Pool::builder("greet", Fixed::new(urls(&instances)).unwrap())
        .health_check(check)
        .build();
    let client = client_for(pool.clone());
    pool.ready().await.unwrap();
    wait_until("every instance was probed", || {
        instances.iter().all(|i| i.health_hits() > 0)
    })
    .await;

    let sick = &instances[0];
    sick.set_health_status(Some(500));
    wait_until("the sick instance is out", || {
        health_of(&pool, &sick.url()) == HealthState::Unhealthy
    })
    .await;
    let stats = endpoint_stats(&pool, &sick.url()).unwrap();
    assert!(stats.failed_checks >= 3);
    assert!(stats.last_check_error.unwrap().contains("500"));

    let user_hits = sick.hits() - sick.health_hits();
    for _ in 0..60 {
        send(&client, GREET).await.unwrap();
    }
    assert_eq!(
        sick.hits() - sick.health_hits(),
        user_hits,
        "no user request reached it"
    );

    sick.set_health_status(None);
    wait_until("it is back after two good probes", || {
        health_of(&pool, &sick.url()) == HealthState::Healthy
    })
    .await;
    for _ in 0..60 {
        send(&client, GREET).await.unwrap();
    }
    assert!(sick.hits() - sick.health_hits() > user_hits);
    stop_all(instances).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_endpoints_can_wait_for_their_first_good_probe() {
    let instances = start_instances(2).await;
    instances[1].set_health_status(Some(503));
    let check = HealthCheck::http("/health")
        .interval(Duration::from_millis(50))
        .start_unhealthy(true);
    let pool = Pool::builder("greet", Fixed::new(urls(&instances)).unwrap())
        .health_check(check)
        .panic_threshold(0.0)
        .build();
    let client = client_for(pool.clone());
    pool.ready().await.unwrap();
    wait_until("the healthy one passed a probe", || {
        health_of(&pool, &instances[0].url()) == HealthState::Healthy
    })
    .await;
    for _ in 0..20 {
        let answer = send(&client, GREET).await.unwrap();
        assert_eq!(answer.instance.as_deref(), Some("greet-0"));
    }
    assert_eq!(
        health_of(&pool, &instances[1].url()),
        HealthState::Unhealthy
    );
    stop_all(instances).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_of_four_failing_the_cap_holds_and_panic_is_reported() {
    // Defaults: at most 50% ejected, so 2 of 4; then 2 of 4 eligible is not
    // below the 50% panic threshold.
    let instances = start_instances(4).await;
    for i in &instances[..3] {
        i.set_status(Some(503));
    }
    let pool = Pool::builder("greet", Fixed::new(urls(&instances)).unwrap()).build();
    let client = client_for(pool.clone());
    for _ in 0..200 {
        let _ = send(&client, GREET).await;
        let ejected = ejected(&pool.stats());
        assert!(ejected <= 2, "{ejected} ejected, over the cap");
    }
    let stats = pool.stats();
    assert_eq!(ejected(&stats), 2);
    assert!(!stats.panic);

    // A cap that allows three: one of four eligible is below 50%, so the
    // pool panics and balances over all four.
    let pool = Pool::builder("greet", Fixed::new(urls(&instances)).unwrap())
        .outlier_detection(OutlierDetection::new().max_ejected_percent(75))
        .build();
    let client = client_for(pool.clone());
    for _ in 0..200 {
        let _ = send(&client, GREET).await;
    }
    let stats = pool.stats();
    assert_eq!(ejected(&stats), 3);
    assert!(stats.panic, "panic is reported");
    assert!(pool.in_panic());
    assert_eq!(stats.eligible, 4, "in panic every endpoint is eligible");
    let before: Vec<u64> = instances.iter().map(GreetServer::hits).collect();
    for _ in 0..200 {
        let _ = send(&client, GREET).await;
    }
    for (i, instance) in instances.iter().enumerate() {
        assert!(
            instance.hits() > before[i] + 20,
            "instance {i} gets its share in panic"
        );
    }
    stop_all(instances).await;
}

/// On tokio's paused clock and in-memory instances behind the real layer:
/// the verdict cannot depend on how fast a loaded machine sends requests.
#[tokio::test(start_paused = true)]
async fn slow_start_ramps_a_new_endpoint_up() {
    use support::retry::{Instances, Reply};
    use tower::ServiceExt;

    let instances = Instances::new(3, |_, _, _| Reply::ok());
    let (source, handle) = Push::new();
    let pool = Pool::builder("greet", source)
        .slow_start(Duration::from_secs(2))
        .seed(12)
        .build();
    handle.replace(instances.urls()[..2].to_vec()).unwrap();
    let layer = LoadBalanceLayer::builder()
        .pool(pool.clone())
        .build()
        .unwrap();
    // One attempt per call: the retry layer only gives the requests the
    // body type the in-memory instances take.
    let once = tower_lb::retry::RetryLayer::builder()
        .max_attempts(1)
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(once)
        .layer(layer)
        .service(instances.service(false));
    pool.ready().await.unwrap();
    handle.add(instances.urls()[2].clone()).unwrap();
    wait_until("the new endpoint joined", || {
        pool_has(&pool, &instances.urls()[2])
    })
    .await;

    let send_300 = || async {
        let before = instances.hits(2);
        for _ in 0..300 {
            let response = client.clone().oneshot(support::retry::get()).await.unwrap();
            assert_eq!(response.status(), 200);
        }
        instances.hits(2) - before
    };
    // Just joined: a small share.
    let early = send_300().await;
    // Ramp over: a full third.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let late = send_300().await;
    assert!(early < 60, "ramping: {early} of 300");
    assert!((90..=110).contains(&late), "ramped: {late} of 300");
}

/// How many of the pool's endpoints are ejected.
fn ejected(stats: &PoolStats) -> usize {
    stats
        .endpoints
        .iter()
        .filter(|e| e.health == HealthState::Ejected)
        .count()
}
