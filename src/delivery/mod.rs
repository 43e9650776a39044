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
mod webhook;

pub use console::ConsoleSender;
pub use outbox::{Outbox, OutboxFull};
pub use webhook::WebhookSender;

/// One code on its way to its owner.
#[derive(Clone, Debug)]
pub struct Message {
    /// Where it goes.
    pub to: Identifier,
    /// The code itself.
    pub code: Code,
    /// The tenant it was issued for.
    pub tenant: String,
    /// The tenant's display name, which the message is signed with.
    pub sender_name: Option<String>,
    /// How long the code stays valid.
    pub expires_in: Duration,
}

impl Message {
    /// The channel it travels by.
    pub fn channel(&self) -> Channel {
        self.to.channel()
    }

    /// The human text: what an email body or SMS says.
    pub fn text(&self) -> String {
        let minutes = self.expires_in.as_secs().div_ceil(60);
        let whose = self
            .sender_name
            .as_deref()
            .map_or_else(String::new, |name| format!("{name} "));
        format!(
            "Your {whose}sign-in code is {}. It expires in {} minute{}. If you did not ask for it, ignore this message.",
            self.code.expose(),
            minutes,
            if minutes == 1 { "" } else { "s" }
        )
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
            message: message.text(),
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
}

/// The sender for each channel; a channel without one cannot be used.
#[derive(Clone, Default)]
pub struct Senders {
    /// For email.
    pub email: Option<Arc<dyn Sender>>,
    /// For SMS.
    pub sms: Option<Arc<dyn Sender>>,
}

impl Senders {
    /// The sender for `channel`.
    pub fn for_channel(&self, channel: Channel) -> Option<&Arc<dyn Sender>> {
        match channel {
            Channel::Email => self.email.as_ref(),
            Channel::Sms => self.sms.as_ref(),
        }
    }
}

impl std::fmt::Debug for Senders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Senders")
            .field("email", &self.email.is_some())
            .field("sms", &self.sms.is_some())
            .finish()
    }
}
