//! The monitoring example's series, scraped from its Prometheus endpoint
//! with a real HTTP GET: requests counted per endpoint, the failing one
//! ejected, retries and pool gauges present. Its own binary: the recorder
//! is process-wide.
#![cfg(feature = "metrics")]

#[path = "../examples/support/greet.rs"]
mod greet;
#[path = "../examples/support/monitoring.rs"]
mod monitoring;

/// The value of the first series line that starts with `name{` and
/// contains every one of `labels`.
fn value(scrape: &str, name: &str, labels: &[&str]) -> Option<f64> {
    scrape
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_series_are_scraped_with_plausible_values() {
    let demo = tokio::time::timeout(std::time::Duration::from_secs(10), monitoring::start())
        .await
        .expect("bounded")
        .unwrap();
    let ok = monitoring::traffic(&demo.client, 300).await;
    assert_eq!(ok, 300, "retries hide the failing instance");
    let scrape = reqwest::get(&demo.scrape_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // Every call, once.
    let calls = value(
        &scrape,
        "tower_lb_call_duration_count",
        &["http_response_status_code=\"200\""],
    );
    assert_eq!(calls, Some(300.0), "{scrape}");
    // Attempts per endpoint: each instance served; the failing one's 503s
    // counted against it, under its own port.
    let port = |i: usize| format!("server_port=\"{}\"", demo.instances[i].addr().port());
    for i in 1..3 {
        let served = value(
            &scrape,
            "http_client_request_duration_count",
            &[&port(i), "=\"200\""],
        );
        assert!(
            served.is_some_and(|n| n >= 50.0),
            "instance {i}: {served:?}\n{scrape}"
        );
    }
    let failed = value(
        &scrape,
        "http_client_request_duration_count",
        &[&port(0), "=\"503\""],
    );
    assert!(failed.is_some_and(|n| n >= 5.0), "{failed:?}\n{scrape}");
    // Five in a row eject it.
    let ejections = value(&scrape, "tower_lb_ejections", &[&port(0)]);
    assert_eq!(ejections, Some(1.0), "{scrape}");
    let ejected = value(&scrape, "tower_lb_pool_endpoints", &["state=\"ejected\""]);
    assert_eq!(ejected, Some(1.0), "{scrape}");
    let eligible = value(&scrape, "tower_lb_pool_endpoints", &["state=\"eligible\""]);
    assert_eq!(eligible, Some(2.0), "{scrape}");
    // Its 503s were retried, each retry an attempt of kind `retry`.
    let retries = value(&scrape, "tower_lb_retries", &["reason=\"status 503\""]);
    assert!(retries.is_some_and(|n| n >= 5.0), "{retries:?}\n{scrape}");
    let first = value(&scrape, "tower_lb_attempts", &["kind=\"first\""]);
    assert_eq!(first, Some(300.0), "{scrape}");
    // Nothing left in flight; the source answered once.
    for i in 0..3 {
        let active = value(&scrape, "http_client_active_requests", &[&port(i)]);
        assert_eq!(active, Some(0.0), "instance {i}\n{scrape}");
    }
    assert_eq!(
        value(&scrape, "tower_lb_discovery_updates", &[]),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        value(&scrape, "tower_lb_pool_panic", &[]),
        Some(0.0),
        "{scrape}"
    );
    for instance in demo.instances {
        instance.stop().await;
    }
}
