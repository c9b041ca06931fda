//! One span per call and one per attempt inside it, with OpenTelemetry's
//! field names: a call that needs a retry, against real instances on
//! 127.0.0.1. One test, one thread: a subscriber set for one thread
//! competes with other tests' threads for tracing's callsite cache.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use support::greet::GreetServer;
use tower_lb::balance::RoundRobin;
use tower_lb::discover::Fixed;
use tower_lb::health::OutlierDetection;
use tower_lb::retry::RetryLayer;
use tower_lb::{Client, LoadBalanceLayer};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span as the subscriber saw it: its name, its parent's, its fields.
#[derive(Debug, Clone, Default)]
struct Seen {
    name: String,
    parent: Option<String>,
    fields: BTreeMap<String, String>,
}

/// Keeps every span of target `tower_lb`, by id.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<BTreeMap<u64, Seen>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            format!("{value:?}").trim_matches('"').to_string(),
        );
    }
}

impl<S> tracing_subscriber::Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().target() != "tower_lb" {
            return;
        }
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .map(|parent| parent.name().to_string());
        let mut seen = Seen {
            name: attrs.metadata().name().to_string(),
            parent,
            ..Seen::default()
        };
        attrs.record(&mut Fields(&mut seen.fields));
        self.0.lock().unwrap().insert(id.into_u64(), seen);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        if let Some(seen) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }
}

#[tokio::test]
async fn a_retried_call_is_one_call_span_over_two_attempt_spans() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    // One instance of two fails every request: a call that starts there
    // is retried on the other.
    let broken = GreetServer::start("broken").await.unwrap();
    broken.set_status(Some(503));
    let fine = GreetServer::start("fine").await.unwrap();
    let balancer = LoadBalanceLayer::builder()
        .service("greet", Fixed::new([broken.url(), fine.url()]).unwrap())
        .balancer(RoundRobin::new())
        .configure_pools(|pool| pool.outlier_detection(OutlierDetection::disabled()))
        .build()
        .unwrap();
    let client = Client::builder(support::reqwest_client(), balancer)
        .retry(RetryLayer::new())
        .build();
    for _ in 0..2 {
        let response = client
            .get("http://user:secret@greet/api/greet?name=Ann")
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        response.bytes().await.unwrap();
    }

    let seen: Vec<Seen> = spans.0.lock().unwrap().values().cloned().collect();
    let calls: Vec<&Seen> = seen.iter().filter(|s| s.name == "tower_lb.call").collect();
    let attempts: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.name == "tower_lb.attempt")
        .collect();
    assert_eq!(calls.len(), 2, "{seen:#?}");
    // Each call's attempts are spans of their own, as many as it says.
    let counted: usize = calls
        .iter()
        .map(|c| c.fields["tower_lb.attempts"].parse::<usize>().unwrap())
        .sum();
    assert_eq!(attempts.len(), counted, "{seen:#?}");
    for call in &calls {
        assert_eq!(call.fields["http.request.method"], "GET");
        assert_eq!(call.fields["tower_lb.service"], "greet");
        assert_eq!(call.fields["http.response.status_code"], "200");
        let url = &call.fields["url.full"];
        assert!(
            url.starts_with("http://") && url.contains("greet/api/greet"),
            "{url}"
        );
        assert!(!url.contains("secret"), "userinfo in a span: {url}");
    }
    // Round robin over one failing and one fine instance: a call that
    // started on the failing one was retried on the other.
    let retried = calls
        .iter()
        .filter(|c| c.fields["tower_lb.attempts"] == "2")
        .count();
    assert!(retried >= 1, "{calls:#?}");
    for attempt in &attempts {
        assert_eq!(
            attempt.parent.as_deref(),
            Some("tower_lb.call"),
            "{attempt:?}"
        );
        let port = attempt.fields["server.port"].parse::<u16>().unwrap();
        assert_eq!(attempt.fields["server.address"], "127.0.0.1");
        let status = &attempt.fields["http.response.status_code"];
        if port == broken.addr().port() {
            assert_eq!(status, "503");
        } else {
            assert_eq!(port, fine.addr().port());
            assert_eq!(status, "200");
        }
    }
    let resends: Vec<&str> = attempts
        .iter()
        .map(|a| a.fields["http.request.resend_count"].as_str())
        .collect();
    assert_eq!(
        resends.iter().filter(|r| **r == "0").count(),
        2,
        "{resends:?}"
    );
    assert_eq!(
        resends.iter().filter(|r| **r == "1").count(),
        retried,
        "{resends:?}"
    );
}
