//! Forward-auth: `GET {prefix}/check`, asked by a proxy the team already runs (nginx
//! `auth_request`, Caddy `forward_auth`, Traefik `ForwardAuth`) before it forwards a
//! request. The request it describes is judged exactly as the gate's own proxy would
//! judge it: one canonical target, one route, one policy.

use http::header::HeaderValue;
use http::{HeaderMap, Method, StatusCode};

use super::access::see_other;
use super::front::{Front, refusal};
use super::headers::push_identity_headers;
use super::{Dialect, GateResponse, RequestView, Route, policy};
use crate::gate::GateError;

/// Carries the sign-in page's address on a 401 to nginx, whose `auth_request` can only
/// pass on 401 and 403: its `error_page 401` turns it into the redirect.
pub const SIGN_IN_HEADER: &str = "x-otpgate-sign-in";

/// Answers a forward-auth check: 200 with the identity headers to copy onto the request,
/// 401 (or, for a browser navigation behind Caddy or Traefik, a 303 to the sign-in page),
/// or 403 for a request the gate refuses outright.
pub(super) async fn check(front: &Front, request: &RequestView<'_>) -> GateResponse {
    let answer = judge(front, request).await;
    let mut response = match answer {
        Ok(response) => response,
        Err(error) => deny(&error),
    };
    // A verdict about one request's credentials is never reused for another.
    response.headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

async fn judge(front: &Front, request: &RequestView<'_>) -> Result<GateResponse, GateError> {
    // Only a proxy the gate trusts may describe a request: anyone else could ask about
    // any path with any method and learn the policy, or a proxy's verdict could be forged.
    if !request
        .peer
        .is_some_and(|peer| front.is_trusted_proxy(&peer))
    {
        return Err(GateError::Forbidden(
            "forward-auth answers only the proxies in server.trusted_proxies",
        ));
    }
    let headers = request.headers;
    let (method, uri, from_nginx) = original_request(headers)?;
    let target = front
        .canonical_target(&method, uri.as_bytes())
        .map_err(|_| {
            GateError::InvalidPath("the forwarded URI cannot be read one way only".into())
        })?;
    let rule = match front.route(&method, &target) {
        Route::Upstream { rule } => rule,
        // A path of the gate's own endpoints that the proxy asks about is one it is about
        // to send to the app, not to the gate: it gets the app's rules, never a pass.
        Route::Endpoint(_) | Route::Mediated(_) => {
            let settings = front.settings();
            policy::rule_for(
                &settings.protect,
                &method,
                target.match_path(),
                settings.paths.case_sensitive,
            )
        }
    };
    let identity = match front.judge(headers, rule).await {
        Ok(identity) => identity,
        Err(error) => {
            let return_to = target.to_origin_form();
            return Err(
                match front.sign_in_location(&error, &method, headers, &return_to, rule) {
                    // nginx cannot pass a 303 through auth_request: it gets the address on
                    // the 401 and redirects itself.
                    Some(location) if from_nginx => {
                        return Ok(sign_in_for_nginx(&error, &location));
                    }
                    Some(location) => return Ok(see_other(&location)),
                    None => error,
                },
            );
        }
    };
    let mut response = GateResponse::json(StatusCode::OK, &serde_json::json!({"status": "ok"}));
    if let Some(identity) = &identity {
        let mut headers = Vec::new();
        push_identity_headers(&front.settings().identity, identity, &mut headers);
        for (name, value) in headers {
            response.headers.insert(name, value);
        }
    }
    Ok(response)
}

/// The method and target of the request being judged, and whether they came the nginx
/// way (`X-Original-URI` and `X-Original-Method`) rather than the Caddy and Traefik way
/// (`X-Forwarded-Uri` and `X-Forwarded-Method`). The proxy sets its own pair and passes
/// the client's other headers through, so the pair must be whole and the other absent:
/// a client's `X-Forwarded-Method: GET` beside nginx's `X-Original-Method: POST` would
/// otherwise be a second opinion on the method.
fn original_request(headers: &HeaderMap) -> Result<(Method, String, bool), GateError> {
    let forwarded = (
        one_header(headers, "x-forwarded-method")?,
        one_header(headers, "x-forwarded-uri")?,
    );
    let original = (
        one_header(headers, "x-original-method")?,
        one_header(headers, "x-original-uri")?,
    );
    let (method, uri, from_nginx) = match (forwarded, original) {
        ((Some(method), Some(uri)), (None, None)) => (method, uri, false),
        ((None, None), (Some(method), Some(uri))) => (method, uri, true),
        ((None, None), (None, None)) => {
            return Err(GateError::InvalidRequest(
                "forward-auth needs X-Forwarded-Method and X-Forwarded-Uri \
                 (or X-Original-Method and X-Original-URI)"
                    .into(),
            ));
        }
        _ => {
            return Err(GateError::InvalidRequest(
                "send X-Forwarded-Method and X-Forwarded-Uri, or X-Original-Method and \
                 X-Original-URI: one pair, whole"
                    .into(),
            ));
        }
    };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| GateError::InvalidRequest("the forwarded method is not a method".into()))?;
    Ok((method, uri, from_nginx))
}

/// The one value of header `name`, if sent; a header sent twice is refused, since the
/// gate and the proxy could each read a different one.
fn one_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, GateError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(GateError::InvalidRequest(format!(
            "more than one {name} header"
        )));
    }
    let value = value
        .to_str()
        .map_err(|_| GateError::InvalidRequest(format!("{name} is not readable text")))?;
    Ok(Some(value.to_owned()))
}

/// A refusal as a forward-auth answer. nginx's `auth_request` turns any status but 2xx,
/// 401 and 403 into a 500, so every other refusal of a client's request is answered 403
/// (with its own error code); an unavailable store stays 503: no verdict was reached.
fn deny(error: &GateError) -> GateResponse {
    let mut response = refusal(Dialect::Generic, error);
    if response.status.is_client_error() && response.status != StatusCode::UNAUTHORIZED {
        response.status = StatusCode::FORBIDDEN;
    }
    response
}

/// nginx's answer for a browser that must sign in: 401, with where to sign in.
fn sign_in_for_nginx(error: &GateError, location: &str) -> GateResponse {
    let mut response = refusal(Dialect::Generic, error);
    if let Ok(value) = HeaderValue::from_str(location) {
        response
            .headers
            .insert(http::HeaderName::from_static(SIGN_IN_HEADER), value);
    }
    response
}
