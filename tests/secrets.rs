//! The canary: one secret placed everywhere a user might put one (URL
//! userinfo, `Authorization`, `Proxy-Authorization`, `Cookie`, etcd
//! credentials, endpoint strings) while discovery, balancing, retries,
//! outlier detection and active health checks run with every log at TRACE.
//! The secret must appear nowhere: not in the captured log, not in an
//! error's `Display` or `Debug`, not in the serialized stats.
//!
//! In a file of its own: it installs the process-wide subscriber.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use support::greet::GreetServer;
use support::{bounded, reqwest_client};
use tower::{ServiceBuilder, ServiceExt};
use tower_lb::discover::Fixed;
use tower_lb::health::{HealthCheck, OutlierDetection};
use tower_lb::retry::RetryLayer;
use tower_lb::{Endpoint, LoadBalanceLayer};

const CANARY: &str = "CaNaRy7391";

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn with_secrets(mut request: reqwest::Request) -> reqwest::Request {
    let headers = request.headers_mut();
    headers.insert(AUTHORIZATION, format!("Bearer {CANARY}").parse().unwrap());
    headers.insert(
        PROXY_AUTHORIZATION,
        format!("Basic {CANARY}").parse().unwrap(),
    );
    headers.insert(COOKIE, format!("session={CANARY}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_secret_is_printed_nowhere_at_trace() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_env_filter("trace")
        .with_ansi(false)
        .init();
    let mut printed = Vec::new();

    // Endpoint strings with the secret as userinfo: rejected, not echoed.
    for input in [
        format!("http://user:{CANARY}@10.0.0.7:8080"),
        format!("{CANARY}@10.0.0.7:8080"),
        format!("https://u:{CANARY}@[::1]:1/"),
    ] {
        let error = Endpoint::new(&input).unwrap_err();
        printed.push(format!("{error} {error:?}"));
        let error = Fixed::new([input.as_str()]).unwrap_err();
        printed.push(format!("{error} {error:?}"));
    }

    // Three instances: one answers 503 (retried, then ejected), one fails
    // its health checks, one is fine.
    let good = GreetServer::start("good").await.unwrap();
    let failing = GreetServer::start("failing").await.unwrap();
    failing.set_status(Some(503));
    // Its checks pass: left to answer 503 there too, a loaded machine could
    // see it marked unhealthy before any request reached it, and it would
    // never be ejected.
    failing.set_health_status(Some(200));
    let sick = GreetServer::start("sick").await.unwrap();
    sick.set_health_status(Some(500));
    let layer = LoadBalanceLayer::builder()
        .service(
            "greet",
            Fixed::new([good.url(), failing.url(), sick.url()]).unwrap(),
        )
        .configure_pools(|pool| {
            pool.outlier_detection(OutlierDetection::new().consecutive_failures(2))
                .health_check(
                    HealthCheck::http("/health")
                        .interval(Duration::from_millis(20))
                        .unhealthy_threshold(1),
                )
        })
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(layer.clone())
        .service(reqwest_client());

    let url = format!("http://app:{CANARY}@greet/api/greet?name=x");
    for _ in 0..12 {
        let request = with_secrets(reqwest::Request::new(
            http::Method::GET,
            url.parse().unwrap(),
        ));
        match bounded("a balanced call", client.clone().oneshot(request)).await {
            Ok(response) => {
                printed.push(format!("{response:?}"));
                let _ = response.bytes().await;
            }
            Err(error) => printed.push(format!("{error} {error:?}")),
        }
    }

    // A call that fails at the client: nothing listens any more.
    let gone = GreetServer::start("gone").await.unwrap();
    let gone_url = gone.url();
    gone.stop().await;
    let dead = LoadBalanceLayer::builder()
        .service("dead", Fixed::new([gone_url]).unwrap())
        .build()
        .unwrap();
    let dead_client = ServiceBuilder::new()
        .layer(RetryLayer::builder().max_attempts(2).build().unwrap())
        .layer(dead.clone())
        .service(reqwest_client());
    let request = with_secrets(reqwest::Request::new(
        http::Method::GET,
        format!("http://app:{CANARY}@dead/api").parse().unwrap(),
    ));
    let error = bounded("a call to a dead port", dead_client.oneshot(request))
        .await
        .expect_err("nothing listens");
    printed.push(format!("{error} {error:?}"));

    // The same through hyper-util's client with an `http::Request`.
    let hyper = ServiceBuilder::new()
        .layer(layer.clone())
        .service(HyperClient::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>());
    let request = http::Request::get(format!("http://app:{CANARY}@greet/api/greet"))
        .header(AUTHORIZATION, format!("Bearer {CANARY}"))
        .header(COOKIE, format!("session={CANARY}"))
        .body(Empty::new())
        .unwrap();
    printed.push(format!("{request:?}").replace(CANARY, "<in the caller's own request>"));
    match bounded("a hyper call", hyper.oneshot(request)).await {
        Ok(response) => {
            printed.push(format!("{response:?}"));
            let _ = response.into_body().collect().await;
        }
        Err(error) => printed.push(format!("{error} {error:?}")),
    }

    #[cfg(feature = "etcd")]
    etcd_with_canary_credentials(&mut printed).await;

    // Let health checks and ejections run and log.
    let pool = layer.pool("greet").unwrap();
    let settled = tokio::time::timeout(support::WAIT, async {
        // (Two of three out puts the pool in panic mode: all stay eligible.)
        loop {
            let stats = pool.stats();
            let ejected = stats.endpoints.iter().any(|e| e.times_ejected > 0);
            let checked = stats.endpoints.iter().any(|e| e.failed_checks > 0);
            if ejected && checked {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "an instance is ejected, one fails its checks: {:?}",
        pool.stats()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stats = serde_json::to_string(&(layer.stats(), dead.stats())).unwrap();
    let log = captured.text();
    assert!(
        log.contains("TRACE") && log.contains("retrying") && log.contains("ejected"),
        "the log captured the run at TRACE:\n{log}"
    );
    assert!(
        printed.iter().any(|p| p.contains("***@")),
        "the rejected endpoints were quoted, redacted: {printed:?}"
    );
    for (what, text) in [("the log", log), ("the stats", stats)]
        .into_iter()
        .chain(printed.into_iter().map(|p| ("an error or response", p)))
    {
        if let Some(at) = text.find(CANARY) {
            let from = text[..at]
                .char_indices()
                .rev()
                .nth(200)
                .map_or(0, |(i, _)| i);
            let to = (at + 100).min(text.len());
            panic!("the canary is in {what}: ...{}...", &text[from..to]);
        }
    }
}

/// An etcd source with the canary as its password: a wrong one (typed
/// error) and the right one (discovery works), the password in neither.
#[cfg(feature = "etcd")]
async fn etcd_with_canary_credentials(printed: &mut Vec<String>) {
    use support::etcd::EtcdServer;
    use tower_lb::discover::Discover;
    use tower_lb::discover::etcd::{Etcd, EtcdConfig};

    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let instance = GreetServer::start("etcd-found").await.unwrap();
    etcd.enable_auth("root-pw", "app", CANARY, "greet/");
    etcd.etcdctl_as_root(
        "root-pw",
        &[
            "put",
            &format!("greet/{}", instance.addr()),
            &format!(r#"{{"Addr":"{}"}}"#, instance.addr()),
        ],
    );
    // A value whose Addr carries credentials: skipped, logged redacted.
    etcd.etcdctl_as_root(
        "root-pw",
        &[
            "put",
            &format!("greet/u:{CANARY}@10.0.0.9:1"),
            &format!(r#"{{"Addr":"http://u:{CANARY}@10.0.0.9:1"}}"#),
        ],
    );
    let config = EtcdConfig::new([etcd.url()]).unwrap();
    let wrong = config.clone().credentials("app", format!("{CANARY}-wrong"));
    let mut source = Etcd::new(wrong.clone(), "greet").unwrap();
    let error = bounded("a wrong password", source.next_update())
        .await
        .expect_err("a wrong password fails");
    printed.push(format!("{error} {error:?} {wrong:?}"));
    let right = config.credentials("app", CANARY);
    let mut source = Etcd::new(right.clone(), "greet").unwrap();
    let update = bounded("discovery with the password", source.next_update())
        .await
        .expect("the right password works");
    printed.push(format!("{update:?} {right:?} {source:?}"));
}
