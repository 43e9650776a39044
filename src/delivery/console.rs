use std::io::Write;

use async_trait::async_trait;

use super::{DeliveryError, Message, Sender};

/// Prints codes to standard error. For development only: it shows the full destination
/// and the code, which a production gate must never do. Standard error, so that the logs
/// on standard output stay one format (one JSON object a line with
/// `OTPGATE_LOG_FORMAT=json`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConsoleSender;

#[async_trait]
impl Sender for ConsoleSender {
    fn provider(&self) -> &'static str {
        "console"
    }

    async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        // A closed standard output must not take the gate down.
        let _ = writeln!(
            std::io::stderr(),
            "[otpgate console delivery, DEVELOPMENT ONLY] {} to {} (tenant {}): code {}",
            message.channel(),
            message.to.as_str(),
            message.tenant,
            message.code.expose()
        );
        Ok(())
    }
}
