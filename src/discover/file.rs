//! A JSON file listing endpoints, re-read when it changes. Feature `file`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::discover::{Discover, Update};
use crate::{BoxError, Endpoint};

/// Endpoints listed in a JSON file, for simple deployments and local
/// development. The file is read at once, then checked every
/// [`interval`](JsonFile::interval) (default 1 s); a changed list becomes
/// an [`Update::Replace`].
///
/// The file holds a list, or an object with an `endpoints` list. Each entry
/// is an address string or an object with `addr` and optional `weight`,
/// `zone` and `metadata` (string values):
///
/// ```json
/// {
///   "endpoints": [
///     "http://127.0.0.1:5001",
///     { "addr": "127.0.0.1:5002", "weight": 3, "zone": "eu-west-1a",
///       "metadata": { "version": "1.4.2" } }
///   ]
/// }
/// ```
///
/// Bad data never takes the service down:
///
/// - an entry that cannot be read (bad address, zero weight) is skipped
///   with a warning naming its position and address;
/// - a file that is not JSON of that shape (say, half-written by an editor
///   or a deploy script) or cannot be read is reported to the pool as an
///   error, once per distinct problem: the pool keeps the last good set and
///   marks it stale in its stats until the file is good again.
///
/// For a change to be picked up in one step, write a new file and rename
/// it over the old one; an in-place write is fine too, since a truncated
/// file does not parse and is ignored until it is complete.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tower_lb::Pool;
/// use tower_lb::discover::JsonFile;
///
/// let path = std::env::temp_dir().join(format!("tower-lb-doc-{}.json", std::process::id()));
/// std::fs::write(&path, r#"["127.0.0.1:5001", {"addr": "127.0.0.1:5002", "weight": 2}]"#)?;
///
/// let pool = Pool::builder("greet", JsonFile::new(&path).interval(Duration::from_millis(200))).build();
/// pool.ready().await?;
/// assert_eq!(pool.endpoints().len(), 2);
/// # std::fs::remove_file(&path)?;
/// # Ok(()) }
/// ```
pub struct JsonFile {
    path: PathBuf,
    interval: Duration,
    next_at: Option<Instant>,
    /// The bytes last read, to skip parsing an unchanged file.
    last_bytes: Option<Vec<u8>>,
    /// The endpoints last announced.
    last: Option<Vec<Endpoint>>,
    /// The problem last reported, so a broken file is reported once, not
    /// on every check.
    reported: Option<String>,
}

/// Why a [`JsonFile`] could not be used. Messages name the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read endpoint file `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON (or not yet complete).
    #[error("endpoint file `{path}` is not valid JSON (half-written?)")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The JSON is not a list of endpoints.
    #[error("endpoint file `{path}`: {reason}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl JsonFile {
    /// Watches the file at `path`. Nothing is read until the pool starts.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            interval: Duration::from_secs(1),
            next_at: None,
            last_bytes: None,
            last: None,
            reported: None,
        }
    }

    /// How often to check the file for changes (default 1 s, at least
    /// 10 ms). The check reads the file; keep it small.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The watched file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and parses the file; `Ok(None)` when it has not changed since
    /// the last read.
    async fn check(&mut self) -> Result<Option<Vec<Endpoint>>, FileError> {
        let path = self.path.clone();
        let read = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())));
        let bytes = read.map_err(|source| FileError::Read {
            path: self.path.clone(),
            source,
        })?;
        if self.last_bytes.as_ref() == Some(&bytes) {
            return Ok(None);
        }
        let parsed = parse(&self.path, &bytes);
        self.last_bytes = Some(bytes);
        parsed.map(Some)
    }
}

impl Discover for JsonFile {
    async fn next_update(&mut self) -> Result<Update, BoxError> {
        loop {
            if let Some(at) = self.next_at {
                tokio::time::sleep_until(at).await;
            }
            self.next_at = Some(crate::time::after(self.interval));
            match self.check().await {
                Ok(None) => {}
                Ok(Some(endpoints)) => {
                    let recovered = self.reported.take().is_some();
                    if recovered || self.last.as_ref() != Some(&endpoints) {
                        tracing::debug!(path = %self.path.display(), endpoints = endpoints.len(), "endpoint file read");
                        self.last = Some(endpoints.clone());
                        return Ok(Update::Replace(endpoints));
                    }
                }
                Err(error) => {
                    // Report each distinct problem once; until the file
                    // changes, keep checking quietly (the pool already
                    // shows the set as stale).
                    let text = error.to_string() + &source_text(&error);
                    if self.reported.as_ref() != Some(&text) {
                        self.reported = Some(text);
                        if let FileError::Read { .. } = error {
                            // A file that reappears unchanged must be parsed again.
                            self.last_bytes = None;
                        }
                        return Err(error.into());
                    }
                }
            }
        }
    }
}

fn source_text(error: &FileError) -> String {
    std::error::Error::source(error)
        .map(|s| format!(": {s}"))
        .unwrap_or_default()
}

impl fmt::Debug for JsonFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonFile")
            .field("path", &self.path)
            .field("interval", &self.interval)
            .field("endpoints", &self.last.as_ref().map(Vec::len))
            .finish()
    }
}

/// The endpoints in a file's bytes; bad entries are skipped and logged.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<Endpoint>, FileError> {
    let shape = |reason: &str| FileError::Shape {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let json: Value = serde_json::from_slice(bytes).map_err(|source| FileError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let entries = match json {
        Value::Array(entries) => entries,
        Value::Object(mut obj) => match obj.remove("endpoints") {
            Some(Value::Array(entries)) => entries,
            _ => return Err(shape("the object has no `endpoints` list")),
        },
        _ => {
            return Err(shape(
                "expected a list of endpoints or an object with `endpoints`",
            ));
        }
    };
    let mut set: BTreeMap<String, Endpoint> = BTreeMap::new();
    for (index, entry) in entries.iter().enumerate() {
        match parse_entry(entry) {
            Ok(endpoint) => {
                if set.contains_key(endpoint.key()) {
                    tracing::warn!(path = %path.display(), index, endpoint = %endpoint, "duplicate endpoint in file; keeping the first");
                    continue;
                }
                set.insert(endpoint.key().to_string(), endpoint);
            }
            Err(reason) => tracing::warn!(
                path = %path.display(),
                index,
                entry = %crate::redact::userinfo(&entry.to_string()),
                %reason,
                "skipping an invalid entry in the endpoint file"
            ),
        }
    }
    Ok(set.into_values().collect())
}

fn parse_entry(entry: &Value) -> Result<Endpoint, String> {
    let obj = match entry {
        Value::String(addr) => return Endpoint::new(addr).map_err(|e| e.to_string()),
        Value::Object(obj) => obj,
        _ => return Err("an entry must be an address string or an object with `addr`".into()),
    };
    let Some(Value::String(addr)) = obj.get("addr") else {
        return Err("the object has no string `addr`".into());
    };
    let mut endpoint = Endpoint::new(addr).map_err(|e| e.to_string())?;
    match obj.get("weight") {
        None | Some(Value::Null) => {}
        Some(w) => {
            let weight = w
                .as_u64()
                .and_then(|w| u32::try_from(w).ok())
                .ok_or_else(|| format!("weight {w} is not a whole number from 1 to 4294967295"))?;
            endpoint = endpoint.with_weight(weight).map_err(|e| e.to_string())?;
        }
    }
    match obj.get("zone") {
        None | Some(Value::Null) => {}
        Some(Value::String(zone)) => endpoint = endpoint.with_zone(zone.clone()),
        Some(other) => return Err(format!("zone {other} is not a string")),
    }
    match obj.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(meta)) => {
            for (key, value) in meta {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                endpoint = endpoint.with_metadata(key.clone(), text);
            }
        }
        Some(other) => return Err(format!("metadata {other} is not an object")),
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Vec<Endpoint>, FileError> {
        parse(Path::new("test.json"), s.as_bytes())
    }

    #[test]
    fn reads_both_shapes_and_all_fields() {
        let list = parse_str(r#"["127.0.0.1:5001", "https://a.example:8443"]"#).unwrap();
        assert_eq!(list.len(), 2);
        let obj = parse_str(
            r#"{"endpoints": [{"addr": "127.0.0.1:5002", "weight": 3, "zone": "z", "metadata": {"v": "1", "n": 2}}]}"#,
        )
        .unwrap();
        let e = &obj[0];
        assert_eq!(
            (e.key(), e.weight(), e.zone()),
            ("http://127.0.0.1:5002", 3, Some("z"))
        );
        assert_eq!(e.metadata().get("n").map(String::as_str), Some("2"));
    }

    #[test]
    fn skips_bad_entries_and_rejects_bad_files() {
        let kept = parse_str(
            r#"["127.0.0.1:5001", "not an address", {"addr": "127.0.0.1:5003", "weight": 0},
                {"addr": "127.0.0.1:5004", "weight": -2}, {"addr": "127.0.0.1:5005", "zone": 1},
                {"weight": 2}, 42, "127.0.0.1:5001"]"#,
        )
        .unwrap();
        assert_eq!(kept.len(), 1);
        assert!(matches!(
            parse_str(r#"["127.0.0.1:5001", "#),
            Err(FileError::Json { .. })
        ));
        assert!(matches!(parse_str(""), Err(FileError::Json { .. })));
        assert!(matches!(
            parse_str(r#"{"hosts": []}"#),
            Err(FileError::Shape { .. })
        ));
        assert!(matches!(parse_str("7"), Err(FileError::Shape { .. })));
        let err = parse_str("{").unwrap_err();
        assert!(err.to_string().contains("test.json"), "{err}");
    }
}
