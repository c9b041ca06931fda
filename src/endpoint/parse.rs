//! The strict grammar of an endpoint string:
//! `[http:// | https://] host [:port] [/]`, nothing else.
//!
//! `host` is one of: a DNS name (labels of letters, digits, `-` and `_`,
//! 1 to 63 characters each, 253 in all, an optional final dot), a dotted
//! IPv4 address, or a bracketed IPv6 address with an optional zone
//! (`[fe80::1%25eth0]`). `port` is 1 to 5 digits with a value from 1 to
//! 65535. No userinfo, path, query or fragment.

use std::net::{Ipv4Addr, Ipv6Addr};

use http::uri::{Authority, Scheme};

use super::EndpointErrorKind;

/// A parsed endpoint string: scheme, authority (as written), lowercase
/// host and the port (explicit or the scheme's).
pub(super) struct Parsed {
    pub(super) scheme: Scheme,
    pub(super) authority: Authority,
    pub(super) host: String,
    pub(super) port: u16,
}

/// Parses `input` (already trimmed and non-empty) by the grammar above.
pub(super) fn parse(input: &str) -> Result<Parsed, EndpointErrorKind> {
    let (scheme, rest) = match input.find("://") {
        Some(i) => {
            let name = &input[..i];
            let scheme = if name.eq_ignore_ascii_case("http") {
                Scheme::HTTP
            } else if name.eq_ignore_ascii_case("https") {
                Scheme::HTTPS
            } else if is_scheme_name(name) {
                return Err(EndpointErrorKind::UnsupportedScheme(name.to_string()));
            } else {
                return Err(EndpointErrorKind::Malformed(
                    "the scheme is not a scheme name".into(),
                ));
            };
            (scheme, &input[i + 3..])
        }
        None => (Scheme::HTTP, input),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err(EndpointErrorKind::UserInfo);
    }
    if !tail.is_empty() && tail != "/" {
        return Err(EndpointErrorKind::UnexpectedPath(
            crate::redact::userinfo(tail).into_owned(),
        ));
    }
    if authority.is_empty() {
        return Err(EndpointErrorKind::MissingHost);
    }
    let (host, port) = split_host_port(authority)?;
    check_host(host)?;
    let port = match port {
        None if scheme == Scheme::HTTPS => 443,
        None => 80,
        Some(digits) => parse_port(digits)?,
    };
    let authority = authority
        .parse::<Authority>()
        .map_err(|e| EndpointErrorKind::Malformed(e.to_string()))?;
    Ok(Parsed {
        scheme,
        authority,
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// RFC 3986: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `host[:port]` apart; the port's text is returned unchecked.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), EndpointErrorKind> {
    if authority.starts_with('[') {
        let close = authority
            .find(']')
            .ok_or_else(|| EndpointErrorKind::BadHost("an IPv6 address lacks its `]`".into()))?;
        let (host, after) = authority.split_at(close + 1);
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(EndpointErrorKind::BadHost(
                "characters after the IPv6 address".into(),
            )),
        };
    }
    match authority.split_once(':') {
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((authority, None)),
    }
}

fn parse_port(digits: &str) -> Result<u16, EndpointErrorKind> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EndpointErrorKind::BadPort);
    }
    match digits.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ => Err(EndpointErrorKind::BadPort),
    }
}

fn check_host(host: &str) -> Result<(), EndpointErrorKind> {
    let bad = |why: &str| Err(EndpointErrorKind::BadHost(why.into()));
    if host.is_empty() {
        return Err(EndpointErrorKind::MissingHost);
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').unwrap_or(inner);
        let (address, zone) = match inner.split_once('%') {
            Some((address, zone)) => (address, Some(zone)),
            None => (inner, None),
        };
        if address.parse::<Ipv6Addr>().is_err() {
            return bad("not an IPv6 address");
        }
        if let Some(zone) = zone {
            // RFC 6874: the `%` itself is written `%25`.
            let zone = zone.strip_prefix("25").unwrap_or(zone);
            let ok = !zone.is_empty()
                && zone
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
            if !ok {
                return bad("not an IPv6 zone");
            }
        }
        return Ok(());
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return match host.parse::<Ipv4Addr>() {
            Ok(_) => Ok(()),
            Err(_) => bad("not an IPv4 address"),
        };
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > 253 {
        return bad("a name longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("a name's labels are 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        {
            return bad("a name is letters, digits, `-`, `_` and dots");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a name's label starts or ends with `-`");
        }
    }
    Ok(())
}
