//! Header rules for requests bound for the app: which names a client may not send (in
//! every spelling an app server folds together), the forwarding list, `Connection`, the
//! identity the gate injects, and the hop-by-hop headers no hop passes on.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use super::IdentityHeaders;
use crate::gate::Identity;
use crate::token::Forwarded;

/// Headers that describe one connection, not the message (RFC 9110 7.6.1), plus the
/// framing the gate recomputes when it rewrites a body: never passed on as received.
pub const HOP_BY_HOP: [HeaderName; 10] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::CONTENT_LENGTH,
];

/// Removes every [`HOP_BY_HOP`] header, and those `Connection` names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

// Statics, not `from_static` at each use: that validates the name every time it runs.
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest `X-Request-Id` kept from a trusted proxy.
const REQUEST_ID_MAX: usize = 128;

/// The request id to send to the app: the one a trusted proxy sent, when there is exactly
/// one and it is short printable ASCII, else a fresh random one (16 hex characters).
pub(crate) fn request_id(headers: &HeaderMap, peer_trusted: bool) -> HeaderValue {
    let mut sent = headers.get_all(&X_REQUEST_ID).iter();
    if let (true, Some(value), None) = (peer_trusted, sent.next(), sent.next()) {
        let bytes = value.as_bytes();
        // Only a trusted proxy's id is kept, so that a client cannot make its requests'
        // log lines collide with another's; anything unusual is replaced, not passed on.
        if !bytes.is_empty()
            && bytes.len() <= REQUEST_ID_MAX
            && bytes.iter().all(|b| b.is_ascii_graphic())
        {
            return value.clone();
        }
    }
    fresh_request_id()
}

/// `ip` as a header value, as `Display` writes it; an IPv4 address, the common case on
/// every proxied request, is written without the formatting machinery.
pub(crate) fn ip_header_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).expect("an IPv6 address is ASCII");
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let skip = match octet {
            100.. => 0,
            10.. => 1,
            _ => 2,
        };
        for digit in &digits[skip..] {
            text[len] = b'0' + digit;
            len += 1;
        }
    }
    HeaderValue::from_bytes(&text[..len]).expect("digits and dots are a valid header value")
}

/// A new random request id: 16 lower-case hex characters.
pub(crate) fn fresh_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    use rand::{RngCore as _, SeedableRng as _};
    thread_local! {
        // An id must be unique, not secret (a client can never pick it, and knowing the
        // next one gains nothing): a small generator, seeded once per thread from the OS,
        // instead of the reseeding cryptographic one on every request.
        static IDS: std::cell::RefCell<rand::rngs::SmallRng> =
            std::cell::RefCell::new(rand::rngs::SmallRng::from_os_rng());
    }
    let random = IDS.with(|ids| ids.borrow_mut().next_u64());
    // Written into a stack buffer: no formatting machinery on every request.
    let mut id = [0u8; 16];
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = HEX[((random >> (60 - 4 * i)) & 0xf) as usize];
    }
    // Owned as shared bytes from the start, so the plan's copy of it is a reference, not
    // a second allocation. Hex digits are always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id))
        .unwrap_or(HeaderValue::from_static("0000000000000000"))
}

/// A header name as the most lenient app servers read it: lower case, and every
/// character other than a letter or digit as `-`. CGI, PHP, Rack and WSGI fold `-` and `_`
/// together, lighttpd folds every other character onto `_` too, PHP turns `.` into `_`:
/// `X_Auth_Subject`, `X.Auth.Subject` and `X~Auth~Subject` all reach an app as
/// `HTTP_X_AUTH_SUBJECT`. `HeaderName`s are already lower case.
pub(crate) fn folded(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(
            name.chars()
                .map(|c| match c {
                    c if c.is_ascii_alphanumeric() => c.to_ascii_lowercase(),
                    _ => '-',
                })
                .collect(),
        )
    }
}

/// Headers with which apps reroute a request: to another path (IIS-style apps), or to
/// another method (method-override middleware in Express, Rails, Laravel, Symfony, ASP.NET),
/// which would let a `POST` the gate judged be a `DELETE` that a rule guards.
const REROUTE_HEADERS: [&str; 5] = [
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The header names a client may never send to the app, folded once when the front is
/// made: the five identity headers, the configured `strip` names and prefixes, and the
/// rerouting headers unless kept.
#[derive(Clone, Debug)]
pub(crate) struct StripRules {
    exact: Vec<String>,
    prefixes: Vec<String>,
    /// The folded first bytes that any name the gate treats specially can start with:
    /// one lookup settles most names a request carries (`accept`, `user-agent`, ...).
    first_bytes: [bool; 256],
}

/// What a header name is to the gate, in every spelling an app server folds together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeaderKind {
    /// Passed on as sent.
    Plain,
    /// An identity, rerouting or configured name: never from a client.
    Stripped,
    /// A proxy's word on who the client is; `canonical` when written as proxies write it
    /// (`X-Forwarded-For`, not `X_Forwarded_For`, which an app would read as a second list).
    Forwarding {
        /// Spelled with letters, digits and `-` only.
        canonical: bool,
    },
    /// `X-Request-Id`, which the gate sets.
    RequestId,
}

impl StripRules {
    pub(crate) fn new(settings: &IdentityHeaders) -> StripRules {
        let mut exact: Vec<String> = [
            &settings.jwt,
            &settings.subject,
            &settings.email,
            &settings.phone,
            &settings.tenant,
        ]
        .iter()
        .map(|name| folded(name.as_str()).into_owned())
        .collect();
        if settings.strip_reroute {
            exact.extend(REROUTE_HEADERS.iter().map(|name| (*name).to_owned()));
        }
        let mut prefixes = Vec::new();
        for pattern in &settings.strip {
            match pattern.strip_suffix('*') {
                Some(prefix) => prefixes.push(folded(&prefix.to_ascii_lowercase()).into_owned()),
                None => exact.push(folded(&pattern.to_ascii_lowercase()).into_owned()),
            }
        }
        exact.sort_unstable();
        exact.dedup();
        // Built from the very folded strings `kind` compares, so a name whose folded first
        // byte is not in it can match none of them: the table only skips work, never a rule.
        let mut first_bytes = [false; 256];
        // `forwarded`, `x-real-ip`, `x-forwarded-*`, `x-request-id`.
        first_bytes[usize::from(b'f')] = true;
        first_bytes[usize::from(b'x')] = true;
        for name in exact.iter().chain(&prefixes) {
            match name.as_bytes().first() {
                Some(&first) => first_bytes[usize::from(first)] = true,
                // `*` strips every name.
                None => first_bytes = [true; 256],
            }
        }
        StripRules {
            exact,
            prefixes,
            first_bytes,
        }
    }

    /// What `name` is, read as the most lenient app server reads it (see [`folded`]).
    pub(crate) fn kind(&self, name: &HeaderName) -> HeaderKind {
        let spelled = name.as_str();
        let first = spelled.as_bytes().first().copied().unwrap_or(b'-');
        let first = if first.is_ascii_alphanumeric() {
            first
        } else {
            b'-'
        };
        if !self.first_bytes[usize::from(first)] {
            return HeaderKind::Plain;
        }
        let name = folded(spelled);
        let name = name.as_ref();
        if self.exact.iter().any(|exact| exact == name)
            || self
                .prefixes
                .iter()
                .any(|prefix| name.starts_with(prefix.as_str()))
        {
            HeaderKind::Stripped
        } else if name == X_REQUEST_ID.as_str() {
            HeaderKind::RequestId
        } else if name == "forwarded" || name == "x-real-ip" || name.starts_with("x-forwarded-") {
            HeaderKind::Forwarding {
                canonical: name == spelled,
            }
        } else {
            HeaderKind::Plain
        }
    }
}

/// One `X-Forwarded-For` entry: an address, or `192.0.2.1:443` and `[2001:db8::1]:443`
/// as some load balancers write them.
pub(crate) fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Some(bracketed) = entry.strip_prefix('[') {
        let (ip, port) = bracketed.split_once(']')?;
        port.strip_prefix(':')?.parse::<u16>().ok()?;
        return ip.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (ip, port) = entry.split_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// `Connection` without the names of headers the gate strips or sets: `None` when
/// nothing is to change, `Some(None)` when nothing is left of it.
pub(crate) fn sanitized_connection(
    headers: &HeaderMap,
    rules: &StripRules,
) -> Option<Option<HeaderValue>> {
    let mut changed = false;
    let mut kept = Vec::new();
    for value in headers.get_all(http::header::CONNECTION) {
        let Ok(value) = value.to_str() else {
            // Unreadable: dropped whole, since the gate cannot tell what it names.
            changed = true;
            continue;
        };
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let named = HeaderName::from_bytes(token.as_bytes());
            let protected = named
                .as_ref()
                .map_or(true, |name| rules.kind(name) != HeaderKind::Plain);
            if protected {
                changed = true;
            } else {
                kept.push(token);
            }
        }
    }
    if !changed {
        return None;
    }
    Some(match kept.is_empty() {
        true => None,
        false => HeaderValue::from_str(&kept.join(", ")).ok(),
    })
}

/// Appends the identity headers for `identity` to `headers`.
pub(crate) fn push_identity_headers(
    settings: &IdentityHeaders,
    identity: &Identity,
    headers: &mut Vec<(HeaderName, HeaderValue)>,
) {
    // Subject, tenant, email and phone are made once per verified token and kept with its
    // cached claims; only the token's own header is made per request.
    let names = [
        &settings.subject,
        &settings.tenant,
        &settings.email,
        &settings.phone,
    ];
    let made = || {
        let values = [
            Some(identity.subject()),
            Some(identity.tenant()),
            identity.email(),
            identity.phone(),
        ];
        let headers = names
            .into_iter()
            .zip(values)
            .filter_map(|(name, value)| Some((name.clone(), header_value(name, value?)?)))
            .collect();
        Arc::new(Forwarded {
            names: names.map(HeaderName::clone),
            headers,
        })
    };
    let kept = identity.claims.forwarded.0.get_or_init(made);
    // Made under other names (a reload renamed the headers since): made anew, so the app
    // never reads a value under a name it no longer means.
    let fresh;
    let from_claims = if kept.names.iter().eq(names) {
        kept
    } else {
        fresh = made();
        &fresh
    };
    if let Some(mut token) = header_value(&settings.jwt, &identity.token) {
        // A credential: HTTP/2 encoders never index it, and Debug never prints it.
        token.set_sensitive(true);
        headers.push((settings.jwt.clone(), token));
    }
    headers.extend(from_claims.headers.iter().cloned());
}

fn header_value(name: &HeaderName, value: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(value)
        .inspect_err(|_| {
            tracing::warn!(header = %name, "identity value is not a valid header value; not forwarded")
        })
        .ok()
}

/// The changes to make to a request before it reaches the app; see [`Front::plan_upstream`](super::Front::plan_upstream).
#[derive(Clone, Debug, Default)]
pub struct UpstreamPlan {
    /// Headers the client sent that the app must not get (identity headers in any
    /// spelling, rerouting headers, forwarding headers from an untrusted peer), to be
    /// removed before [`inject`](Self::inject) is applied.
    pub strip: Vec<HeaderName>,
    /// Headers to set, each in place of every value the request had under its name (so a
    /// name set here needs no entry in [`strip`](Self::strip)): whatever applies a plan
    /// must replace, never append, or a trusted proxy's line would reach the app beside
    /// the gate's.
    pub inject: Vec<(HeaderName, HeaderValue)>,
    /// The verified identity, when the request carried a valid token.
    pub identity: Option<Identity>,
    /// The `X-Request-Id` the app is sent (also in [`inject`](Self::inject)): a trusted
    /// proxy's, else a fresh one. Set in every plan the front makes; `None` only in a
    /// default plan.
    pub request_id: Option<HeaderValue>,
}

impl UpstreamPlan {
    /// Applies the plan to a header map.
    pub fn apply(&self, headers: &mut HeaderMap) {
        self.clone().apply_into(headers);
    }

    /// Applies the plan to a header map, moving its headers there; returns the identity.
    pub fn apply_into(self, headers: &mut HeaderMap) -> Option<Identity> {
        for name in &self.strip {
            headers.remove(name);
        }
        headers.reserve(self.inject.len());
        for (name, value) in self.inject {
            headers.insert(name, value);
        }
        self.identity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_reads_as_display_writes_it() {
        let mut addresses: Vec<IpAddr> = ["::1", "2001:db8::8a2e:370:7334", "::ffff:10.0.0.1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        // Every octet value, in every position, with both neighbours' widths.
        for octet in 0..=255u8 {
            addresses.push(std::net::Ipv4Addr::new(octet, 0, 255, octet).into());
            addresses.push(std::net::Ipv4Addr::new(9, octet, octet, 100).into());
        }
        for address in addresses {
            assert_eq!(ip_header_value(address), address.to_string().as_str());
        }
    }

    #[test]
    fn a_fresh_request_id_is_16_lower_case_hex_digits_and_new_each_time() {
        let ids: Vec<HeaderValue> = (0..64).map(|_| fresh_request_id()).collect();
        for id in &ids {
            let bytes = id.as_bytes();
            assert_eq!(bytes.len(), 16, "{id:?}");
            assert!(
                bytes
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)),
                "{id:?}"
            );
        }
        let distinct: std::collections::HashSet<&[u8]> =
            ids.iter().map(|id| id.as_bytes()).collect();
        assert_eq!(distinct.len(), ids.len());
        // Every digit position takes more than one value: the whole random number shows.
        for position in 0..16 {
            let seen: std::collections::HashSet<u8> =
                ids.iter().map(|id| id.as_bytes()[position]).collect();
            assert!(seen.len() > 1, "position {position} never changes");
        }
    }
}
