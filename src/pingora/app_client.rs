//! [`AppClient`]: how the gate itself sends the app a request whose answer it must read
//! (a mediated route, the baanx login). One HTTP client, made once per filter and shared
//! by its clones, under the [`UpstreamTimeouts`].

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};

use super::{Upstream, UpstreamTimeouts};
use crate::error::GateError;
use crate::http::{GateResponse, MEDIATED_RESPONSE_LIMIT, remove_hop_by_hop};

/// The app behind the gate, and the one client the gate reaches it with.
#[derive(Clone, Debug)]
pub(super) struct AppClient {
    upstream: Upstream,
    // `None` when the client could not be made; mediated routes then answer 502.
    client: Option<reqwest::Client>,
}

impl AppClient {
    /// A client for `upstream` under `timeouts`.
    pub(super) fn new(upstream: Upstream, timeouts: UpstreamTimeouts) -> AppClient {
        let client = reqwest::Client::builder()
            // The app's redirect is the client's to follow, not the gate's.
            .redirect(reqwest::redirect::Policy::none())
            // A login carries a password: it goes to the app and nowhere else, whatever
            // HTTP_PROXY says in the environment.
            .no_proxy()
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.read)
            .build()
            .inspect_err(|error| {
                tracing::error!(%error, "cannot make the HTTP client for mediated routes; they will answer 502");
            })
            .ok();
        AppClient { upstream, client }
    }

    /// The app.
    pub(super) fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Sends the app `method` `target` (origin form) with `headers`, `extra` set on top,
    /// and `body`; returns its answer, read up to [`MEDIATED_RESPONSE_LIMIT`].
    /// `headers` are the client's after the front's plan (identity headers stripped,
    /// `X-Forwarded-For` set), as on every request that reaches the app.
    pub(super) async fn send(
        &self,
        method: Method,
        target: &str,
        mut headers: HeaderMap,
        extra: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<GateResponse, GateError> {
        let client = self.client.as_ref().ok_or(GateError::UpstreamUnavailable)?;
        // They described the client's connection, not this one; the body is framed anew.
        remove_hop_by_hop(&mut headers);
        for (name, value) in extra {
            headers.insert(name, value);
        }
        let url = format!("http://{}{}", self.upstream.addr, target);
        let mut response = client
            .request(method, url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(unavailable)?;
        // Refused before a byte is read: nothing is buffered for an answer that will not fit.
        if response
            .content_length()
            .is_some_and(|length| length > MEDIATED_RESPONSE_LIMIT as u64)
        {
            return Err(too_large());
        }
        let status = response.status();
        let mut headers = std::mem::take(response.headers_mut());
        remove_hop_by_hop(&mut headers);
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
            if body.len() + chunk.len() > MEDIATED_RESPONSE_LIMIT {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(GateResponse {
            status,
            headers,
            body: body.freeze(),
        })
    }
}

fn unavailable(error: reqwest::Error) -> GateError {
    // Without the URL: its query string may carry what the logs never do.
    tracing::warn!(error = %error.without_url(), "the app did not answer a mediated request");
    GateError::UpstreamUnavailable
}

fn too_large() -> GateError {
    tracing::warn!(
        limit = MEDIATED_RESPONSE_LIMIT,
        "the app's answer to a mediated request is over the limit"
    );
    GateError::UpstreamUnavailable
}
