//! Request parsing the dialects share: JSON bodies, destinations, query parameters,
//! content types and the message language.

use http::HeaderMap;
use serde::Deserialize;

use crate::gate::{GateError, SendOptions, SendOutcome, SendRequest, VerifyRequest};
use crate::http::RequestView;
use crate::identifier::Identifier;

/// Where a code goes, as the JSON dialects spell it: `email` or `phone`, and optionally
/// the tenant and the message language.
#[derive(Deserialize)]
pub(crate) struct Destination {
    #[serde(default)]
    pub(crate) email: Option<String>,
    #[serde(default)]
    pub(crate) phone: Option<String>,
    #[serde(default)]
    pub(crate) tenant: Option<String>,
    #[serde(default)]
    pub(crate) locale: Option<String>,
}

/// A verify body: a destination and the code.
#[derive(Deserialize)]
pub(crate) struct VerifyBody {
    #[serde(flatten)]
    pub(crate) destination: Destination,
    pub(crate) code: Option<String>,
}

/// A JSON body, or a 400 that says where it went wrong.
pub(crate) fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, GateError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_data() {
            "unexpected field type"
        } else {
            "malformed JSON"
        };
        GateError::InvalidRequest(format!("{what} at line {} column {}", e.line(), e.column()))
    })
}

/// The one destination a request names.
pub(crate) fn identifier(destination: &Destination) -> Result<Identifier, GateError> {
    match (&destination.email, &destination.phone) {
        (Some(email), None) => Ok(Identifier::email(email)?),
        (None, Some(phone)) => Ok(Identifier::phone(phone)?),
        (Some(_), Some(_)) => Err(GateError::InvalidRequest(
            "send either email or phone, not both".into(),
        )),
        (None, None) => Err(GateError::InvalidRequest(
            "email or phone is required".into(),
        )),
    }
}

impl Destination {
    /// The engine's send request for this destination, in `tenant` (the body's own
    /// `tenant` unless the dialect names it elsewhere).
    pub(crate) fn send_request<'a>(
        &'a self,
        tenant: Option<&'a str>,
        request: &'a RequestView<'_>,
    ) -> Result<SendRequest<'a>, GateError> {
        Ok(SendRequest {
            tenant,
            identifier: identifier(self)?,
            client_ip: request.client_ip,
            locale: request_locale(self.locale.as_deref(), request.headers),
        })
    }
}

impl VerifyBody {
    /// The engine's verify request for this body, in `tenant`.
    pub(crate) fn verify_request<'a>(
        &'a self,
        tenant: Option<&'a str>,
        request: &RequestView<'_>,
    ) -> Result<VerifyRequest<'a>, GateError> {
        let code = self
            .code
            .as_deref()
            .ok_or_else(|| GateError::InvalidRequest("code is required".into()))?;
        Ok(VerifyRequest {
            tenant,
            identifier: identifier(&self.destination)?,
            code,
            client_ip: request.client_ip,
        })
    }
}

/// The header a client sends its solved proof-of-work challenge in, in every dialect.
pub(crate) const CHALLENGE_HEADER: &str = "x-otpgate-challenge";

/// The send options a request carries: its solved challenge, from
/// [`CHALLENGE_HEADER`]. A header that is not text counts as a wrong challenge, not as
/// none, so that a tenant requiring one answers `challenge_invalid`.
pub(crate) fn send_options<'a>(request: &'a RequestView<'_>) -> SendOptions<'a> {
    SendOptions {
        challenge: request
            .headers
            .get(CHALLENGE_HEADER)
            .map(|value| value.to_str().unwrap_or("")),
        ..SendOptions::default()
    }
}

/// The JSON dialects' answer to a send: the same words whether or not the account
/// exists, with `accountExists` only where the tenant reveals it.
pub(crate) fn sent_answer(outcome: SendOutcome) -> serde_json::Value {
    let mut answer = serde_json::json!({ "message": "OTP sent successfully" });
    if let Some(exists) = outcome.account_exists {
        answer["accountExists"] = exists.into();
    }
    answer
}

/// The decoded pairs of a query string.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The one value of `name` in a query; `Err` when it appears more than once, which is
/// refused rather than guessed at.
pub(crate) fn query_value<'a>(
    pairs: &'a [(String, String)],
    name: &str,
) -> Result<Option<&'a str>, GateError> {
    let mut values = pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str());
    let first = values.next();
    if values.next().is_some() {
        return Err(GateError::InvalidRequest(format!(
            "`{name}` is given more than once"
        )));
    }
    Ok(first)
}

/// The locale a request asks for: the explicit one, else the first `Accept-Language`
/// tag; only well-formed tags (`fr`, `pt-BR`) count.
pub(crate) fn request_locale<'a>(
    explicit: Option<&'a str>,
    headers: &'a HeaderMap,
) -> Option<&'a str> {
    let well_formed = |tag: &str| {
        (2..=35).contains(&tag.len())
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    explicit.filter(|t| well_formed(t)).or_else(|| {
        headers
            .get(http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split([',', ';']).next())
            .map(str::trim)
            .filter(|t| well_formed(t))
    })
}

/// Whether the body is declared JSON (`application/json` or a `+json` type).
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            // application/json, or a structured-syntax type such as application/vnd.x+json.
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use http::header::HeaderValue;

    use super::is_json;

    #[test]
    fn json_content_types() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        for (value, expected) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/vnd.api+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("+json", false),
        ] {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json(&headers), expected, "{value}");
        }
    }
}
