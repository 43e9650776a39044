//! The canonical request target: one reading of the path, made once, that routing,
//! protection and the app behind the gate all share.
//!
//! An app server may decode percent-escapes, merge slashes, resolve `.` and `..`, cut
//! `;parameters` or route without regard to case. If the gate compared the raw target
//! with its protected prefixes and forwarded it unchanged, `//api/me`, `/%61pi/me` or
//! `/public/../api/me` would pass the gate as public and reach `/api/me` in the app.
//! So the gate reduces every target to one canonical path ([RFC 3986 §6.2.2]: escapes of
//! unreserved characters decoded, hex digits upper-cased, dot segments removed as in
//! §5.2.4, repeated slashes merged), judges that path, and forwards exactly that path.
//! What cannot be read one way only (an encoded `/` or `\`, a raw `\`, control
//! characters, a double escape, `..` above the root, bytes that are not UTF-8) is refused.
//!
//! ```
//! use otpgate::http::target::{PathPolicy, canonicalize};
//!
//! let policy = PathPolicy::default();
//! let target = canonicalize(b"//public/./../%61pi//me?x=%2F", false, &policy).unwrap();
//! assert_eq!(target.path(), "/api/me");
//! assert_eq!(target.query(), Some("x=%2F"));
//! assert!(canonicalize(b"/api%2Fme", false, &policy).is_err());
//! ```
//!
//! [RFC 3986 §6.2.2]: https://www.rfc-editor.org/rfc/rfc3986#section-6.2.2

use std::fmt::Write as _;

/// How strictly request paths are read; see [`canonicalize`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathPolicy {
    /// Protected prefixes match only in the case they are written in. Off by default:
    /// many app servers and routers (IIS, ASP.NET, Express without `caseSensitive`,
    /// Spring on some set-ups) serve `/API/me` as `/api/me`.
    pub case_sensitive: bool,
    /// Let `;parameters` in path segments through (matched without them, forwarded with
    /// them). Off by default: Tomcat, Jetty and Spring cut them before routing, so
    /// `/api;x/me` is `/api/me` there.
    pub allow_path_params: bool,
    /// Let an encoded `/` (`%2F`) through as data, matched literally and forwarded still
    /// encoded, for APIs that put slashes in one segment (`/projects/group%2Fproject`).
    /// Off by default: servers that decode it before routing read another path.
    pub allow_encoded_slashes: bool,
}

#[allow(clippy::derivable_impls)] // Spelled out: every default is a security decision.
impl Default for PathPolicy {
    fn default() -> Self {
        PathPolicy {
            case_sensitive: false,
            allow_path_params: false,
            allow_encoded_slashes: false,
        }
    }
}

impl PathPolicy {
    /// Whether `prefix` is written as requests will be compared with it: canonical, with
    /// no query (a trailing `/` aside). Requests are matched in canonical form, so a
    /// prefix written any other way (`api/`, `/api//`, `/%61pi/`) would protect nothing.
    pub fn is_canonical_prefix(&self, prefix: &str) -> bool {
        canonicalize(prefix.as_bytes(), false, self)
            .ok()
            .filter(|target| target.query().is_none())
            .is_some_and(|target| {
                let path = target.path();
                path == prefix || path.strip_suffix('/') == Some(prefix)
            })
    }
}

/// Why a request target was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTarget {
    /// Neither a path (`/…`) nor an absolute URL: `api/me`, `host:443`, an empty target.
    #[error("the request target is not a path")]
    NotOriginForm,
    /// `*` with a method other than OPTIONS.
    #[error("`*` is a target for OPTIONS only")]
    Asterisk,
    /// `%2F`, which servers that decode before routing read as a separator.
    #[error("the path contains an encoded `/`")]
    EncodedSlash,
    /// A raw or encoded `\`, which some servers read as `/`.
    #[error("the path contains a backslash")]
    Backslash,
    /// A control character, raw or encoded, a space or a raw byte outside ASCII.
    #[error("the path contains a control character, a space or a raw non-ASCII byte")]
    ForbiddenCharacter,
    /// `%` not followed by two hex digits.
    #[error("the path contains a malformed percent-escape")]
    MalformedEscape,
    /// `%25` followed by two hex digits: a second decoding would read another path.
    #[error("the path contains a double percent-escape")]
    DoubleEscape,
    /// The escapes decode to bytes that are not UTF-8 (overlong forms included).
    #[error("the path does not decode to UTF-8")]
    NotUtf8,
    /// `..` climbs above the root.
    #[error("the path climbs above the root")]
    AboveRoot,
    /// A `;parameter`, refused unless [`PathPolicy::allow_path_params`] is set.
    #[error("the path contains a `;` parameter")]
    PathParameter,
    /// A segment ending in `.` (`/api./me`), which Windows servers read without the dot.
    #[error("a path segment ends with `.`")]
    TrailingDot,
}

/// A request target in canonical form; see [`canonicalize`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalTarget {
    /// What the app receives: the canonical path.
    path: String,
    /// What routing and protection compare: the path without `;parameters` (equal to
    /// `path` unless they are allowed).
    match_path: Option<String>,
    /// The query string, exactly as the client sent it.
    query: Option<String>,
}

impl CanonicalTarget {
    /// The canonical path, as the app receives it (`*` for `OPTIONS *`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path routing and protection compare: [`path`](Self::path) without any
    /// `;parameters`.
    pub fn match_path(&self) -> &str {
        self.match_path.as_deref().unwrap_or(&self.path)
    }

    /// The query string, untouched.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// Whether this is the server-wide `OPTIONS *`.
    pub fn is_asterisk(&self) -> bool {
        self.path == "*"
    }

    /// Whether `raw` is exactly [`to_origin_form`](Self::to_origin_form), compared without
    /// building it: most requests arrive canonical and need no new target.
    pub fn is_spelled(&self, raw: &[u8]) -> bool {
        let Some(rest) = raw.strip_prefix(self.path.as_bytes()) else {
            return false;
        };
        match &self.query {
            Some(query) => rest.strip_prefix(b"?") == Some(query.as_bytes()),
            None => rest.is_empty(),
        }
    }

    /// The origin-form target the app receives: the canonical path and the query.
    pub fn to_origin_form(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{}", self.path, query),
            None => self.path.clone(),
        }
    }
}

/// Reduces a raw request target to its canonical form, or refuses it.
///
/// `raw` is the target as it came off the wire (origin-form `/a/b?q`, or absolute-form
/// `http://host/a/b?q`, which is reduced to its path); `options` says whether the method
/// is OPTIONS, for which `*` is allowed. The query string is kept byte for byte.
pub fn canonicalize(
    raw: &[u8],
    options: bool,
    policy: &PathPolicy,
) -> Result<CanonicalTarget, InvalidTarget> {
    if raw == b"*" {
        return if options {
            Ok(CanonicalTarget {
                path: "*".into(),
                match_path: None,
                query: None,
            })
        } else {
            Err(InvalidTarget::Asterisk)
        };
    }
    let origin = origin_form(raw)?;
    let (path, query) = match origin.iter().position(|&b| b == b'?') {
        Some(at) => (&origin[..at], Some(&origin[at + 1..])),
        None => (origin, None),
    };
    let query = match query {
        // Control characters, spaces and raw non-ASCII bytes are no more valid in the
        // query than in the path; the rest of the query is the app's business.
        Some(query) if query.iter().any(|&b| forbidden_raw(b)) => {
            return Err(InvalidTarget::ForbiddenCharacter);
        }
        // Only ASCII is left, so this cannot fail.
        Some(query) => Some(String::from_utf8_lossy(query).into_owned()),
        None => None,
    };
    // `http://host?q` leaves an empty path: the root.
    let path = if path.is_empty() { b"/" } else { path };
    if already_canonical(path) {
        return Ok(CanonicalTarget {
            // Only ASCII is left, so this cannot fail.
            path: String::from_utf8_lossy(path).into_owned(),
            match_path: None,
            query,
        });
    }
    let segments = decode_segments(path, policy)?;
    let (path, match_path) = resolve(&segments, policy)?;
    Ok(CanonicalTarget {
        path,
        match_path,
        query,
    })
}

/// The origin-form part of a target: itself, or the path of an absolute URL.
fn origin_form(raw: &[u8]) -> Result<&[u8], InvalidTarget> {
    if raw.first() == Some(&b'/') {
        return Ok(raw);
    }
    // Absolute-form (RFC 9112 §3.2.2): a client talking to a proxy. Only its path is
    // judged and forwarded; the Host header names the site.
    let lower = |n: usize| raw.get(..n).map(<[u8]>::to_ascii_lowercase);
    let scheme_end = if lower(7).as_deref() == Some(b"http://") {
        7
    } else if lower(8).as_deref() == Some(b"https://") {
        8
    } else {
        return Err(InvalidTarget::NotOriginForm);
    };
    let rest = &raw[scheme_end..];
    // `http://host` names the root; `http://host?q` is the root with a query.
    Ok(rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .map_or(b"/", |at| &rest[at..]))
}

/// Whether a path needs no work: no escape, parameter, backslash or forbidden byte, and
/// no empty, dot or trailing-dot segment (an empty last segment is a trailing slash).
/// Most paths are like this and skip the segment-by-segment rework.
fn already_canonical(path: &[u8]) -> bool {
    let segments = path[1..].split(|&b| b == b'/');
    let count = path[1..].iter().filter(|&&b| b == b'/').count() + 1;
    !path
        .iter()
        .any(|&b| matches!(b, b'%' | b';' | b'\\' | b'#') || forbidden_raw(b))
        && segments.enumerate().all(|(i, segment)| {
            (!segment.is_empty() || i + 1 == count) && segment.last() != Some(&b'.')
        })
}

/// A byte that may not appear raw anywhere in a target.
fn forbidden_raw(byte: u8) -> bool {
    byte <= b' ' || byte >= 0x7f
}

fn unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

/// One segment of the path: its text with escapes normalized, and where its
/// `;parameters` begin, when it has any.
struct Segment {
    text: String,
    params_at: Option<usize>,
}

impl Segment {
    /// The segment without its parameters: what dot-segment removal and matching see.
    fn name(&self) -> &str {
        &self.text[..self.params_at.unwrap_or(self.text.len())]
    }
}

/// Splits the path (which starts with `/`) into segments at each raw `/`, decoding the
/// escapes of unreserved characters and upper-casing the others.
fn decode_segments(path: &[u8], policy: &PathPolicy) -> Result<Vec<Segment>, InvalidTarget> {
    let mut segments = Vec::new();
    for raw in path[1..].split(|&b| b == b'/') {
        let mut text = String::with_capacity(raw.len());
        let mut params_at = None;
        // Every byte the segment decodes to, to check that it is UTF-8 as a whole.
        let mut decoded = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let byte = raw[i];
            match byte {
                b'%' => {
                    let (Some(high), Some(low)) = (
                        raw.get(i + 1).copied().and_then(hex),
                        raw.get(i + 2).copied().and_then(hex),
                    ) else {
                        return Err(InvalidTarget::MalformedEscape);
                    };
                    let value = high << 4 | low;
                    i += 3;
                    match value {
                        // `/api%2Fme` is one segment here but two in a server that decodes
                        // before it routes.
                        b'/' if policy.allow_encoded_slashes => text.push_str("%2F"),
                        b'/' => return Err(InvalidTarget::EncodedSlash),
                        // Windows servers and some frameworks read `\` as `/`.
                        b'\\' => return Err(InvalidTarget::Backslash),
                        // A NUL or line break cuts or splits the path in some servers.
                        0..=0x1f | 0x7f => return Err(InvalidTarget::ForbiddenCharacter),
                        // `%252e` is `%2e` once decoded and `.` twice: refused, since some
                        // stacks decode twice.
                        b'%' if raw.get(i).copied().and_then(hex).is_some()
                            && raw.get(i + 1).copied().and_then(hex).is_some() =>
                        {
                            return Err(InvalidTarget::DoubleEscape);
                        }
                        // nginx decodes `%3B` to `;` when it passes a path on, and
                        // Tomcat, Jetty and Spring then cut the segment there.
                        b';' if !policy.allow_path_params => {
                            return Err(InvalidTarget::PathParameter);
                        }
                        b';' => {
                            params_at.get_or_insert(text.len());
                            text.push_str("%3B");
                        }
                        // Escapes of unreserved characters mean the characters themselves
                        // (RFC 3986 §2.3), so `/%61pi` is `/api` to every server.
                        value if unreserved(value) => text.push(value as char),
                        value => {
                            let _ = write!(text, "%{value:02X}");
                        }
                    }
                    decoded.push(value);
                }
                // Windows servers and some frameworks read `\` as `/`.
                b'\\' => return Err(InvalidTarget::Backslash),
                byte if forbidden_raw(byte) => return Err(InvalidTarget::ForbiddenCharacter),
                // `#` never belongs in a target; clients strip the fragment.
                b'#' => return Err(InvalidTarget::ForbiddenCharacter),
                b';' => {
                    // Tomcat, Jetty and Spring cut `;…` before routing: `/api;x/me` is
                    // `/api/me` there.
                    if !policy.allow_path_params {
                        return Err(InvalidTarget::PathParameter);
                    }
                    params_at.get_or_insert(text.len());
                    text.push(';');
                    decoded.push(byte);
                    i += 1;
                }
                byte => {
                    text.push(byte as char);
                    decoded.push(byte);
                    i += 1;
                }
            }
        }
        // Overlong forms (`%C0%AE` for `.`) and stray bytes are not UTF-8; servers that
        // decode them leniently would read characters the gate never saw.
        if std::str::from_utf8(&decoded).is_err() {
            return Err(InvalidTarget::NotUtf8);
        }
        segments.push(Segment { text, params_at });
    }
    Ok(segments)
}

/// Removes dot segments (RFC 3986 §5.2.4) and empty segments, and joins what is left.
/// Returns the canonical path, and the path without parameters when it differs.
fn resolve(
    segments: &[Segment],
    policy: &PathPolicy,
) -> Result<(String, Option<String>), InvalidTarget> {
    let mut kept: Vec<&Segment> = Vec::with_capacity(segments.len());
    let mut trailing_slash = false;
    for segment in segments {
        // A segment that ends the path and is empty or a dot segment leaves a trailing
        // slash (`/a/b/..` is `/a/`); any other segment clears it.
        trailing_slash = true;
        match segment.name() {
            // `//` is `/` to nginx (merge_slashes), Werkzeug and most routers.
            "" | "." => {}
            ".." => {
                if kept.pop().is_none() {
                    return Err(InvalidTarget::AboveRoot);
                }
            }
            // Windows drops trailing dots from file names: `/api./me` is `/api/me` there.
            name if name.ends_with('.') => return Err(InvalidTarget::TrailingDot),
            // With encoded slashes let through, a server that decodes them would find dot
            // segments the gate never resolved (`/x/..%2F..%2Fapi`), parameters or not
            // (`/public;x%2F../api`).
            _ if segment.text.contains("%2F")
                && segment.text.split("%2F").any(|piece| {
                    let name = piece.split([';']).next().unwrap_or(piece);
                    let name = name.split("%3B").next().unwrap_or(name);
                    name.ends_with('.')
                }) =>
            {
                return Err(InvalidTarget::EncodedSlash);
            }
            _ => {
                kept.push(segment);
                trailing_slash = false;
            }
        }
    }
    let join = |text: &dyn Fn(&Segment) -> &str| {
        let mut path = String::with_capacity(segments.iter().map(|s| s.text.len() + 1).sum());
        for segment in &kept {
            path.push('/');
            path.push_str(text(segment));
        }
        if trailing_slash || kept.is_empty() {
            path.push('/');
        }
        path
    };
    let path = join(&|s: &Segment| s.text.as_str());
    let match_path = (policy.allow_path_params && kept.iter().any(|s| s.params_at.is_some()))
        .then(|| join(&|s: &Segment| s.name()));
    Ok((path, match_path))
}

/// Whether `path` lies under `prefix`, on a segment boundary: `/api/` and `/api` both
/// cover `/api` and `/api/x`, never `/apiary`. Case-insensitive unless `case_sensitive`.
pub fn prefix_covers(prefix: &str, path: &str, case_sensitive: bool) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    let Some(head) = path.get(..prefix.len()) else {
        return false;
    };
    let same = if case_sensitive {
        head == prefix
    } else {
        head.eq_ignore_ascii_case(prefix)
    };
    same && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

#[cfg(test)]
mod tests;
