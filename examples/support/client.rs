//! What the example clients share: who answered a request, and how a
//! failure is reported.
//!
//! Include it with `#[path = "support/client.rs"] mod client;`.

// Each includer uses only part of this module.
#![allow(dead_code)]

use std::error::Error;

/// The greet instance that answered (its `x-instance` header), or `?`.
pub fn instance_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-instance")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_string()
}

/// Prints the whole chain, "program: service `greet`: request to ...
/// failed: ... refused", and exits with status 1.
pub fn exit_with(program: &str, error: &dyn Error) -> ! {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    eprintln!("{program}: {message}");
    std::process::exit(1);
}
