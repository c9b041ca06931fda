//! HTTPS through the load-balancing layer, for real: rustls servers on
//! loopback with certificates issued in the test by a test authority,
//! reached with reqwest and with hyper-util's client (hyper-rustls).
//!
//! How the server's identity is checked when discovery yields IP
//! addresses (the README's "Security and TLS" says the same):
//!
//! - reqwest verifies the certificate against the host of the URL it is
//!   given, which after balancing is the endpoint's: an IP endpoint needs a
//!   certificate with that IP address among its names. reqwest cannot be
//!   told another name per request or per address.
//! - hyper-util with hyper-rustls can: its connector's server-name
//!   resolver gives the name used for SNI and verification while the TCP
//!   connection goes to the endpoint's address, so a pool of IPs can be
//!   held to the service's name (`greet.test`).
//!
//! A request for `https://` to an `http` endpoint never leaves in plain
//! text: `Error::InsecureEndpoint`, unless `SchemePolicy::EndpointDecides`.

mod support;

use http_body_util::{BodyExt, Empty};
use hyper_rustls::{FixedServerNameResolver, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::ServerName;
use support::greet::GreetServer;
use support::tls::{TestCa, TlsServer};
use support::{bounded, reqwest_client};
use tower::{ServiceBuilder, ServiceExt};
use tower_lb::discover::Fixed;
use tower_lb::{Endpoint, Error, LoadBalance, LoadBalanceLayer, SchemePolicy};

fn layer(endpoint: String) -> LoadBalanceLayer {
    LoadBalanceLayer::builder()
        .service("greet", Fixed::new([endpoint]).unwrap())
        .build()
        .unwrap()
}

fn get(url: &str) -> reqwest::Request {
    reqwest::Request::new(http::Method::GET, url.parse().unwrap())
}

/// An error and its causes, one line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// rustls's words for a certificate no trusted authority signed (both test
/// authorities have the same empty name, so it may find the "issuer" and
/// then a bad signature).
fn untrusted(text: &str) -> bool {
    text.contains("invalid peer certificate")
        && (text.contains("UnknownIssuer") || text.contains("BadSignature"))
}

async fn reqwest_call(
    client: LoadBalance<reqwest::Client>,
    url: &str,
) -> Result<(String, String), Error> {
    let response = bounded("an https call", client.oneshot(get(url))).await?;
    let instance = response.headers()["x-instance"]
        .to_str()
        .unwrap()
        .to_owned();
    let endpoint = response
        .extensions()
        .get::<Endpoint>()
        .unwrap()
        .key()
        .to_owned();
    let body = response.text().await.unwrap();
    assert_eq!(body, format!("hello from {instance}"));
    Ok((instance, endpoint))
}

#[tokio::test]
async fn reqwest_verifies_the_certificate_of_an_ip_endpoint() {
    let ca = TestCa::new();
    let server = TlsServer::start("tls-a", ca.issue(&["127.0.0.1"])).await;
    let client = ServiceBuilder::new()
        .layer(layer(server.url()))
        .service(ca.reqwest_client());
    let (instance, endpoint) = reqwest_call(client.clone(), "https://greet/api/greet")
        .await
        .unwrap();
    assert_eq!((instance.as_str(), endpoint), ("tls-a", server.url()));
    // A plain-http request to an https endpoint goes out with TLS too.
    reqwest_call(client, "http://greet/api/greet")
        .await
        .unwrap();
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn reqwest_rejects_a_certificate_from_an_unknown_authority() {
    let (ca, stranger) = (TestCa::new(), TestCa::new());
    let server = TlsServer::start("tls-bad", stranger.issue(&["127.0.0.1"])).await;
    let client = ServiceBuilder::new()
        .layer(layer(server.url()))
        .service(ca.reqwest_client());
    let error = reqwest_call(client, "https://greet/api/greet")
        .await
        .expect_err("an untrusted certificate is rejected");
    let text = chain(&error);
    assert!(matches!(error, Error::Inner { .. }), "{text}");
    assert!(untrusted(&text), "{text}");
    assert_eq!(
        error.endpoint().map(Endpoint::key),
        Some(server.url().as_str())
    );
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn reqwest_checks_the_ip_so_a_name_only_certificate_fails_at_an_ip_endpoint() {
    let ca = TestCa::new();
    let server = TlsServer::start("tls-named", ca.issue(&["greet.test"])).await;
    let client = ServiceBuilder::new()
        .layer(layer(server.url()))
        .service(ca.reqwest_client());
    let error = reqwest_call(client, "https://greet/api/greet")
        .await
        .expect_err("the certificate does not name 127.0.0.1");
    let text = chain(&error);
    assert!(text.contains("certificate not valid for name"), "{text}");
    assert_eq!(server.hits(), 0);
}

/// hyper-util's client over hyper-rustls, verifying every endpoint against
/// `name` whatever address it has.
fn hyper_client(
    ca: &TestCa,
    name: &'static str,
) -> HyperClient<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<bytes::Bytes>,
> {
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(ca.client_config())
        .https_only()
        .with_server_name_resolver(FixedServerNameResolver::new(
            ServerName::try_from(name).unwrap(),
        ))
        .enable_http1()
        .build();
    HyperClient::builder(TokioExecutor::new()).build(connector)
}

async fn hyper_call(ca: &TestCa, server: &TlsServer, name: &'static str) -> Result<String, Error> {
    let client = ServiceBuilder::new()
        .layer(layer(server.url()))
        .service(hyper_client(ca, name));
    let request = http::Request::get("https://greet/api/greet")
        .body(Empty::new())
        .unwrap();
    let response = bounded("an https call", client.oneshot(request)).await?;
    let instance = response.headers()["x-instance"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, format!("hello from {instance}").as_bytes());
    Ok(instance)
}

#[tokio::test]
async fn hyper_util_holds_ip_endpoints_to_the_service_name() {
    let ca = TestCa::new();
    // The certificate names the service only, not the address.
    let server = TlsServer::start("tls-h", ca.issue(&["greet.test"])).await;
    assert_eq!(
        hyper_call(&ca, &server, "greet.test").await.unwrap(),
        "tls-h"
    );
    assert_eq!(server.hits(), 1);

    // Held to another name, the same certificate is rejected.
    let error = hyper_call(&ca, &server, "other.test")
        .await
        .expect_err("the certificate does not name other.test");
    let text = chain(&error);
    assert!(text.contains("certificate not valid for name"), "{text}");

    // And a certificate from an unknown authority, whatever its names.
    let stranger = TestCa::new();
    let bad = TlsServer::start("tls-h-bad", stranger.issue(&["greet.test"])).await;
    let error = hyper_call(&ca, &bad, "greet.test")
        .await
        .expect_err("an untrusted certificate is rejected");
    assert!(untrusted(&chain(&error)), "{}", chain(&error));
    assert_eq!((server.hits(), bad.hits()), (1, 0));
}

#[tokio::test]
async fn an_https_request_never_goes_to_an_http_endpoint_in_plain_text() {
    let plain = GreetServer::start("plain").await.unwrap();
    let client = ServiceBuilder::new()
        .layer(layer(plain.url()))
        .service(reqwest_client());
    let error = bounded("refused", client.oneshot(get("https://greet/api/greet")))
        .await
        .expect_err("a downgrade is refused");
    match &error {
        Error::InsecureEndpoint { service, endpoint } => {
            assert_eq!(&**service, "greet");
            assert_eq!(endpoint.key(), plain.url());
        }
        other => panic!("expected InsecureEndpoint, got {other:?}"),
    }
    assert!(error.to_string().contains("https"), "{error}");
    assert_eq!(plain.hits(), 0, "nothing was sent");

    // Opted in: the endpoint's scheme decides.
    let lb = LoadBalanceLayer::builder()
        .service("greet", Fixed::new([plain.url()]).unwrap())
        .scheme_policy(SchemePolicy::EndpointDecides)
        .build()
        .unwrap();
    let client = ServiceBuilder::new().layer(lb).service(reqwest_client());
    let response = bounded(
        "sent",
        client.oneshot(get("https://greet/api/greet?name=x")),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(plain.hits(), 1);
}
