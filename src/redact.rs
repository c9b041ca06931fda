//! Keeping secrets out of what the crate prints: URL userinfo and the
//! values of credential headers.
//!
//! Every message, log line and `Debug` that can quote a URL or an input
//! string passes it through [`userinfo`] first; every header map the crate
//! forwards has its credential headers marked sensitive, so that `http`'s
//! own `Debug` (and hyper's, reqwest's) prints `Sensitive` instead.

use std::borrow::Cow;

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE, HeaderName, PROXY_AUTHORIZATION, SET_COOKIE};

/// What replaces a redacted secret.
pub(crate) const REDACTED: &str = "***";

/// The headers whose values are credentials.
pub(crate) const SENSITIVE_HEADERS: [HeaderName; 4] =
    [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE, SET_COOKIE];

/// `text` with the userinfo of every URL or `user:pass@host` in it replaced
/// by `***`: `http://u:p@h:1/x` becomes `http://***@h:1/x`.
///
/// The userinfo of an `@` is what stands before it back to `://`, a `/`,
/// whitespace, a quote or the start of the text. Errs on the side of
/// redacting: text that only looks like userinfo loses it too.
pub(crate) fn userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (at, _) in text.match_indices('@') {
        if at < copied {
            continue;
        }
        let before = &text[copied..at];
        let start = before
            .rfind(|c: char| {
                c.is_whitespace() || matches!(c, '/' | '"' | '\'' | '`' | '<' | '(' | ',' | '=')
            })
            .map_or(0, |i| {
                i + before[i..].chars().next().map_or(1, char::len_utf8)
            });
        out.push_str(&before[..start]);
        if start < before.len() {
            out.push_str(REDACTED);
        }
        out.push('@');
        copied = at + 1;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Marks the credential headers of `headers` sensitive: `Debug` of the map
/// (ours, hyper's, reqwest's) then hides their values.
pub(crate) fn mark_sensitive(headers: &mut HeaderMap) {
    // `entry` reserves room in the map even for a name it does not hold
    // (an allocation for an empty map): look first.
    if headers.is_empty() {
        return;
    }
    for name in &SENSITIVE_HEADERS {
        if !headers.contains_key(name) {
            continue;
        }
        if let http::header::Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_replaced_wherever_it_stands() {
        let cases = [
            ("http://u:secret@h:1/x", "http://***@h:1/x"),
            ("u:secret@h:1", "***@h:1"),
            ("bad `https://secret@h` here", "bad `https://***@h` here"),
            (
                "a http://x:y@a:1 and http://z@b:2",
                "a http://***@a:1 and http://***@b:2",
            ),
            ("http://@h", "http://@h"),
            ("no at sign", "no at sign"),
            ("\"ü:pässwörd@h\"", "\"***@h\""),
            ("@@@", "@@@"),
        ];
        for (input, want) in cases {
            assert_eq!(userinfo(input), want, "{input}");
        }
    }

    #[test]
    fn credential_headers_become_sensitive() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Bearer canary".parse().unwrap());
        headers.append(COOKIE, "a=canary".parse().unwrap());
        headers.append(COOKIE, "b=canary".parse().unwrap());
        headers.insert("x-other", "visible".parse().unwrap());
        mark_sensitive(&mut headers);
        let printed = format!("{headers:?}");
        assert!(!printed.contains("canary"), "{printed}");
        assert!(printed.contains("visible"), "{printed}");
    }
}
