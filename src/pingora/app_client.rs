//! [`AppClient`]: how the gate itself sends the app a request whose answer it must read
//! (a mediated route, the baanx login). One HTTP client, made once per filter and shared
//! by its clones, under the [`UpstreamTimeouts`].

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};

use super::{Upstream, UpstreamTimeouts};
use crate::gate::GateError;
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
        let mut builder = reqwest::Client::builder();
        if let Some(tls) = &upstream.tls {
            // The same trust as the proxied requests: only the configured CAs when a CA
            // file is given, else the system's roots; the name verified is the host.
            if let Some(roots) = tls.client_roots() {
                builder = builder.tls_certs_only(roots);
            }
            // The host's address is the proxy's lookup, not reqwest's own.
            builder = builder.dns_resolver(CurrentAddr(upstream.clone()));
        }
        let client = builder
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
        let Some(client) = self.client.as_ref() else {
            crate::metrics::upstream_error("other");
            return Err(GateError::UpstreamUnavailable);
        };
        // They described the client's connection, not this one; the body is framed anew.
        remove_hop_by_hop(&mut headers);
        for (name, value) in extra {
            headers.insert(name, value);
        }
        // The address the proxied requests go to, not a lookup of reqwest's own: a mediated
        // login reaches the same app as every other request, under the same DNS policy.
        self.upstream.start_resolving();
        let Some(addr) = self.upstream.current() else {
            // Not resolved yet: the app cannot be reached, as when it is down.
            crate::metrics::upstream_error("connect");
            return Err(GateError::UpstreamUnavailable);
        };
        let url = if self.upstream.tls.is_some() {
            // By name, so that the certificate is verified for it; the name resolves to
            // `addr` (CurrentAddr).
            format!("https://{}{target}", self.upstream)
        } else {
            format!("http://{addr}{target}")
        };
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

/// Resolves the upstream's host to the address the proxy uses now.
struct CurrentAddr(Upstream);

impl reqwest::dns::Resolve for CurrentAddr {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addr = self.0.current();
        Box::pin(async move {
            let addr = addr.ok_or("the upstream has not resolved yet")?;
            Ok(Box::new(std::iter::once(addr)) as reqwest::dns::Addrs)
        })
    }
}

fn unavailable(error: reqwest::Error) -> GateError {
    // Without the URL: its query string may carry what the logs never do.
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "other"
    };
    crate::metrics::upstream_error(kind);
    tracing::warn!(error = %error.without_url(), "the app did not answer a mediated request");
    GateError::UpstreamUnavailable
}

fn too_large() -> GateError {
    crate::metrics::upstream_error("other");
    tracing::warn!(
        limit = MEDIATED_RESPONSE_LIMIT,
        "the app's answer to a mediated request is over the limit"
    );
    GateError::UpstreamUnavailable
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// An app on a loopback port that answers one request with `answer` (none: it never
    /// answers) and hands back the request head it read, in lower case.
    async fn one_shot_app(answer: Option<Vec<u8>>) -> (Upstream, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            match answer {
                // The client may hang up before all of it is written.
                Some(answer) => drop(stream.write_all(&answer).await),
                None => tokio::time::sleep(Duration::from_secs(30)).await,
            }
            String::from_utf8_lossy(&head).to_lowercase()
        });
        let upstream = Upstream::at(addr);
        (upstream, app)
    }

    fn client_for(upstream: Upstream) -> AppClient {
        AppClient::new(
            upstream,
            UpstreamTimeouts {
                connect: Duration::from_secs(1),
                read: Duration::from_millis(300),
            },
        )
    }

    fn header(value: &'static str) -> HeaderValue {
        HeaderValue::from_static(value)
    }

    #[tokio::test]
    async fn hop_by_hop_headers_pass_neither_way_and_the_extra_headers_are_set() {
        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                      connection: close, x-app-private\r\nx-app-private: 1\r\n\
                      keep-alive: timeout=5\r\ncontent-length: 2\r\n\r\n{}";
        let (upstream, app) = one_shot_app(Some(answer.as_bytes().to_vec())).await;
        let mut headers = HeaderMap::new();
        headers.insert("connection", header("keep-alive, x-private, x-assertion"));
        headers.insert("x-private", header("1"));
        headers.insert("keep-alive", header("timeout=5"));
        headers.insert("te", header("trailers"));
        headers.insert("x-forwarded-for", header("192.0.2.7"));
        let extra = vec![(HeaderName::from_static("x-assertion"), header("signed"))];
        let response = client_for(upstream)
            .send(
                Method::POST,
                "/login?next=%2F",
                headers,
                extra,
                Bytes::from_static(b"{}"),
            )
            .await
            .unwrap();

        let head = app.await.unwrap();
        assert!(
            head.starts_with("post /login?next=%2f http/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains("\r\nx-forwarded-for: 192.0.2.7\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nx-assertion: signed\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-length: 2\r\n"), "{head}");
        for gone in ["x-private", "keep-alive", "te:", "connection: keep-alive"] {
            assert!(!head.contains(gone), "{gone} reached the app: {head}");
        }
        assert_eq!(response.status, http::StatusCode::OK);
        assert_eq!(response.body, Bytes::from_static(b"{}"));
        assert_eq!(response.headers["content-type"], "application/json");
        for gone in [
            "connection",
            "x-app-private",
            "keep-alive",
            "content-length",
        ] {
            assert!(!response.headers.contains_key(gone), "{gone} came back");
        }
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_not_read() {
        let declared = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            MEDIATED_RESPONSE_LIMIT + 1
        );
        let mut chunked = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
            MEDIATED_RESPONSE_LIMIT + 1
        )
        .into_bytes();
        chunked.extend(std::iter::repeat_n(b'x', MEDIATED_RESPONSE_LIMIT + 1));
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        for answer in [declared.into_bytes(), chunked] {
            let (upstream, _app) = one_shot_app(Some(answer)).await;
            let sent = client_for(upstream)
                .send(Method::GET, "/", HeaderMap::new(), Vec::new(), Bytes::new())
                .await;
            assert!(
                matches!(sent, Err(GateError::UpstreamUnavailable)),
                "{sent:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_app_that_does_not_answer_is_given_up_after_the_read_timeout() {
        let (upstream, _app) = one_shot_app(None).await;
        let started = std::time::Instant::now();
        let sent = client_for(upstream)
            .send(Method::GET, "/", HeaderMap::new(), Vec::new(), Bytes::new())
            .await;
        assert!(
            matches!(sent, Err(GateError::UpstreamUnavailable)),
            "{sent:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_host_name_that_has_not_resolved_yet_is_unavailable_at_once() {
        let upstream = Upstream::named("nonexistent.invalid", 3000, Duration::from_secs(3600));
        let started = std::time::Instant::now();
        let sent = client_for(upstream)
            .send(Method::GET, "/", HeaderMap::new(), Vec::new(), Bytes::new())
            .await;
        assert!(
            matches!(sent, Err(GateError::UpstreamUnavailable)),
            "{sent:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
