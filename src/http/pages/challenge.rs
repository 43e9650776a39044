//! The sign-in pages' proof-of-work script, `{prefix}/challenge.js`: served by the gate
//! itself (no third party), it fetches a challenge from `{prefix}/challenge`, solves it
//! with Web Crypto and fills the form's `challenge` field.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, StatusCode};

use crate::http::GateResponse;

const SCRIPT: &str = include_str!("templates/challenge.js");

/// The script, cacheable: it holds nothing per request.
pub(crate) fn script() -> GateResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    GateResponse {
        status: StatusCode::OK,
        headers,
        body: Bytes::from_static(SCRIPT.as_bytes()),
    }
}
