//! Getting codes to people: the [`Sender`] trait, its development and webhook
//! implementations, and the [`Outbox`] that keeps delivery off the request path.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

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
#[derive(Clone, Debug)]
pub struct Message {
    /// Where it goes.
    pub to: Identifier,
    /// The code itself.
    pub code: Code,
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

/// The JSON a webhook receives.
#[derive(Debug, Serialize)]
pub struct WebhookPayload<'a> {
    /// `"email"` or `"sms"`.
    pub channel: Channel,
    /// The full destination.
    pub to: &'a str,
    /// The code.
    pub code: &'a str,
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
            tenant: &message.tenant,
            message: message.content.text.clone(),
            expires_in: message.expires_in.as_secs(),
        }
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
