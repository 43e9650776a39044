//! What the HTTP front is told: `[identity]`, `[paths]`, `[[protect]]`, `[[endpoints]]`,
//! the session cookie (`token.cookie`, `token.cookie_secure`) and the request limits of
//! `[server]`. All of it is plain values, so the checked model is [`HttpSettings`]
//! itself and there is nothing to build.

use http::HeaderName;
use toml::Spanned;

use super::schema::{EndpointSection, FileConfig};
use super::{ConfigError, Source};
use crate::http::{CookieSettings, EndpointMount, HttpSettings, IdentityHeaders, PathPolicy};

/// Checks the front's sections.
pub(super) fn check(file: &FileConfig, source: &Source<'_>) -> Result<HttpSettings, ConfigError> {
    let defaults = HttpSettings::default();
    let endpoints = match &file.endpoints {
        Some(list) => list
            .iter()
            .map(|section| endpoint(section, source))
            .collect::<Result<Vec<_>, ConfigError>>()?,
        None => defaults.endpoints,
    };
    let paths = PathPolicy {
        case_sensitive: file.paths.case_sensitive,
        allow_path_params: file.paths.allow_path_params,
        allow_encoded_slashes: file.paths.allow_encoded_slashes,
    };
    let protect = file
        .protect
        .iter()
        .map(|section| protect_prefix(&section.prefix, &paths, source))
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let server = &file.server;
    Ok(HttpSettings {
        endpoints,
        protect,
        identity: identity(file, source)?,
        cookie: match &file.token.cookie {
            // An empty name turns the cookie off: bearer tokens only.
            Some(name) if name.is_empty() => None,
            name => Some(CookieSettings {
                name: name.clone().unwrap_or_else(|| "otpgate_session".into()),
                secure: file.token.cookie_secure.unwrap_or(true),
            }),
        },
        body_limit: server.body_limit,
        paths,
        max_headers: positive("server.max_headers", &server.max_headers, source)?,
        max_header_bytes: positive("server.max_header_bytes", &server.max_header_bytes, source)?,
        trusted_proxies: server.trusted_proxies.clone(),
        ..defaults
    })
}

/// A header name as written, or `default`.
fn header(
    key: &str,
    value: &Option<Spanned<String>>,
    default: HeaderName,
    source: &Source<'_>,
) -> Result<HeaderName, ConfigError> {
    match value {
        Some(name) => header_name(key, name, source),
        None => Ok(default),
    }
}

fn header_name(
    key: &str,
    name: &Spanned<String>,
    source: &Source<'_>,
) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.get_ref().as_bytes()).map_err(|_| {
        source.invalid(
            key,
            Some(name.span()),
            format!("`{}` is not a valid header name", name.get_ref()),
        )
    })
}

/// `[identity]`: the headers the app learns who is calling from.
fn identity(file: &FileConfig, source: &Source<'_>) -> Result<IdentityHeaders, ConfigError> {
    let section = &file.identity;
    let defaults = IdentityHeaders::default();
    Ok(IdentityHeaders {
        jwt: header(
            "identity.jwt_header",
            &section.jwt_header,
            defaults.jwt,
            source,
        )?,
        subject: header(
            "identity.subject_header",
            &section.subject_header,
            defaults.subject,
            source,
        )?,
        email: header(
            "identity.email_header",
            &section.email_header,
            defaults.email,
            source,
        )?,
        phone: header(
            "identity.phone_header",
            &section.phone_header,
            defaults.phone,
            source,
        )?,
        tenant: header(
            "identity.tenant_header",
            &section.tenant_header,
            defaults.tenant,
            source,
        )?,
        strip: section.strip.clone().unwrap_or(defaults.strip),
        strip_reroute: section
            .strip_reroute_headers
            .unwrap_or(defaults.strip_reroute),
    })
}

/// One `[[endpoints]]` mount.
fn endpoint(section: &EndpointSection, source: &Source<'_>) -> Result<EndpointMount, ConfigError> {
    let dialect = section
        .dialect
        .get_ref()
        .parse()
        .map_err(|message: String| {
            source.invalid("endpoints.dialect", Some(section.dialect.span()), message)
        })?;
    let assertion_header = match &section.assertion_header {
        Some(name) => Some(header_name("endpoints.assertion_header", name, source)?),
        None => None,
    };
    Ok(EndpointMount {
        dialect,
        prefix: section.prefix.clone(),
        client_keys: section
            .client_keys
            .iter()
            .flatten()
            .map(|key| key.0.clone())
            .collect(),
        assertion_header,
    })
}

/// A protected prefix, which must be a canonical path: requests are compared in canonical
/// form, so `api/` or `/api//` would protect nothing.
fn protect_prefix(
    prefix: &Spanned<String>,
    paths: &PathPolicy,
    source: &Source<'_>,
) -> Result<String, ConfigError> {
    let text = prefix.get_ref();
    match paths.is_canonical_prefix(text) {
        true => Ok(text.clone()),
        false => Err(source.invalid(
            "protect.prefix",
            Some(prefix.span()),
            format!("`{text}` is not a canonical path; write it like \"/api/\""),
        )),
    }
}

/// A count that must be at least 1.
fn positive(key: &str, value: &Spanned<usize>, source: &Source<'_>) -> Result<usize, ConfigError> {
    match *value.get_ref() {
        0 => Err(source.invalid(key, Some(value.span()), "must be at least 1")),
        count => Ok(count),
    }
}
