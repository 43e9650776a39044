//! What the HTTP front is told: `[identity]`, `[paths]`, `[[protect]]`, `[pages]`,
//! `[[endpoints]]`,
//! the session cookie (`token.cookie`, `token.cookie_secure`) and the request limits of
//! `[server]`. All of it is plain values, so the checked model is [`HttpSettings`]
//! itself and there is nothing to build.

use http::HeaderName;
use toml::Spanned;

use super::schema::{EndpointSection, FileConfig, ProtectSection};
use super::{ConfigError, Source};
use crate::http::pages::{Branding, Locale, is_color, is_logo_url, is_text_key};
use crate::http::{
    CookieSettings, EndpointMount, HttpSettings, IdentityHeaders, PageSettings, PathPolicy,
    ProtectRule,
};
use crate::identifier::Identifier;

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
        .map(|section| protect_rule(file, section, &paths, source))
        .collect::<Result<Vec<_>, ConfigError>>()?;
    // A browser can only carry a session as a cookie: without one the pages would sign
    // people in to nothing. An API-only config (`token.cookie = ""`) has them off unless
    // it asks for them, and then it is told why it cannot.
    let cookie_off = file.token.cookie.as_deref() == Some("");
    let pages = match (file.pages.enabled, cookie_off) {
        (None, true) => None,
        (Some(true), true) => {
            return Err(source.invalid(
                "pages.enabled",
                None,
                "the sign-in pages need the session cookie, which token.cookie = \"\" turns \
                 off: name a cookie, or set [pages] enabled = false",
            ));
        }
        _ => pages(file, source)?,
    };
    let server = &file.server;
    Ok(HttpSettings {
        endpoints,
        protect,
        pages,
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

/// One `[[protect]]` rule.
fn protect_rule(
    file: &FileConfig,
    section: &ProtectSection,
    paths: &PathPolicy,
    source: &Source<'_>,
) -> Result<ProtectRule, ConfigError> {
    let mut rule = ProtectRule::prefix(&protect_prefix(&section.prefix, paths, source)?);
    for method in section.methods.iter().flatten() {
        let text = method.get_ref();
        // Only the standard methods, in capitals: `get` would be a method no client sends.
        let known = [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
        ];
        if !known.contains(&text.as_str()) {
            return Err(source.invalid(
                "protect.methods",
                Some(method.span()),
                format!("`{text}` is not an HTTP method; write e.g. \"GET\" or \"POST\""),
            ));
        }
        let parsed = http::Method::from_bytes(text.as_bytes())
            .map_err(|_| source.invalid("protect.methods", Some(method.span()), "not a method"))?;
        rule.methods.push(parsed);
    }
    let known_tenants = known_tenants(file);
    for tenant in section.tenants.iter().flatten() {
        if !known_tenants.contains(&tenant.get_ref().as_str()) {
            return Err(source.invalid(
                "protect.tenants",
                Some(tenant.span()),
                format!("no tenant `{}` is defined", tenant.get_ref()),
            ));
        }
        rule.tenants.push(tenant.get_ref().clone());
    }
    for email in section.emails.iter().flatten() {
        // Compared with the canonical email a token carries, so made canonical here too.
        let canonical = Identifier::email(email.get_ref()).map_err(|_| {
            source.invalid(
                "protect.emails",
                Some(email.span()),
                format!("`{}` is not an email address", email.get_ref()),
            )
        })?;
        rule.emails.push(canonical.as_str().to_owned());
    }
    for domain in section.email_domains.iter().flatten() {
        let text = domain.get_ref().trim_start_matches('@');
        let canonical = Identifier::email(&format!("user@{text}")).map_err(|_| {
            source.invalid(
                "protect.email_domains",
                Some(domain.span()),
                format!("`{}` is not an email domain", domain.get_ref()),
            )
        })?;
        let domain_part = canonical.as_str().rsplit_once('@').map_or("", |(_, d)| d);
        rule.email_domains.push(domain_part.to_owned());
    }
    for code in section.phone_countries.iter().flatten() {
        let calling_code = country_calling_code(code.get_ref()).ok_or_else(|| {
            source.invalid(
                "protect.phone_countries",
                Some(code.span()),
                format!(
                    "`{}` is neither a country calling code nor a region; write e.g. \"+44\" \
                     or \"GB\"",
                    code.get_ref()
                ),
            )
        })?;
        if !rule.phone_countries.contains(&calling_code) {
            rule.phone_countries.push(calling_code);
        }
    }
    rule.max_session_age = section.max_session_age.as_ref().map(|age| age.get_ref().0);
    Ok(rule)
}

/// The tenant ids a rule or a branding may name: those of `[[tenants]]`, or the default
/// tenant when there are none.
fn known_tenants(file: &FileConfig) -> Vec<&str> {
    match file.tenants.is_empty() {
        true => vec![file.server.default_tenant.get_ref().as_str()],
        false => file
            .tenants
            .iter()
            .map(|t| t.get_ref().id.get_ref().as_str())
            .collect(),
    }
}

/// The country calling code, as digits, of `text`: a calling code (`+44`, `44`) that the
/// numbering plan has, or a region (`GB`). A code the plan lacks (`+4`) is refused: as a
/// prefix it would admit every `+4x` country.
fn country_calling_code(text: &str) -> Option<String> {
    let database = &phonenumber::metadata::DATABASE;
    if text.len() == 2 && text.bytes().all(|b| b.is_ascii_alphabetic()) {
        let region = database.by_id(text.to_ascii_uppercase().as_str())?;
        return Some(region.country_code().to_string());
    }
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u16 = digits.parse().ok()?;
    // `044` would read as 44: only the code as written, without leading zeros.
    (code.to_string() == digits && database.by_code(&code).is_some()).then(|| code.to_string())
}

/// `[pages]`: the sign-in pages, their branding and forward-auth.
fn pages(file: &FileConfig, source: &Source<'_>) -> Result<Option<PageSettings>, ConfigError> {
    let section = &file.pages;
    if section.enabled == Some(false) {
        return Ok(None);
    }
    let defaults = PageSettings::default();
    let prefix = match &section.prefix {
        Some(prefix) => {
            let text = prefix.get_ref();
            let canonical = text.starts_with('/')
                && text.len() > 1
                && !text.ends_with('/')
                && PathPolicy::default().is_canonical_prefix(text);
            if !canonical {
                return Err(source.invalid(
                    "pages.prefix",
                    Some(prefix.span()),
                    format!("`{text}` is not a canonical path without a trailing slash; write it like \"/auth\""),
                ));
            }
            text.clone()
        }
        None => defaults.prefix,
    };
    let default_return = match &section.default_return {
        Some(path) => {
            // The fallback for a forged return URL must itself be safe.
            if crate::http::policy::safe_return(path.get_ref(), None, &[]).is_none() {
                return Err(source.invalid(
                    "pages.default_return",
                    Some(path.span()),
                    format!(
                        "`{}` is not a path on this site; write it like \"/\"",
                        path.get_ref()
                    ),
                ));
            }
            path.get_ref().clone()
        }
        None => defaults.default_return,
    };
    let public_url = match &section.public_url {
        Some(url) => {
            let text = url.get_ref().trim_end_matches('/');
            // Only an origin: links append `{prefix}/link?...` to it.
            let origin = text
                .strip_prefix("https://")
                .or_else(|| text.strip_prefix("http://"))
                .is_some_and(|authority| {
                    !authority.is_empty()
                        && authority
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
                });
            if !origin {
                return Err(source.invalid(
                    "pages.public_url",
                    Some(url.span()),
                    format!(
                        "`{}` is not an origin; write it like \"https://app.example.com\"",
                        url.get_ref()
                    ),
                ));
            }
            Some(text.to_owned())
        }
        None => None,
    };
    let sign_in_links = section
        .sign_in_links
        .as_ref()
        .map_or(defaults.sign_in_links, |on| *on.get_ref());
    if let (Some(on), None) = (&section.sign_in_links, &public_url)
        && *on.get_ref()
    {
        // The link's host must come from here: taken from the request's Host header, a
        // forged one would receive the code.
        return Err(source.invalid(
            "pages.sign_in_links",
            Some(on.span()),
            "sign-in links need `pages.public_url`, the site's own address, to start with",
        ));
    }
    let known_tenants = known_tenants(file);
    let mut branding: Vec<Branding> = Vec::new();
    for brand in &section.branding {
        let tenant = brand.tenant.get_ref();
        if !known_tenants.contains(&tenant.as_str()) {
            return Err(source.invalid(
                "pages.branding.tenant",
                Some(brand.tenant.span()),
                format!("no tenant `{tenant}` is defined"),
            ));
        }
        if branding.iter().any(|b| &b.tenant == tenant) {
            return Err(source.invalid(
                "pages.branding.tenant",
                Some(brand.tenant.span()),
                format!("tenant `{tenant}` is branded twice"),
            ));
        }
        // Colours are written into the pages' CSS: anything but plain hex could inject rules.
        let color = |key: &str, value: &Option<Spanned<String>>| match value {
            Some(color) if !is_color(color.get_ref()) => Err(source.invalid(
                key,
                Some(color.span()),
                format!(
                    "`{}` is not a colour; write it like \"#1d4ed8\"",
                    color.get_ref()
                ),
            )),
            value => Ok(value.as_ref().map(|c| c.get_ref().clone())),
        };
        let primary_color = color("pages.branding.primary_color", &brand.primary_color)?;
        let background_color = color("pages.branding.background_color", &brand.background_color)?;
        if let Some(logo) = &brand.logo_url
            && !is_logo_url(logo.get_ref())
        {
            return Err(source.invalid(
                "pages.branding.logo_url",
                Some(logo.span()),
                format!(
                    "`{}` is neither an https:// address nor a path on this site",
                    logo.get_ref()
                ),
            ));
        }
        let locale = match &brand.locale {
            Some(tag) => match tag.get_ref().as_str() {
                "en" => Some(Locale::En),
                "fr" => Some(Locale::Fr),
                other => {
                    return Err(source.invalid(
                        "pages.branding.locale",
                        Some(tag.span()),
                        format!("the pages have no `{other}` texts; write \"en\" or \"fr\""),
                    ));
                }
            },
            None => None,
        };
        if let Some(texts) = &brand.texts
            && let Some(unknown) = texts.get_ref().keys().find(|key| !is_text_key(key))
        {
            return Err(source.invalid(
                "pages.branding.texts",
                Some(texts.span()),
                format!("the pages have no text `{unknown}`"),
            ));
        }
        branding.push(Branding {
            tenant: tenant.clone(),
            title: brand.title.clone(),
            logo_url: brand.logo_url.as_ref().map(|l| l.get_ref().clone()),
            primary_color,
            background_color,
            locale,
            texts: brand
                .texts
                .as_ref()
                .map(|t| t.get_ref().clone())
                .unwrap_or_default(),
        });
    }
    Ok(Some(PageSettings {
        prefix,
        default_return,
        allowed_return_hosts: section
            .allowed_return_hosts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|host| host.to_ascii_lowercase())
            .collect(),
        sign_in_links,
        flow_ttl: section
            .flow_ttl
            .as_ref()
            .map_or(defaults.flow_ttl, |ttl| ttl.get_ref().0),
        public_url,
        branding,
        forward_auth: section.forward_auth.unwrap_or(defaults.forward_auth),
    }))
}

/// A count that must be at least 1.
fn positive(key: &str, value: &Spanned<usize>, source: &Source<'_>) -> Result<usize, ConfigError> {
    match *value.get_ref() {
        0 => Err(source.invalid(key, Some(value.span()), "must be at least 1")),
        count => Ok(count),
    }
}

#[cfg(test)]
mod tests {
    use super::country_calling_code;

    #[test]
    fn phone_countries_are_calling_codes_or_regions_the_plan_has() {
        for (written, code) in [
            ("+44", "44"),
            ("44", "44"),
            ("GB", "44"),
            ("us", "1"),
            ("+1", "1"),
        ] {
            assert_eq!(
                country_calling_code(written).as_deref(),
                Some(code),
                "{written}"
            );
        }
        for bad in [
            "+4", "0044", "044", "+999", "", "+", "XX", "GBR", "4a", "+44 ",
        ] {
            assert_eq!(country_calling_code(bad), None, "{bad:?}");
        }
    }
}
