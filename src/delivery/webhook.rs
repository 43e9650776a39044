use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::hmac;

use super::{DeliveryError, Message, Sender, WebhookPayload, scrub};

/// POSTs each message as JSON to a URL, with a timeout. Retries and failover are the
/// outbox's: a 5xx, 408, 429 or unreachable receiver is a [`DeliveryError::Failed`]
/// (worth another try), any other answer a [`DeliveryError::Rejected`].
///
/// The body is `{"channel", "to", "code", "tenant", "message", "expires_in"}`. With a
/// signing secret, `X-Otpgate-Signature: sha256=<hex HMAC of the body>` lets the
/// receiver check that the gate sent it.
#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    url: reqwest::Url,
    signing_key: Option<hmac::Key>,
}

impl WebhookSender {
    /// A sender to `url` with a 5 s timeout.
    pub fn new(url: reqwest::Url) -> WebhookSender {
        WebhookSender {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            url,
            signing_key: None,
        }
    }

    /// Per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        self
    }

    /// Signs each body with HMAC-SHA256 under `secret`.
    pub fn signing_secret(mut self, secret: &[u8]) -> Self {
        self.signing_key = Some(hmac::Key::new(hmac::HMAC_SHA256, secret));
        self
    }

    /// One POST; on failure, whether it is worth another try and why, the receiver's
    /// words unscrubbed.
    async fn attempt(&self, body: &[u8]) -> Result<(), (bool, String)> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(key) = &self.signing_key {
            let tag = hmac::sign(key, body);
            let hex = crate::util::hex(tag.as_ref());
            request = request.header("X-Otpgate-Signature", format!("sha256={hex}"));
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => {
                let status = response.status();
                // 5xx, 408 and 429 are worth another try; other 4xx will not change.
                let retryable = status.is_server_error()
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
                let answer = scrub::read_answer(response).await;
                let answer = answer.trim();
                let reason = if answer.is_empty() {
                    format!("webhook answered {status}")
                } else {
                    format!("webhook answered {status}: {answer}")
                };
                Err((retryable, reason))
            }
            Err(error) => Err((
                true,
                format!("webhook unreachable: {}", error.without_url()),
            )),
        }
    }
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Sender for WebhookSender {
    fn provider(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        let body = zeroize::Zeroizing::new(
            serde_json::to_vec(&WebhookPayload::from(message))
                .map_err(|e| DeliveryError::Rejected(e.to_string()))?,
        );
        match self.attempt(&body).await {
            Ok(()) => Ok(()),
            // The receiver may echo what it was sent (the destination, the code): both
            // leave here masked.
            Err((retryable, reason)) => {
                let reason = scrub::provider_text(&reason, message);
                if retryable {
                    Err(DeliveryError::Failed(reason))
                } else {
                    Err(DeliveryError::Rejected(reason))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::Router;
    use axum::body::Bytes;
    use axum::http::StatusCode;
    use axum::routing::post;
    use tokio::sync::mpsc;

    use super::*;
    use crate::delivery::{Link, Rendered};
    use crate::identifier::Identifier;
    use crate::otp::CodeFormat;

    fn message(to: Identifier, link: bool) -> Message {
        let code = CodeFormat::default().normalize("482913");
        Message {
            to,
            link: link.then(|| Link::new("https://app.example/sign-in?code=", &code)),
            code,
            tenant: "default".into(),
            expires_in: Duration::from_secs(300),
            content: Rendered::default(),
        }
    }

    /// A receiver on a free loopback port that answers `status` with the body it got, and
    /// hands each body to the test. Stopped when the test's runtime ends.
    async fn receiver(status: StatusCode) -> (reqwest::Url, mpsc::UnboundedReceiver<Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let tx = Arc::new(tx);
        let app = Router::new().route(
            "/hook",
            post(move |body: Bytes| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(body.clone());
                    (status, body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{addr}/hook").parse().unwrap();
        (url, rx)
    }

    async fn body(rx: &mut mpsc::UnboundedReceiver<Bytes>) -> serde_json::Value {
        let bytes = rx.recv().await.expect("the receiver got a body");
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn the_body_has_a_link_only_when_the_message_does() {
        let (url, mut bodies) = receiver(StatusCode::OK).await;
        let sender = WebhookSender::new(url);
        let email = Identifier::email("ada@example.com").unwrap();

        sender.send(&message(email.clone(), true)).await.unwrap();
        let with = body(&mut bodies).await;
        assert_eq!(with["link"], "https://app.example/sign-in?code=482913");
        assert_eq!(with["code"], "482913");

        sender.send(&message(email, false)).await.unwrap();
        let without = body(&mut bodies).await;
        assert!(without.get("link").is_none(), "{without}");
        assert_eq!(without["code"], "482913");
    }

    #[tokio::test]
    async fn an_echoed_link_leaves_the_error_masked() {
        let (url, _bodies) = receiver(StatusCode::BAD_REQUEST).await;
        let sender = WebhookSender::new(url);
        let to = Identifier::email("ada@example.com").unwrap();
        let error = sender
            .send(&message(to, true))
            .await
            .expect_err("a 400 is refused")
            .to_string();
        assert!(error.contains("400"), "{error}");
        for secret in ["482913", "sign-in?code", "ada@example.com"] {
            assert!(!error.contains(secret), "{secret} in {error}");
        }
    }
}
