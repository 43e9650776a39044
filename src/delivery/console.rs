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
        // A closed standard error must not take the gate down.
        let _ = write_line(&mut std::io::stderr().lock(), message);
        Ok(())
    }
}

/// Writes what the console shows for `message`: the destination, the code and the link if
/// any. Straight to `out`, so no copy of the code or link is left in an unwiped buffer.
fn write_line(out: &mut impl Write, message: &Message) -> std::io::Result<()> {
    write!(
        out,
        "[otpgate console delivery, DEVELOPMENT ONLY] {} to {} (tenant {}): code {}",
        message.channel(),
        message.to.as_str(),
        message.tenant,
        message.code.expose()
    )?;
    if let Some(link) = &message.link {
        write!(out, ", link {}", link.expose())?;
    }
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::delivery::{Link, Rendered};
    use crate::identifier::Identifier;
    use crate::otp::CodeFormat;

    fn line(message: &Message) -> String {
        let mut out = Vec::new();
        write_line(&mut out, message).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_console_shows_the_link_beside_the_code_when_there_is_one() {
        let code = CodeFormat::default().normalize("482913");
        let mut message = Message {
            to: Identifier::email("ada@example.com").unwrap(),
            link: None,
            code,
            tenant: "default".into(),
            expires_in: Duration::from_secs(300),
            content: Rendered::default(),
        };
        assert_eq!(
            line(&message),
            "[otpgate console delivery, DEVELOPMENT ONLY] email to ada@example.com \
             (tenant default): code 482913\n"
        );
        message.link = Some(Link::new(
            "https://app.example/sign-in?code=",
            &message.code,
        ));
        assert!(
            line(&message).ends_with("code 482913, link https://app.example/sign-in?code=482913\n"),
            "{}",
            line(&message)
        );
    }
}
