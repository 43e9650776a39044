//! Route policy: which rule guards a request, and whether a verified identity may pass
//! it. Decided here once, for the tower layer, the proxy and forward-auth alike.

use std::time::Duration;

use http::{HeaderMap, Method};

use super::target;
use crate::gate::Identity;

/// One `[[protect]]` rule: a path prefix that needs a valid session, and optionally who
/// may pass and how recently they must have signed in.
///
/// A rule made from a prefix alone (`"/api/".into()`) lets any valid session pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectRule {
    /// The canonical path prefix, matched on segment boundaries.
    pub prefix: String,
    /// The methods the rule guards (GET brings HEAD with it; any case, so `post` too;
    /// and any method outside the nine standard ones); every method when empty.
    pub methods: Vec<Method>,
    /// The tenants whose sessions may pass; any tenant when empty.
    pub tenants: Vec<String>,
    /// Emails allowed (canonical, lower case). With `email_domains` and
    /// `phone_countries`: when any of the three is set, an identity must match one entry
    /// of one of them.
    pub emails: Vec<String>,
    /// Email domains allowed (`example.com`; the domain itself, not its subdomains).
    pub email_domains: Vec<String>,
    /// Country calling codes allowed for phone identities, digits only (`44`, `1`).
    pub phone_countries: Vec<String>,
    /// The oldest sign-in this rule accepts: an older session is sent to sign in again
    /// for paths under this rule only (step-up).
    pub max_session_age: Option<Duration>,
}

impl ProtectRule {
    /// A rule that lets any valid session pass under `prefix`.
    pub fn prefix(prefix: &str) -> ProtectRule {
        ProtectRule {
            prefix: prefix.to_owned(),
            methods: Vec::new(),
            tenants: Vec::new(),
            emails: Vec::new(),
            email_domains: Vec::new(),
            phone_countries: Vec::new(),
            max_session_age: None,
        }
    }

    /// Whether this rule guards `method` on `path` (a canonical match path). A rule that
    /// guards GET guards HEAD too; methods match in any case (`post` is guarded as POST);
    /// a method outside the standard ones (`PROPFIND`) is guarded by every rule.
    pub fn covers(&self, method: &Method, path: &str, case_sensitive: bool) -> bool {
        // Any case: servers such as Werkzeug upper-case the method, so `post` reaches the
        // app's POST handler and must be guarded as POST.
        let guards = |name: &str| {
            self.methods
                .iter()
                .any(|guarded| guarded.as_str().eq_ignore_ascii_case(name))
        };
        (self.methods.is_empty()
            || guards(method.as_str())
            // PROPFIND, PURGE or one of the app's own: the gate cannot tell a read from a
            // write there (`if GET { show } else { delete }`), so a rule that lists
            // methods guards every method outside the standard ones too.
            || !STANDARD_METHODS
                .iter()
                .any(|standard| standard.eq_ignore_ascii_case(method.as_str()))
            // Apps answer HEAD with their GET handler: the same work, the same headers.
            || (method.as_str().eq_ignore_ascii_case("HEAD") && guards("GET")))
            && target::prefix_covers(&self.prefix, path, case_sensitive)
    }

    /// Whether `identity` may pass this rule at `now_secs` (seconds since the epoch).
    pub fn admits(&self, identity: &Identity, now_secs: u64) -> Result<(), Denial> {
        let claims = &identity.claims;
        // A session of one tenant is never good for another tenant's paths.
        if !self.tenants.is_empty() && !self.tenants.iter().any(|t| *t == claims.tenant) {
            return Err(Denial::Forbidden(
                "this tenant's sessions may not use this path",
            ));
        }
        if !self.admits_identifier(identity) {
            return Err(Denial::Forbidden("this account may not use this path"));
        }
        if let Some(max_age) = self.max_session_age {
            // A sign-in from the future (clock skew) counts as just now, not as fresh forever.
            let age = now_secs.saturating_sub(claims.auth_time);
            if age > max_age.as_secs() {
                return Err(Denial::SignInAgain);
            }
        }
        Ok(())
    }

    fn admits_identifier(&self, identity: &Identity) -> bool {
        if self.emails.is_empty()
            && self.email_domains.is_empty()
            && self.phone_countries.is_empty()
        {
            return true;
        }
        if let Some(email) = identity.email() {
            // Emails in tokens are canonical (lower case); the rule's are made so at load.
            if self.emails.iter().any(|allowed| allowed == email) {
                return true;
            }
            if let Some((_, domain)) = email.rsplit_once('@')
                && self.email_domains.iter().any(|allowed| allowed == domain)
            {
                return true;
            }
        }
        if let Some(phone) = identity.phone() {
            // E.164 country calling codes are prefix-free: `+44…` is the UK and no other.
            let digits = phone.strip_prefix('+').unwrap_or(phone);
            if self
                .phone_countries
                .iter()
                .any(|code| digits.starts_with(code.as_str()))
            {
                return true;
            }
        }
        false
    }
}

impl From<&str> for ProtectRule {
    fn from(prefix: &str) -> ProtectRule {
        ProtectRule::prefix(prefix)
    }
}

impl From<String> for ProtectRule {
    fn from(prefix: String) -> ProtectRule {
        ProtectRule::prefix(&prefix)
    }
}

/// The methods of RFC 9110, the only ones whose meaning a rule's `methods` can name.
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

/// Why a verified session may not pass a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The session is older than the rule's `max_session_age`: sign in again.
    SignInAgain,
    /// The identity or its tenant is not among those the rule allows.
    Forbidden(&'static str),
}

/// The rule that guards `method` on `path`: among those covering it, the one with the
/// longest prefix (the most specific), the first written on a tie.
pub fn rule_for(
    rules: &[ProtectRule],
    method: &Method,
    path: &str,
    case_sensitive: bool,
) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (index, rule) in rules.iter().enumerate() {
        if !rule.covers(method, path, case_sensitive) {
            continue;
        }
        let length = rule.prefix.trim_end_matches('/').len();
        if best.is_none_or(|(_, best_length)| length > best_length) {
            best = Some((index, length));
        }
    }
    best.map(|(index, _)| index)
}

/// Whether a request is a browser navigating to a page (as opposed to a script's
/// fetch/XHR or an API client): only a navigation may be redirected to the sign-in
/// page; everything else gets a 401 it can act on.
///
/// A GET or HEAD whose `Sec-Fetch-Mode` is `navigate` (and `Sec-Fetch-Dest`, when sent, a
/// document); without those headers (older browsers), one that accepts `text/html` and is
/// not marked `X-Requested-With`.
pub fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(mode) = header("sec-fetch-mode") {
        // A fetch() or XHR says `cors`, `same-origin` or `no-cors`, whatever it accepts.
        return mode.eq_ignore_ascii_case("navigate")
            && header("sec-fetch-dest").is_none_or(|dest| dest.eq_ignore_ascii_case("document"));
    }
    if header("x-requested-with").is_some() {
        return false;
    }
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let media = range.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case("text/html")
                || media.eq_ignore_ascii_case("application/xhtml+xml")
        })
}

/// A return URL that is safe to redirect to after sign-in, or `None`.
///
/// Accepted: a path on this site (`/docs?page=2`), or an absolute `http(s)` URL whose
/// host is `request_host` or one of `allowed_hosts`. Refused: anything a browser could
/// read as another origin (`//evil`, `/\evil`, `\\evil`), other schemes (`javascript:`),
/// userinfo (`https://app@evil`), control characters and whitespace.
pub fn safe_return(
    raw: &str,
    request_host: Option<&str>,
    allowed_hosts: &[String],
) -> Option<String> {
    // Browsers strip tabs and newlines inside URLs and read `\` as `/`: a URL with any of
    // them can mean something else to the browser than to this check.
    if raw.is_empty()
        || raw.len() > 2048
        || raw
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'\\' || b >= 0x80)
    {
        return None;
    }
    if raw.starts_with('/') {
        // `//host/…` is protocol-relative: another origin.
        return match raw.as_bytes().get(1) {
            Some(b'/') => None,
            _ => plain_path(raw).then(|| raw.to_owned()),
        };
    }
    let (scheme, rest) = raw.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // `user@host` shows one host and goes to another.
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let host = host_of(authority)?;
    if !plain_path(&rest[authority.len()..]) {
        return None;
    }
    let same_origin = request_host
        .and_then(host_of)
        .is_some_and(|own| own.eq_ignore_ascii_case(host));
    let allowed = allowed_hosts
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(host));
    (same_origin || allowed).then(|| raw.to_owned())
}

/// Whether the path of a return URL (what precedes its `?` or `#`) has no empty and no
/// dot segment. The browser resolves `/.//evil.com` to the path `//evil.com`, which an
/// app that redirects to its own path (adding a trailing slash, say) sends to
/// `//evil.com`: another origin. The gate's own return URLs are canonical and have none.
fn plain_path(url: &str) -> bool {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let path = path.strip_prefix('/').unwrap_or(path);
    path.is_empty()
        || path.split('/').enumerate().all(|(index, segment)| {
            // Browsers read `%2e` in a path as `.`.
            let dots = segment.to_ascii_lowercase().replace("%2e", ".");
            // A trailing `/` is an empty last segment, and fine; an empty one inside is not.
            let last = index == path.matches('/').count();
            (last || !segment.is_empty()) && dots != "." && dots != ".."
        })
}

/// The host part of an authority (`host`, `host:port`, `[v6]:port`), or `None` when it
/// is malformed.
fn host_of(authority: &str) -> Option<&str> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        return (tail.is_empty() || valid_port(tail.strip_prefix(':')?)).then_some(host);
    }
    match authority.split_once(':') {
        Some((host, port)) => (!host.is_empty() && valid_port(port)).then_some(host),
        None => (!authority.is_empty()).then_some(authority),
    }
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_urls_that_leave_the_site_are_refused() {
        let host = Some("app.example.com");
        let allowed = vec!["docs.example.com".to_owned()];
        for good in [
            "/",
            "/docs?page=2#top",
            "https://app.example.com/x",
            "http://app.example.com:8080/x",
            "https://docs.example.com/",
        ] {
            assert_eq!(
                safe_return(good, host, &allowed).as_deref(),
                Some(good),
                "{good}"
            );
        }
        for bad in [
            "",
            "//evil.com/",
            "/\\evil.com/",
            "\\\\evil.com",
            "/\tevil",
            "javascript:alert(1)",
            "JavaScript://app.example.com/%0aalert(1)",
            "data:text/html,x",
            "https://evil.com/",
            "https://app.example.com@evil.com/",
            "https://evil.com#@app.example.com",
            "https://app.example.com.evil.com/",
            "https:/evil.com",
            "evil.com",
            "https://[::1/",
            "/caf\u{e9}",
        ] {
            assert_eq!(safe_return(bad, host, &allowed), None, "{bad:?}");
        }
        // Without a Host header nothing absolute is same-origin.
        assert_eq!(safe_return("https://app.example.com/", None, &[]), None);
    }

    #[test]
    fn navigations_are_told_from_scripts() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(*name, http::HeaderValue::from_static(value));
            }
            map
        };
        let page = headers(&[("accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")]);
        assert!(is_navigation(&Method::GET, &page));
        assert!(!is_navigation(&Method::POST, &page));
        let fetch = headers(&[
            ("accept", "text/html"),
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-dest", "empty"),
        ]);
        assert!(!is_navigation(&Method::GET, &fetch));
        let navigate = headers(&[
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
        ]);
        assert!(is_navigation(&Method::GET, &navigate));
        let image = headers(&[("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "image")]);
        assert!(!is_navigation(&Method::GET, &image));
        let xhr = headers(&[
            ("accept", "text/html"),
            ("x-requested-with", "XMLHttpRequest"),
        ]);
        assert!(!is_navigation(&Method::GET, &xhr));
        assert!(!is_navigation(&Method::GET, &headers(&[("accept", "*/*")])));
        assert!(!is_navigation(
            &Method::GET,
            &headers(&[("accept", "application/json")])
        ));
    }

    #[test]
    fn the_most_specific_rule_for_the_method_applies() {
        let mut admin = ProtectRule::prefix("/api/admin/");
        admin.methods = vec![Method::POST];
        let rules = vec![
            ProtectRule::prefix("/api/"),
            admin,
            ProtectRule::prefix("/"),
        ];
        assert_eq!(
            rule_for(&rules, &Method::POST, "/api/admin/x", false),
            Some(1)
        );
        assert_eq!(
            rule_for(&rules, &Method::GET, "/api/admin/x", false),
            Some(0)
        );
        assert_eq!(rule_for(&rules, &Method::GET, "/API/x", false), Some(0));
        let mut reads = ProtectRule::prefix("/reports/");
        reads.methods = vec![Method::GET];
        assert!(reads.covers(&Method::HEAD, "/reports/q1", false));
        assert!(!reads.covers(&Method::POST, "/reports/q1", false));
        assert!(!rules[1].covers(&Method::HEAD, "/api/admin/x", false));
        assert_eq!(rule_for(&rules, &Method::GET, "/apis", false), Some(2));
        assert_eq!(rule_for(&rules[..2], &Method::GET, "/apis", false), None);
    }
}
