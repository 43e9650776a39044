//! What the front is told: where endpoints are mounted, which paths are protected, the
//! headers identities travel in, the session cookie and the request limits.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;

use super::{Dialect, PageSettings, PathPolicy, ProtectRule};

/// Where a dialect's endpoints are mounted.
#[derive(Clone, PartialEq, Eq)]
pub struct EndpointMount {
    /// The API shape.
    pub dialect: Dialect,
    /// The path prefix, e.g. `/auth`.
    pub prefix: String,
    /// When not empty, requests to these endpoints must carry one of these values in
    /// `x-client-key` (the baanx dialect).
    pub client_keys: Vec<String>,
    /// Where a second-factor assertion JWT reaches the app (the baanx dialect).
    pub assertion_header: Option<HeaderName>,
}

impl std::fmt::Debug for EndpointMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Client keys are secrets: a debug log of the settings shows how many, never which.
        f.debug_struct("EndpointMount")
            .field("dialect", &self.dialect)
            .field("prefix", &self.prefix)
            .field(
                "client_keys",
                &format_args!("<{} keys>", self.client_keys.len()),
            )
            .field("assertion_header", &self.assertion_header)
            .finish()
    }
}

impl EndpointMount {
    /// A mount of `dialect` at `prefix`, with no client keys and no assertion header.
    pub fn new(dialect: Dialect, prefix: &str) -> EndpointMount {
        EndpointMount {
            dialect,
            prefix: prefix.to_owned(),
            client_keys: Vec::new(),
            assertion_header: None,
        }
    }
}

/// The headers through which the app learns who is calling.
#[derive(Clone, Debug)]
pub struct IdentityHeaders {
    /// Carries the token itself.
    pub jwt: HeaderName,
    /// Carries the subject.
    pub subject: HeaderName,
    /// Carries the verified email.
    pub email: HeaderName,
    /// Carries the verified phone.
    pub phone: HeaderName,
    /// Carries the tenant.
    pub tenant: HeaderName,
    /// Header names (exact, or a prefix ending in `*`) always removed from client
    /// requests. The five headers above are always removed too. Names match in any
    /// case and with `_` and `-` alike.
    pub strip: Vec<String>,
    /// Also remove `X-Original-URL` and `X-Rewrite-URL`, with which IIS-style apps
    /// reroute a request to another path than the one the gate judged, and
    /// `X-HTTP-Method-Override`, `X-HTTP-Method` and `X-Method-Override`, with which
    /// method-override middleware turns it into another method.
    pub strip_reroute: bool,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        IdentityHeaders {
            jwt: HeaderName::from_static("x-otpgate-jwt"),
            subject: HeaderName::from_static("x-auth-subject"),
            email: HeaderName::from_static("x-auth-email"),
            phone: HeaderName::from_static("x-auth-phone"),
            tenant: HeaderName::from_static("x-auth-tenant"),
            strip: vec!["X-Auth-*".into(), "X-Otpgate-*".into()],
            strip_reroute: true,
        }
    }
}

/// The session cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieSettings {
    /// Its name.
    pub name: String,
    /// Sent with `Secure` (only over HTTPS; browsers treat localhost as secure).
    pub secure: bool,
}

/// HTTP-side settings of a gate.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Mounted endpoint sets.
    pub endpoints: Vec<EndpointMount>,
    /// The rules that require a valid session under a path prefix; the most specific
    /// one that covers a request applies (see [`ProtectRule`]).
    pub protect: Vec<ProtectRule>,
    /// The sign-in pages for browsers and forward-auth's `{prefix}/check`; `None` turns
    /// both off, and browsers then get the 401 that API clients get.
    pub pages: Option<PageSettings>,
    /// Identity headers.
    pub identity: IdentityHeaders,
    /// Session cookie; `None` to use bearer tokens only.
    pub cookie: Option<CookieSettings>,
    /// Largest request body the gate reads, in bytes.
    pub body_limit: usize,
    /// How request paths are read and protected prefixes matched.
    pub paths: PathPolicy,
    /// Most header lines a request may carry (431 beyond).
    pub max_headers: usize,
    /// Most bytes of header names and values a request may carry (431 beyond).
    pub max_header_bytes: usize,
    /// Peers allowed to say who the client is via `X-Forwarded-For`.
    pub trusted_proxies: Vec<IpNet>,
    /// Where the JWKS is served.
    pub jwks_path: String,
    /// Where the liveness probe is answered: 200 while the process serves.
    pub health_path: String,
    /// Where the readiness probe is answered: 200 while the store and the directory (and,
    /// behind the edge proxy, the app) answer, 503 `not_ready` naming the one that does not.
    pub ready_path: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            endpoints: vec![EndpointMount::new(Dialect::Generic, "/auth")],
            protect: Vec::new(),
            pages: Some(PageSettings::default()),
            identity: IdentityHeaders::default(),
            cookie: Some(CookieSettings {
                name: "otpgate_session".into(),
                secure: true,
            }),
            body_limit: 16 * 1024,
            paths: PathPolicy::default(),
            max_headers: 100,
            max_header_bytes: 32 * 1024,
            trusted_proxies: Vec::new(),
            jwks_path: "/.well-known/jwks.json".into(),
            health_path: "/healthz".into(),
            ready_path: "/readyz".into(),
        }
    }
}

impl HttpSettings {
    /// The token a request carries: `Authorization: Bearer`, else the session cookie.
    pub fn token_in<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        for value in headers.get_all(http::header::AUTHORIZATION) {
            // Read as bytes: a value with anything but ASCII is no bearer token (it falls
            // through to the cookie, as an unreadable value always did).
            let value = value.as_bytes().trim_ascii();
            let Some(space) = value.iter().position(|&b| b == b' ') else {
                continue;
            };
            let (scheme, token) = (&value[..space], value[space + 1..].trim_ascii());
            if scheme.eq_ignore_ascii_case(b"bearer")
                && !token.is_empty()
                && token.is_ascii()
                && let Ok(token) = std::str::from_utf8(token)
            {
                return Some(token);
            }
        }
        let cookie = self.cookie.as_ref()?;
        for value in headers.get_all(http::header::COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for pair in value.split(';') {
                if let Some((name, token)) = pair.trim().split_once('=')
                    && name == cookie.name
                    && !token.is_empty()
                {
                    return Some(token);
                }
            }
        }
        None
    }

    /// The `Set-Cookie` value for a session token, when cookies are on.
    pub fn session_cookie(&self, token: &str, max_age: u64) -> Option<HeaderValue> {
        let cookie = self.cookie.as_ref()?;
        let secure = if cookie.secure { "; Secure" } else { "" };
        // HttpOnly keeps the token from page scripts; SameSite=Lax blocks cross-site posts.
        let value = format!(
            "{}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
            cookie.name, token, max_age, secure
        );
        HeaderValue::from_str(&value).ok()
    }
}
