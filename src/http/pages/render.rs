//! Drawing the pages: the minijinja templates (auto-escaped, embedded in the binary), the
//! tenant's branding and words, and the headers every page answer carries.

use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use minijinja::value::Value as TemplateValue;
use minijinja::{AutoEscape, Environment, ErrorKind, Output, State};
use serde_json::{Map, Value, json};

use super::PageSettings;
use super::branding::{self, Branding, Locale, Words};
use super::flow::random_token;
use super::texts::TEXTS;
use crate::gate::{DestinationRefusal, GateError};
use crate::http::GateResponse;
use crate::http::dialect::Context;
use crate::identifier::{Channel, InvalidIdentifier};

/// The templates. Names end in `.html`, which turns minijinja's HTML escaping on for
/// every value written.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_formatter(escape_html);
    for (name, source) in [
        ("base.html", include_str!("templates/base.html")),
        ("sign_in.html", include_str!("templates/sign_in.html")),
        ("code.html", include_str!("templates/code.html")),
        ("link.html", include_str!("templates/link.html")),
        ("sign_out.html", include_str!("templates/sign_out.html")),
        ("signed_out.html", include_str!("templates/signed_out.html")),
        ("message.html", include_str!("templates/message.html")),
        (
            "challenge_field.html",
            include_str!("templates/challenge_field.html"),
        ),
    ] {
        // Embedded and rendered by the tests: a mistake here fails them, not a request.
        if let Err(error) = env.add_template(name, source) {
            tracing::error!(template = name, %error, "a page template does not parse");
        }
    }
    env
});

/// HTML escaping of `&`, `<`, `>`, `"` and `'`: all an attribute or text needs. Unlike
/// minijinja's own, it leaves `/` alone, so paths and links read as written.
fn escape_html(
    out: &mut Output<'_>,
    state: &State<'_, '_>,
    value: &TemplateValue,
) -> Result<(), minijinja::Error> {
    let Some(text) = value.as_str().filter(|_| !value.is_safe()) else {
        return minijinja::escape_formatter(out, state, value);
    };
    if state.auto_escape() != AutoEscape::Html {
        return minijinja::escape_formatter(out, state, value);
    }
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#x27;"),
            c => escaped.push(c),
        }
    }
    out.write_str(&escaped)
        .map_err(|_| minijinja::Error::from(ErrorKind::WriteFailure))
}

/// Default colours: dark blue buttons on white, AA contrast both ways.
const DEFAULT_PRIMARY: &str = "#1d4ed8";
const DEFAULT_BACKGROUND: &str = "#ffffff";

/// What every page of one answer shares: the engine and settings, the tenant's branding
/// and words.
pub(crate) struct View<'a> {
    pub(crate) settings: &'a PageSettings,
    pub(crate) branding: Option<&'a Branding>,
    pub(crate) words: Words<'a>,
    /// The tenant, when its sends need a solved challenge: its pages run the script.
    pub(crate) challenge: Option<String>,
}

impl<'a> View<'a> {
    /// The view for `tenant` (the default one when `None`), in the tenant's language or
    /// else the first of the browser's that the pages have.
    pub(crate) fn new(
        ctx: &'a Context<'a>,
        settings: &'a PageSettings,
        headers: &HeaderMap,
        tenant: Option<&str>,
    ) -> View<'a> {
        let tenant = tenant.unwrap_or(ctx.gate.default_tenant());
        let branding = settings.branding.iter().find(|b| b.tenant == tenant);
        let locale = branding
            .and_then(|b| b.locale)
            .or_else(|| accepted_locale(headers))
            .unwrap_or_default();
        let required = ctx.gate.challenge_policy(Some(tenant));
        View {
            settings,
            branding,
            words: Words::new(locale, branding),
            challenge: required
                // The solver comes whenever challenges may be asked for: under attack, they
                // are asked for without notice.
                .is_ok_and(|policy| policy.mode != crate::gate::ChallengeMode::Never)
                .then(|| tenant.to_owned()),
        }
    }

    /// The pages' prefix, without a trailing slash.
    pub(crate) fn prefix(&self) -> &'a str {
        self.settings.prefix.trim_end_matches('/')
    }

    /// `template` drawn with `values` and the shared ones, with the page headers.
    pub(crate) fn render(&self, status: StatusCode, template: &str, values: Value) -> GateResponse {
        let nonce = random_token();
        let mut context = self.shared(&nonce);
        if let Value::Object(values) = values {
            context.extend(values);
        }
        let rendered = TEMPLATES
            .get_template(template)
            .and_then(|t| t.render(Value::Object(context)));
        let (status, body) = match rendered {
            Ok(body) => (status, body),
            Err(error) => {
                tracing::error!(template, %error, "a page could not be drawn");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "<!doctype html><title>Error</title><main><h1>Error</h1></main>".into(),
                )
            }
        };
        let mut response = GateResponse {
            status,
            headers: self.headers(&nonce),
            body: Bytes::from(body),
        };
        response.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        response
    }

    /// A `303 See Other` to `location`, with the page headers.
    pub(crate) fn redirect(&self, location: &str) -> GateResponse {
        let mut response = GateResponse {
            status: StatusCode::SEE_OTHER,
            headers: self.headers(&random_token()),
            body: Bytes::new(),
        };
        response.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        if let Ok(value) = HeaderValue::from_str(location) {
            response.headers.insert(header::LOCATION, value);
        }
        response
    }

    /// A page that only says something: a heading, the words in the alert, and a link.
    pub(crate) fn message(
        &self,
        status: StatusCode,
        heading: &str,
        text: &str,
        link: Option<(&str, String)>,
    ) -> GateResponse {
        let (href, label) = link.unzip();
        self.render(
            status,
            "message.html",
            json!({ "heading": heading, "error": text, "href": href, "link_text": label }),
        )
    }

    /// An engine refusal as a page of its own, with its status and `Retry-After`.
    pub(crate) fn refusal(&self, error: &GateError, link: Option<(&str, String)>) -> GateResponse {
        let heading = self.words.get("error_heading");
        let response = self.message(error.status(), &heading, &self.error_text(error), link);
        with_retry_after(response, error)
    }

    /// A refusal in words people read, never the engine's API message.
    pub(crate) fn error_text(&self, error: &GateError) -> String {
        error.log_if_unavailable();
        let words = &self.words;
        let key = match error {
            GateError::InvalidCode => "error_invalid_code",
            GateError::ChallengeRequired => "error_challenge_required",
            GateError::ChallengeInvalid => "error_challenge_invalid",
            GateError::TooManyAttempts { retry_after } => {
                let wait = words.wait(retry_after.as_millis().div_ceil(1000) as u64);
                return words.with("error_too_many_attempts", "wait", &wait);
            }
            GateError::RateLimited { retry_after } => {
                let wait = words.wait(retry_after.as_millis().div_ceil(1000) as u64);
                return words.with("resend_wait", "wait", &wait);
            }
            GateError::SendsThrottled { retry_after, .. } => {
                let wait = words.wait(retry_after.as_millis().div_ceil(1000) as u64);
                return words.with("error_sends_throttled", "wait", &wait);
            }
            GateError::DestinationRefused(DestinationRefusal::SmsCountry) => "error_sms_country",
            GateError::DestinationRefused(DestinationRefusal::NumberType) => "error_number_type",
            GateError::DestinationRefused(DestinationRefusal::EmailDomain) => "error_email_domain",
            GateError::InvalidIdentifier(InvalidIdentifier::Email) => "error_invalid_email",
            GateError::InvalidIdentifier(InvalidIdentifier::Phone) => "error_invalid_phone",
            GateError::ChannelDisabled(Channel::Email) => "error_email_disabled",
            GateError::ChannelDisabled(Channel::Sms) => "error_sms_disabled",
            GateError::UnknownTenant => "error_unknown_tenant",
            GateError::AccountNotFound => "error_account_not_found",
            GateError::UnsupportedMediaType => "error_media_type",
            GateError::MethodNotAllowed => "error_method",
            GateError::NotFound => "error_not_found",
            GateError::StoreUnavailable(_)
            | GateError::DirectoryUnavailable(_)
            | GateError::DeliveryUnavailable
            | GateError::NotReady { .. }
            | GateError::Internal(_)
            | GateError::UpstreamUnavailable
            | GateError::RequestFailed(_) => "error_unavailable",
            _ => "error_invalid_request",
        };
        words.get(key)
    }

    /// What every template gets: language, nonce, colours, logo, prefix and texts.
    fn shared(&self, nonce: &str) -> Map<String, Value> {
        let branding = self.branding;
        let color = |pick: fn(&Branding) -> Option<&String>, default: &'static str| {
            branding
                .and_then(pick)
                .map(String::as_str)
                .filter(|c| branding::is_color(c))
                .unwrap_or(default)
                .to_owned()
        };
        let primary = color(|b| b.primary_color.as_ref(), DEFAULT_PRIMARY);
        let background = color(|b| b.background_color.as_ref(), DEFAULT_BACKGROUND);
        let texts: Map<String, Value> = TEXTS
            .iter()
            .map(|(key, _, _)| ((*key).to_owned(), Value::from(self.words.get(key))))
            .collect();
        let brand = branding.and_then(|b| b.title.clone());
        let mut shared = Map::new();
        shared.insert("lang".into(), self.words.locale.as_str().into());
        shared.insert("nonce".into(), nonce.into());
        shared.insert(
            "title".into(),
            brand
                .clone()
                .unwrap_or_else(|| self.words.get("title"))
                .into(),
        );
        shared.insert("brand".into(), brand.into());
        shared.insert("logo_url".into(), self.logo_url().into());
        shared.insert("on_primary".into(), branding::readable_on(&primary).into());
        shared.insert("text".into(), branding::readable_on(&background).into());
        shared.insert("primary".into(), primary.into());
        shared.insert("background".into(), background.into());
        shared.insert("prefix".into(), self.prefix().into());
        shared.insert("challenge_tenant".into(), self.challenge.clone().into());
        shared.insert("t".into(), Value::Object(texts));
        shared
    }

    fn logo_url(&self) -> Option<&str> {
        self.branding
            .and_then(|b| b.logo_url.as_deref())
            .filter(|url| branding::is_logo_url(url))
    }

    /// The headers of every page answer.
    fn headers(&self, nonce: &str) -> HeaderMap {
        let mut img = String::from("'self'");
        if let Some(origin) = self.logo_url().and_then(branding::logo_origin) {
            img.push(' ');
            img.push_str(&origin);
        }
        // Chromium applies form-action to the redirect that follows a POST: the return
        // hosts must be named, or signing in would end on a blocked redirect.
        let mut form = String::from("'self'");
        for host in &self.settings.allowed_return_hosts {
            if !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            {
                form.push(' ');
                form.push_str(host);
            }
        }
        // Scripts only where the tenant requires a challenge: the gate's own script,
        // by this answer's nonce, and its fetch of a challenge from this origin.
        let script = match self.challenge {
            Some(_) => format!("script-src 'nonce-{nonce}'; connect-src 'self'; "),
            None => String::new(),
        };
        let csp = format!(
            "default-src 'none'; {script}style-src 'nonce-{nonce}'; img-src {img}; \
             form-action {form}; base-uri 'none'; frame-ancestors 'none'"
        );
        let mut headers = HeaderMap::new();
        let mut put = |name: HeaderName, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        };
        put(header::CONTENT_SECURITY_POLICY, &csp);
        // Codes, nonces and sessions in these answers: no cache keeps them.
        put(header::CACHE_CONTROL, "no-store");
        // No other site frames the forms (clickjacking), older browsers included.
        put(header::X_FRAME_OPTIONS, "DENY");
        // Return URLs and link codes in the address never leak to a logo host or the app.
        put(header::REFERRER_POLICY, "no-referrer");
        put(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        headers
    }
}

/// `response` with the `Retry-After` of `error`, where it has one.
pub(crate) fn with_retry_after(mut response: GateResponse, error: &GateError) -> GateResponse {
    if let Some(seconds) = error.retry_after_secs() {
        response
            .headers
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The first language of `Accept-Language` that the pages have.
fn accepted_locale(headers: &HeaderMap) -> Option<Locale> {
    headers
        .get_all(header::ACCEPT_LANGUAGE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|range| range.split(';').next())
        .find_map(|tag| Locale::from_tag(tag.trim()))
}
