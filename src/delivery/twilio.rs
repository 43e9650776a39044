use std::time::Duration;

use async_trait::async_trait;

use super::{DeliveryError, Message, Sender, scrub};

/// Sends SMS through a Twilio-compatible Messages API:
/// `POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json`, a form with `To`, `Body` and
/// `From` or `MessagingServiceSid`, HTTP basic auth with the account SID and auth token.
pub struct TwilioSender {
    client: reqwest::Client,
    url: reqwest::Url,
    account_sid: String,
    auth_token: String,
    sender: TwilioFrom,
}

/// Who an SMS comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TwilioFrom {
    /// A phone number or alphanumeric sender id (`From`).
    Number(String),
    /// A messaging service (`MessagingServiceSid`), which picks the number itself.
    MessagingService(String),
}

impl TwilioSender {
    /// The public API endpoint.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.twilio.com";

    /// A sender for `account_sid` at `base_url` (the public API or a compatible one).
    pub fn new(
        base_url: &str,
        account_sid: &str,
        auth_token: &str,
        sender: TwilioFrom,
        timeout: Duration,
    ) -> Result<TwilioSender, DeliveryError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            base_url.trim_end_matches('/'),
            account_sid
        )
        .parse()
        .map_err(|e| DeliveryError::Rejected(format!("Twilio URL: {e}")))?;
        Ok(TwilioSender {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_default(),
            url,
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            sender,
        })
    }
}

impl std::fmt::Debug for TwilioSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioSender")
            .field("url", &self.url.as_str())
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Sender for TwilioSender {
    fn provider(&self) -> &'static str {
        "twilio"
    }

    async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        let from = match &self.sender {
            TwilioFrom::Number(number) => ("From", number.as_str()),
            TwilioFrom::MessagingService(sid) => ("MessagingServiceSid", sid.as_str()),
        };
        let form = [
            ("To", message.to.as_str()),
            ("Body", message.content.text.as_str()),
            from,
        ];
        let response = self
            .client
            .post(self.url.clone())
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                let reason = e.without_url().to_string();
                DeliveryError::Failed(format!(
                    "Twilio unreachable: {}",
                    scrub::provider_text(&reason, message)
                ))
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // Twilio's error JSON carries a code and a message, and the message names the
        // number it refused (21211): it leaves here masked, with the code kept.
        let detail = scrub::provider_text(&scrub::read_answer(response).await, message);
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(DeliveryError::Failed(format!(
                "Twilio answered {status}: {detail}"
            )))
        } else {
            Err(DeliveryError::Rejected(format!(
                "Twilio answered {status}: {detail}"
            )))
        }
    }
}
