//! What goes over the wire: etcd's JSON gateway messages, base64 keys, and
//! the instance value format of etcd's Go naming package.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Endpoint;

/// Base64 of raw bytes, as the gateway wants keys and values.
pub(crate) fn b64(bytes: impl AsRef<[u8]>) -> String {
    B64.encode(bytes)
}

/// The `range_end` that makes a range cover every key starting with
/// `prefix`: the prefix with its last byte below 0xff incremented (etcd's
/// own `GetPrefixRangeEnd`). A prefix of only 0xff bytes (or an empty one)
/// has no end: `"\0"` then means "to the end of the keyspace".
pub(crate) fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A 64-bit integer the gateway sends as a JSON string (or, for small
/// values, sometimes as a number); absent means zero.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Str(String),
        Num(i64),
    }
    match Repr::deserialize(d)? {
        Repr::Num(n) => Ok(n),
        Repr::Str(s) => s.parse().map_err(de::Error::custom),
    }
}

/// A base64 field decoded to bytes.
fn base64_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    B64.decode(s.as_bytes()).map_err(de::Error::custom)
}

/// The part of every response header we use.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Header {
    #[serde(default, deserialize_with = "int64")]
    pub(crate) revision: i64,
}

/// One key-value pair.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct KeyValue {
    #[serde(default, deserialize_with = "base64_bytes")]
    pub(crate) key: Vec<u8>,
    #[serde(default, deserialize_with = "base64_bytes")]
    pub(crate) value: Vec<u8>,
    #[serde(default, deserialize_with = "int64")]
    pub(crate) mod_revision: i64,
}

/// `POST /v3/kv/range`.
#[derive(Debug, Deserialize)]
pub(crate) struct RangeResponse {
    #[serde(default)]
    pub(crate) header: Header,
    /// Absent when nothing matched (the gateway omits zero values).
    #[serde(default)]
    pub(crate) kvs: Vec<KeyValue>,
    #[serde(default)]
    pub(crate) more: bool,
}

/// `POST /v3/lease/grant`.
#[derive(Debug, Deserialize)]
pub(crate) struct GrantResponse {
    #[serde(rename = "ID", default, deserialize_with = "int64")]
    pub(crate) id: i64,
    #[serde(default)]
    pub(crate) error: String,
}

/// `POST /v3/lease/keepalive`: a one-message stream.
#[derive(Debug, Deserialize)]
pub(crate) struct KeepAliveLine {
    pub(crate) result: Option<KeepAliveResult>,
    pub(crate) error: Option<StreamError>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct KeepAliveResult {
    /// Absent (zero) when the lease no longer exists.
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    pub(crate) ttl: i64,
}

/// One line of `POST /v3/watch`.
#[derive(Debug, Deserialize)]
pub(crate) struct WatchLine {
    pub(crate) result: Option<WatchResult>,
    pub(crate) error: Option<StreamError>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WatchResult {
    #[serde(default)]
    pub(crate) header: Header,
    #[serde(default)]
    pub(crate) created: bool,
    #[serde(default)]
    pub(crate) canceled: bool,
    #[serde(default, deserialize_with = "int64")]
    pub(crate) compact_revision: i64,
    #[serde(default)]
    pub(crate) cancel_reason: String,
    #[serde(default)]
    pub(crate) events: Vec<Event>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Event {
    /// `"DELETE"`, or absent for a PUT (the enum's zero value is omitted).
    #[serde(rename = "type", default)]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) kv: KeyValue,
}

impl Event {
    pub(crate) fn is_delete(&self) -> bool {
        self.kind.as_deref() == Some("DELETE")
    }
}

/// The error object of a streamed answer, or of a failed unary call.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamError {
    #[serde(default)]
    pub(crate) message: String,
    #[serde(default, alias = "code")]
    pub(crate) grpc_code: i32,
}

/// The answer to `/v3/auth/authenticate`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuthenticateResponse {
    #[serde(default)]
    pub(crate) token: String,
}

/// The body of a non-2xx unary answer: `{"error","message","code"}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub(crate) message: String,
    #[serde(default)]
    pub(crate) error: String,
    #[serde(default)]
    pub(crate) code: i32,
}

/// Why one key under the watched prefix is not a usable instance. Logged
/// with the key, then the key is skipped; the watch goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidInstance {
    #[error("the value is not JSON ({0})")]
    NotJson(String),
    #[error("the value is not a JSON object with a string `Addr`")]
    NoAddr,
    #[error("the value says `Op` {0} (only 0, \"add\", names an instance)")]
    NotAnAdd(String),
    #[error(transparent)]
    BadEndpoint(#[from] crate::EndpointError),
    #[error("metadata `weight` is {0}; it must be a whole number from 1 to 4294967295")]
    BadWeight(String),
    #[error("metadata `zone` must be a string, not {0}")]
    BadZone(String),
}

/// Turns one etcd value into an endpoint.
///
/// The value is what etcd's Go naming package writes
/// (`{"Op":0,"Addr":"10.0.0.7:8080","Metadata":...}`), `Op` optional. `Addr`
/// is `host:port` (plain HTTP) or a full `http(s)://host:port`. When
/// `Metadata` is an object, `weight` (a number or numeric string) and `zone`
/// (a string) set the endpoint's weight and zone; every other scalar entry
/// becomes endpoint metadata (strings as is, numbers and booleans as their
/// JSON text; nested values as compact JSON).
pub(crate) fn decode_instance(value: &[u8]) -> Result<Endpoint, InvalidInstance> {
    let json: Value =
        serde_json::from_slice(value).map_err(|e| InvalidInstance::NotJson(e.to_string()))?;
    let Value::Object(obj) = json else {
        return Err(InvalidInstance::NoAddr);
    };
    match obj.get("Op") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64() == Some(0) => {}
        Some(Value::String(s)) if s.eq_ignore_ascii_case("add") => {}
        Some(other) => return Err(InvalidInstance::NotAnAdd(other.to_string())),
    }
    let Some(Value::String(addr)) = obj.get("Addr") else {
        return Err(InvalidInstance::NoAddr);
    };
    let mut endpoint = Endpoint::new(addr)?;
    if let Some(Value::Object(meta)) = obj.get("Metadata") {
        for (key, value) in meta {
            match key.as_str() {
                "weight" => endpoint = endpoint.with_weight(parse_weight(value)?)?,
                "zone" => match value {
                    Value::String(zone) => endpoint = endpoint.with_zone(zone.clone()),
                    Value::Null => {}
                    other => return Err(InvalidInstance::BadZone(other.to_string())),
                },
                _ => {
                    let text = match value {
                        Value::String(s) => s.clone(),
                        Value::Null => continue,
                        other => other.to_string(),
                    };
                    endpoint = endpoint.with_metadata(key.clone(), text);
                }
            }
        }
    }
    Ok(endpoint)
}

fn parse_weight(value: &Value) -> Result<u32, InvalidInstance> {
    let bad = || InvalidInstance::BadWeight(value.to_string());
    let n = match value {
        Value::Number(n) => n.as_u64().ok_or_else(bad)?,
        Value::String(s) => s.trim().parse::<u64>().map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    match u32::try_from(n) {
        Ok(0) | Err(_) => Err(bad()),
        Ok(w) => Ok(w),
    }
}

/// The value written for a registered instance, in the Go naming format so
/// that Go services using etcd's resolver find it too.
#[derive(Debug, Serialize)]
pub(crate) struct InstanceValue<'a> {
    #[serde(rename = "Op")]
    pub(crate) op: u8,
    #[serde(rename = "Addr")]
    pub(crate) addr: &'a str,
    #[serde(rename = "Metadata")]
    pub(crate) metadata: Option<&'a BTreeMap<String, Value>>,
}

/// The `Addr` to write for an endpoint: `host:port` for plain HTTP (what a
/// Go gRPC resolver expects), the full key for HTTPS.
pub(crate) fn addr_of(endpoint: &Endpoint) -> String {
    if endpoint.scheme() == &http::uri::Scheme::HTTP {
        endpoint
            .key()
            .strip_prefix("http://")
            .unwrap_or(endpoint.key())
            .to_string()
    } else {
        endpoint.key().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_covers_the_prefix() {
        assert_eq!(prefix_range_end(b"greet/"), b"greet0");
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_range_end(b""), b"\0");
    }

    #[test]
    fn decodes_go_naming_values() {
        let e = decode_instance(br#"{"Addr":"127.0.0.1:5002"}"#).unwrap();
        assert_eq!(e.key(), "http://127.0.0.1:5002");
        let e = decode_instance(
            br#"{"Op":0,"Addr":"10.0.0.7:8080","Metadata":{"weight":3,"zone":"eu-1","version":"1.2","canary":true,"n":null}}"#,
        )
        .unwrap();
        assert_eq!((e.weight(), e.zone()), (3, Some("eu-1")));
        assert_eq!(e.metadata().get("version").map(String::as_str), Some("1.2"));
        assert_eq!(e.metadata().get("canary").map(String::as_str), Some("true"));
        assert!(!e.metadata().contains_key("n"));
        let e = decode_instance(br#"{"Addr":"https://a.example:8443","Metadata":{"weight":"2"}}"#)
            .unwrap();
        assert_eq!((e.key(), e.weight()), ("https://a.example:8443", 2));
        // Metadata that is not an object (Go allows any value) is ignored.
        assert!(decode_instance(br#"{"Addr":"h:1","Metadata":"..."}"#).is_ok());
    }

    #[test]
    fn rejects_malformed_values_with_a_reason() {
        assert!(matches!(
            decode_instance(b"not json"),
            Err(InvalidInstance::NotJson(_))
        ));
        assert_eq!(decode_instance(b"[1]"), Err(InvalidInstance::NoAddr));
        assert_eq!(
            decode_instance(br#"{"addr":"h:1"}"#),
            Err(InvalidInstance::NoAddr)
        );
        assert!(matches!(
            decode_instance(br#"{"Op":1,"Addr":"h:1"}"#),
            Err(InvalidInstance::NotAnAdd(_))
        ));
        assert!(matches!(
            decode_instance(br#"{"Addr":"h:99999"}"#),
            Err(InvalidInstance::BadEndpoint(_))
        ));
        for weight in ["0", "-1", "1.5", "\"x\"", "4294967296", "[]"] {
            let value = format!(r#"{{"Addr":"h:1","Metadata":{{"weight":{weight}}}}}"#);
            assert!(
                matches!(
                    decode_instance(value.as_bytes()),
                    Err(InvalidInstance::BadWeight(_))
                ),
                "{weight}"
            );
        }
        assert!(matches!(
            decode_instance(br#"{"Addr":"h:1","Metadata":{"zone":3}}"#),
            Err(InvalidInstance::BadZone(_))
        ));
    }

    #[test]
    fn parses_gateway_messages() {
        let line = br#"{"result":{"header":{"revision":"4"},"events":[{"type":"DELETE","kv":{"key":"Z3JlZXQvYQ==","mod_revision":"4"}},{"kv":{"key":"Z3JlZXQvYg==","value":"eA==","mod_revision":"4"}}]}}"#;
        let parsed: WatchLine = serde_json::from_slice(line).unwrap();
        let result = parsed.result.unwrap();
        assert_eq!(result.header.revision, 4);
        assert!(result.events[0].is_delete());
        assert_eq!(result.events[0].kv.key, b"greet/a");
        assert!(!result.events[1].is_delete());
        assert_eq!(result.events[1].kv.value, b"x");

        let line = br#"{"error":{"grpc_code":14,"http_code":503,"message":"transport is closing","http_status":"Service Unavailable"}}"#;
        let parsed: WatchLine = serde_json::from_slice(line).unwrap();
        assert_eq!(parsed.error.unwrap().grpc_code, 14);

        let range: RangeResponse =
            serde_json::from_slice(br#"{"header":{"revision":"2"}}"#).unwrap();
        assert!(range.kvs.is_empty());
        let grant: GrantResponse =
            serde_json::from_slice(br#"{"ID":"2324035575270184711","TTL":"5"}"#).unwrap();
        assert_eq!(grant.id, 2324035575270184711);
        let ka: KeepAliveLine =
            serde_json::from_slice(br#"{"result":{"header":{},"ID":"1"}}"#).unwrap();
        assert_eq!(ka.result.unwrap().ttl, 0);
    }
}
