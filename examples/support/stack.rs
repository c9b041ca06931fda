//! tower-http's client layers stacked with tower-lb's, in the order they
//! belong, over hyper-util's client. Shared by `examples/tower_http_stack.rs`
//! and its test.
//!
//! Above the retry layer, once per logical call:
//! - `SetSensitiveRequestHeaders` first, so nothing below (traces
//!   included) prints the credentials;
//! - `SetRequestId` / `PropagateRequestId`: one id for the call, not one
//!   per attempt, and the id handed back on the response;
//! - `TraceLayer`: one span per call, around every attempt;
//! - `FollowRedirect`: a redirect is a new call, so it is balanced (and
//!   retried) again, even to another service;
//! - `Decompression`: the body is inflated for the caller; below it the
//!   balancer follows the bytes as they come off the wire.
//!
//! Below the retry layer, once per attempt: the balancer, then the client.

// Each includer uses only part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderName};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;
use tower_http::decompression::DecompressionLayer;
use tower_http::follow_redirect::FollowRedirectLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use tower_lb::LoadBalanceLayer;
use tower_lb::retry::{ReplayBody, RetryLayer};

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Numbers requests 1, 2, 3, ...
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl MakeRequestId for Counter {
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<RequestId> {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        Some(RequestId::new(http::HeaderValue::from(n)))
    }
}

/// What the stack answers: a response whose body may have been inflated.
pub type Answer = http::Response<
    tower_http::trace::ResponseBody<
        tower_http::decompression::DecompressionBody<tower_lb::TrackedBody<hyper::body::Incoming>>,
        tower_http::classify::NeverClassifyEos<tower_http::classify::ServerErrorsFailureClass>,
    >,
>;

/// The whole stack, boxed so that its type can be named.
pub type Stack = BoxCloneSyncService<http::Request<Full<Bytes>>, Answer, tower_lb::BoxError>;

/// tower-http above the retry layer, the balancer below it.
pub fn stack(balancer: LoadBalanceLayer) -> Stack {
    let hyper: Client<HttpConnector, ReplayBody<Full<Bytes>>> =
        Client::builder(TokioExecutor::new()).build_http();
    let service = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
        .layer(SetRequestIdLayer::new(REQUEST_ID, Counter::default()))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http())
        .layer(FollowRedirectLayer::new())
        .layer(DecompressionLayer::new())
        .map_err(tower_lb::BoxError::from)
        .layer(RetryLayer::new())
        .layer(balancer)
        .service(hyper);
    BoxCloneSyncService::new(service)
}
