//! Header rules for forwarding: what never crosses the gateway, and what it adds.

use std::net::IpAddr;
use std::sync::LazyLock;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection and are never forwarded,
/// in either direction. `proxy-connection` and `keep-alive` are legacy but still seen.
pub static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub const EVENT_STREAM: &str = "text/event-stream";

/// The response's `Content-Type` is `mime` (case-insensitive), with or without parameters.
pub fn content_type_is(headers: &HeaderMap, mime: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().get(..mime.len()))
        .is_some_and(|m| m.eq_ignore_ascii_case(mime.as_bytes()))
}

/// Caller credentials are never passed to the upstream: MCP forbids token passthrough
/// (authorization spec, "Access Token Privilege Restriction"), and cookies are credentials too.
pub static CALLER_CREDENTIALS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
];

/// Forwarding headers the gateway writes itself; values from the client are dropped so a
/// client cannot pose as another address or origin to the upstream.
pub static FORWARDING: [HeaderName; 5] = [
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    header::FORWARDED,
    HeaderName::from_static("x-real-ip"),
];

/// Header names a message loses at the gateway, besides those its `Connection` header lists.
pub type StripSet = foldhash::HashSet<HeaderName>;

/// What a request loses before it is forwarded, built once per route: hop-by-hop, caller
/// credentials, client-sent forwarding headers, `Host`, the route's `strip_headers`, and every
/// header the gateway writes itself (`written`: identity, request id, the route's fixed ones).
pub fn request_strip_set<'a>(
    strip: &'a [HeaderName],
    written: impl Iterator<Item = &'a HeaderName>,
) -> StripSet {
    HOP_BY_HOP
        .iter()
        .chain(&CALLER_CREDENTIALS)
        .chain(&FORWARDING)
        .chain([&header::HOST])
        .chain(strip)
        .chain(written)
        .cloned()
        .collect()
}

/// A forwarded request's headers: the client's, less the route's strip set and whatever the
/// client's `Connection` header names, then the gateway's own (`added`, where a later entry
/// replaces an earlier one of the same name). Nothing is removed from the client's map: the
/// plain-HTTP path serialises straight from it, skipping as it goes.
pub struct Outbound<'a> {
    pub strip: &'a StripSet,
    pub added: Vec<(HeaderName, HeaderValue)>,
}

impl Outbound<'_> {
    /// Calls `f` with every header to send, in order.
    pub fn for_each(&self, headers: &HeaderMap, mut f: impl FnMut(&HeaderName, &HeaderValue)) {
        let listed = connection_listed(headers);
        for (name, value) in headers {
            if !self.strip.contains(name) && !listed.contains(name) {
                f(name, value);
            }
        }
        for (i, (name, value)) in self.added.iter().enumerate() {
            if !self.added[i + 1..].iter().any(|(later, _)| later == name) {
                f(name, value);
            }
        }
    }

    /// The same rules applied to the map itself, for clients that take a `HeaderMap`.
    pub fn apply(self, headers: &mut HeaderMap) {
        remove_listed(headers, self.strip);
        for (name, value) in self.added {
            headers.insert(name, value);
        }
    }
}

/// Header names the `Connection` header lists: hop-by-hop for this message (RFC 9110 §7.6.1).
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Removes hop-by-hop headers, including any named in `Connection` (RFC 9110 §7.6.1).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    static HOP_SET: LazyLock<StripSet> = LazyLock::new(|| HOP_BY_HOP.iter().cloned().collect());
    remove_listed(headers, &HOP_SET);
}

/// Removes the names in `set` and those listed in `Connection`. The map's distinct names are
/// looked up once each and only those present are removed: a request usually carries two of
/// the twenty or so names dropped here.
fn remove_listed(headers: &mut HeaderMap, set: &StripSet) {
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| set.contains(*name))
        .cloned()
        .collect();
    if doomed.contains(&header::CONNECTION) {
        doomed.extend(connection_listed(headers));
    }
    for name in &doomed {
        headers.remove(name);
    }
}

/// What the gateway knows about the caller's connection, for `X-Forwarded-*`.
pub struct ForwardedFor<'a> {
    pub client_ip: IpAddr,
    pub proto: &'static str,
    pub host: Option<&'a HeaderValue>,
}

/// The gateway's own forwarding headers, appended to `added`.
pub fn forwarding(fwd: &ForwardedFor<'_>, added: &mut Vec<(HeaderName, HeaderValue)>) {
    if let Some(ip) = ip_value(fwd.client_ip) {
        added.push((HeaderName::from_static("x-forwarded-for"), ip));
    }
    added.push((
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(fwd.proto),
    ));
    if let Some(host) = fwd.host {
        added.push((HeaderName::from_static("x-forwarded-host"), host.clone()));
    }
}

/// The caller's address as a header value. IPv4, by far the common case, skips `Display`, whose
/// formatting machinery cost ~1.3k instructions per request.
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).ok();
    };
    let mut text = Vec::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push(b'.');
        }
        text.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()
}

/// Cleans an upstream response before it reaches the caller.
pub fn prepare_response(headers: &mut HeaderMap) {
    remove_hop_by_hop(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn client_addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "127.0.0.1",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(parsed).unwrap(), ip);
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut h);
        assert!(
            h.get("x-secret").is_none() && h.get("te").is_none() && h.get("connection").is_none()
        );
        assert_eq!(h["accept"], "*/*");
    }

    #[test]
    fn credentials_spoofed_forwarding_and_listed_headers_never_reach_upstream() {
        let mut h = map(&[
            ("authorization", "Bearer x"),
            ("cookie", "a=b"),
            ("proxy-authorization", "Basic y"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-mcp-subject", "admin"),
            ("x-internal", "1"),
            ("mcp-session-id", "s1"),
            ("host", "gateway"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
        ]);
        let host = HeaderValue::from_static("gw.example");
        let fwd = ForwardedFor {
            client_ip: [10, 0, 0, 1].into(),
            proto: "https",
            host: Some(&host),
        };
        let identity = [HeaderName::from_static("x-mcp-subject")];
        let strip = request_strip_set(&[HeaderName::from_static("x-internal")], identity.iter());
        let mut added = Vec::new();
        forwarding(&fwd, &mut added);
        added.push((identity[0].clone(), HeaderValue::from_static("alice")));
        added.push((identity[0].clone(), HeaderValue::from_static("bob")));
        let out = Outbound {
            strip: &strip,
            added,
        };
        // Serialised and applied, the rules give the same headers.
        let mut sent = HeaderMap::new();
        out.for_each(&h, |n, v| {
            sent.append(n.clone(), v.clone());
        });
        out.apply(&mut h);
        assert_eq!(sent, h);
        assert_eq!(
            h["x-mcp-subject"], "bob",
            "a later added header replaces an earlier one"
        );
        for gone in [
            "authorization",
            "cookie",
            "proxy-authorization",
            "x-internal",
            "host",
            "connection",
            "x-hop",
        ] {
            assert!(h.get(gone).is_none(), "{gone} survived");
        }
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "gw.example");
        assert_eq!(h["mcp-session-id"], "s1");
    }
}
