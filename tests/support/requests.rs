//! One request through the balanced client: `GET url` read into an
//! [`Answer`], or `GET http://{service}/api/greet` reduced to who answered.

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use tower::{Service, ServiceExt};
use tower_lb::{Endpoint, Error};

use super::{Client, WAIT};

/// `GET url` as a `reqwest::Request`.
pub fn get_request(url: &str) -> reqwest::Request {
    reqwest::Request::new(Method::GET, url.parse().expect("a valid URL"))
}

/// What one balanced request produced.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    /// The `x-instance` header: who answered.
    pub instance: Option<String>,
    /// The endpoint the layer noted in the response's extensions.
    pub endpoint: Option<Endpoint>,
    pub body: String,
}

/// Sends `GET url` through `client` and reads the whole answer.
pub async fn send(client: &Client, url: &str) -> Result<Answer, Error> {
    let response = client.clone().oneshot(get_request(url)).await?;
    Ok(read_answer(response).await)
}

/// Like [`send`], on a `&mut` service: `ready` then `call`.
pub async fn send_mut(client: &mut Client, url: &str) -> Result<Answer, Error> {
    let response = ServiceExt::<reqwest::Request>::ready(client)
        .await?
        .call(get_request(url))
        .await?;
    Ok(read_answer(response).await)
}

async fn read_answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let instance = response
        .headers()
        .get("x-instance")
        .map(|v| v.to_str().expect("an ASCII instance name").to_owned());
    let endpoint = response.extensions().get::<Endpoint>().cloned();
    let body = response.text().await.expect("read the body");
    Answer {
        status,
        instance,
        endpoint,
        body,
    }
}

/// Sends one `GET http://{service}/api/greet` through the layer; returns the
/// answering instance's name (`x-instance`), or the error as text.
pub async fn greet(client: &Client, service: &str) -> Result<String, String> {
    let url = format!("http://{service}/api/greet?name=test");
    let request = get_request(&url);
    let response = tokio::time::timeout(WAIT, client.clone().oneshot(request))
        .await
        .map_err(|_| "the request timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("status {}", response.status()));
    }
    response
        .headers()
        .get("x-instance")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| "no x-instance header".to_string())
}

/// Sends `n` requests; every one must succeed. Returns answers per instance.
pub async fn greet_n(client: &Client, service: &str, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        match greet(client, service).await {
            Ok(name) => *counts.entry(name).or_insert(0) += 1,
            Err(e) => panic!("request {i} of {n} to `{service}` failed: {e}"),
        }
    }
    counts
}
