//! Getting codes to people: the [`Sender`] trait, its development and webhook
//! implementations, and the [`Outbox`] that keeps delivery off the request path.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::identifier::{Channel, Identifier};
use crate::otp::Code;

mod console;
mod outbox;
mod scrub;
mod smtp;
mod template;
mod twilio;
mod webhook;

pub use console::ConsoleSender;
pub use outbox::{DeliveryStats, Outbox, OutboxFull, OutboxPolicy, OutboxSlot};
pub use smtp::{SmtpSecurity, SmtpSender, SmtpSettings};
pub use template::{Rendered, Template, TemplateContext, TemplateError, TemplateScope, Templates};
pub use twilio::{TwilioFrom, TwilioSender};
pub use webhook::WebhookSender;

/// One code on its way to its owner, with the words it travels in.
#[derive(Clone)]
pub struct Message {
    /// Where it goes.
    pub to: Identifier,
    /// The code itself.
    pub code: Code,
    /// A sign-in link carrying the code, for emails sent with one; never for SMS.
    pub link: Option<Link>,
    /// The tenant it was issued for.
    pub tenant: String,
    /// How long the code stays valid.
    pub expires_in: Duration,
    /// Subject, text, HTML and sender name, rendered from the tenant's templates.
    pub content: Rendered,
}

impl Message {
    /// The channel it travels by.
    pub fn channel(&self) -> Channel {
        self.to.channel()
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The rendered words quote the code and the link: only their sizes are shown.
        f.debug_struct("Message")
            .field("to", &self.to)
            .field("code", &self.code)
            .field("link", &self.link)
            .field("tenant", &self.tenant)
            .field("expires_in", &self.expires_in)
            .field("subject_len", &self.content.subject.len())
            .field("text_len", &self.content.text.len())
            .field("html_len", &self.content.html.len())
            .field("from_name", &self.content.from_name)
            .finish()
    }
}

/// A sign-in link: an address with the code at its end. Whoever holds it holds the code,
/// so it is kept like one: wiped from memory when dropped and never printed by `Debug`.
#[derive(Clone)]
pub struct Link(Zeroizing<String>);

impl Link {
    /// `prefix` (an address ending in `code=`) with `code` appended. Codes are digits or
    /// upper-case letters, safe in a URL as they are.
    pub fn new(prefix: &str, code: &Code) -> Link {
        // Sized up front: a growing buffer would leave unwiped copies of the prefix and
        // code behind each reallocation.
        let mut text = Zeroizing::new(String::with_capacity(prefix.len() + code.expose().len()));
        text.push_str(prefix);
        text.push_str(code.expose());
        Link(text)
    }

    /// The link's text, for delivery to its owner only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Links carry codes, and codes never reach logs.
        f.write_str("Link(<redacted>)")
    }
}

/// The JSON a webhook receives.
#[derive(Serialize)]
pub struct WebhookPayload<'a> {
    /// `"email"` or `"sms"`.
    pub channel: Channel,
    /// The full destination.
    pub to: &'a str,
    /// The code.
    pub code: &'a str,
    /// The sign-in link, in the JSON only when the message has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<&'a str>,
    /// The tenant.
    pub tenant: &'a str,
    /// The human text.
    pub message: String,
    /// Seconds the code stays valid.
    pub expires_in: u64,
}

impl<'a> From<&'a Message> for WebhookPayload<'a> {
    fn from(message: &'a Message) -> Self {
        WebhookPayload {
            channel: message.channel(),
            to: message.to.as_str(),
            code: message.code.expose(),
            link: message.link.as_ref().map(Link::expose),
            tenant: &message.tenant,
            message: message.content.text.clone(),
            expires_in: message.expires_in.as_secs(),
        }
    }
}

impl std::fmt::Debug for WebhookPayload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The code, the link and the text quoting them never reach logs.
        f.debug_struct("WebhookPayload")
            .field("channel", &self.channel)
            .field("tenant", &self.tenant)
            .field("link", &self.link.is_some())
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// A delivery that failed for good.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The provider refused the message; retrying will not help.
    #[error("delivery rejected: {0}")]
    Rejected(String),
    /// The provider could not be reached or failed, after every retry.
    #[error("delivery failed: {0}")]
    Failed(String),
}

/// Something that delivers messages of one channel.
#[async_trait]
pub trait Sender: Send + Sync + 'static {
    /// Delivers `message`, retrying as the implementation sees fit.
    async fn send(&self, message: &Message) -> Result<(), DeliveryError>;

    /// The provider's name in the metrics' `provider` label: one of a small, fixed set
    /// (`console`, `webhook`, `smtp`, `twilio`), or `custom` for a sender of the app's own.
    fn provider(&self) -> &'static str {
        "custom"
    }
}

/// The senders for each channel: a primary, and a fallback that takes over when the
/// primary fails. A channel without a primary cannot be used.
#[derive(Clone, Default)]
pub struct Senders {
    /// For email.
    pub email: Option<Arc<dyn Sender>>,
    /// For SMS.
    pub sms: Option<Arc<dyn Sender>>,
    /// For email, when `email` fails.
    pub email_fallback: Option<Arc<dyn Sender>>,
    /// For SMS, when `sms` fails.
    pub sms_fallback: Option<Arc<dyn Sender>>,
}

impl Senders {
    /// The primary sender for `channel`.
    pub fn for_channel(&self, channel: Channel) -> Option<&Arc<dyn Sender>> {
        match channel {
            Channel::Email => self.email.as_ref(),
            Channel::Sms => self.sms.as_ref(),
        }
    }

    /// The fallback sender for `channel`.
    pub fn fallback_for(&self, channel: Channel) -> Option<&Arc<dyn Sender>> {
        match channel {
            Channel::Email => self.email_fallback.as_ref(),
            Channel::Sms => self.sms_fallback.as_ref(),
        }
    }
}

impl std::fmt::Debug for Senders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Senders")
            .field("email", &self.email.is_some())
            .field("sms", &self.sms.is_some())
            .field("email_fallback", &self.email_fallback.is_some())
            .field("sms_fallback", &self.sms_fallback.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::CodeFormat;

    /// An email with `482913` in its link and in every rendered part.
    fn with_link() -> Message {
        let code = CodeFormat::default().normalize("482913");
        let link = Link::new("https://app.example/sign-in?code=", &code);
        Message {
            to: Identifier::email("ada@example.com").unwrap(),
            link: Some(link),
            code,
            tenant: "default".into(),
            expires_in: Duration::from_secs(300),
            content: Rendered {
                subject: "482913 is your sign-in code".into(),
                text: "Code 482913. Or https://app.example/sign-in?code=482913".into(),
                html: "<p>482913</p>".into(),
                from_name: None,
            },
        }
    }

    #[test]
    fn a_link_is_its_prefix_and_the_code() {
        let message = with_link();
        let link = message.link.as_ref().map(Link::expose);
        assert_eq!(link, Some("https://app.example/sign-in?code=482913"));
    }

    #[test]
    fn debug_shows_neither_the_code_nor_the_link() {
        let message = with_link();
        let shown = format!("{message:?}");
        for secret in ["482913", "sign-in?code", "ada@example.com"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("Link(<redacted>)"), "{shown}");
        let payload = format!("{:?}", WebhookPayload::from(&message));
        assert!(!payload.contains("482913"), "{payload}");
    }

    #[test]
    fn the_webhook_json_has_a_link_only_when_the_message_does() {
        let mut message = with_link();
        let json = serde_json::to_value(WebhookPayload::from(&message)).unwrap();
        assert_eq!(json["link"], "https://app.example/sign-in?code=482913");
        assert_eq!(json["code"], "482913");
        message.link = None;
        let json = serde_json::to_value(WebhookPayload::from(&message)).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys.len(),
            6,
            "channel, to, code, tenant, message, expires_in: {keys:?}"
        );
        assert!(json.get("link").is_none(), "{json}");
    }
}
