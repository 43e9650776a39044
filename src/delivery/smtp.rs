use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::sync::OnceLock;

use super::{DeliveryError, Message, Sender, scrub};

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SmtpSecurity {
    /// Plain text: only for a relay on the same host or a trusted network.
    None,
    /// Plain text upgraded with STARTTLS, which is required (port 587).
    #[default]
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// Where and how to send mail.
#[derive(Clone)]
pub struct SmtpSettings {
    /// Server host name.
    pub host: String,
    /// Port; the default of the security mode when `None` (25, 587, 465).
    pub port: Option<u16>,
    /// Connection security.
    pub security: SmtpSecurity,
    /// User name and password, when the server wants them.
    pub credentials: Option<(String, String)>,
    /// The From address, e.g. `Acme <no-reply@acme.example>`; a tenant's sender name
    /// replaces its display name.
    pub from: Mailbox,
    /// Connection and command timeout.
    pub timeout: Duration,
    /// Trust only these PEM certificates for the server instead of the system's roots
    /// (a private mail relay).
    pub root_certificates: Vec<Vec<u8>>,
    /// Connections kept open at most.
    pub pool_size: u32,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("authenticated", &self.credentials.is_some())
            .field("from", &self.from.email.to_string())
            .finish_non_exhaustive()
    }
}

/// Sends email through an SMTP server (lettre): plain, STARTTLS or implicit TLS, with
/// authentication and pooled connections. Each message has a text and an HTML part.
///
/// The connection pool lives on the tokio runtime that delivers the first message: it is
/// built then, not with the sender, so that a gate can be built (and `otpgate check` run)
/// outside any runtime.
pub struct SmtpSender {
    builder: AsyncSmtpTransportBuilder,
    transport: OnceLock<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
}

impl Drop for SmtpSender {
    fn drop(&mut self) {
        // The pool closes its connections on a runtime task when dropped; without a
        // runtime (the process is exiting) they are left to the operating system.
        if let Some(transport) = self.transport.take()
            && tokio::runtime::Handle::try_current().is_err()
        {
            std::mem::forget(transport);
        }
    }
}

impl SmtpSender {
    /// A sender for `settings`. Connections open lazily, on the first message.
    pub fn new(settings: SmtpSettings) -> Result<SmtpSender, DeliveryError> {
        let invalid = |e: lettre::transport::smtp::Error| {
            DeliveryError::Rejected(format!("SMTP settings: {e}"))
        };
        let tls = |host: &str| -> Result<TlsParameters, DeliveryError> {
            let mut builder = TlsParameters::builder(host.to_owned());
            if !settings.root_certificates.is_empty() {
                builder = builder.certificate_store(CertificateStore::None);
                for pem in &settings.root_certificates {
                    builder =
                        builder.add_root_certificate(Certificate::from_pem(pem).map_err(invalid)?);
                }
            }
            builder.build_rustls().map_err(invalid)
        };
        let (tls, default_port) = match settings.security {
            SmtpSecurity::None => (Tls::None, 25),
            // Required, not opportunistic: a stripped STARTTLS offer must not downgrade us.
            SmtpSecurity::StartTls => (Tls::Required(tls(&settings.host)?), 587),
            SmtpSecurity::Tls => (Tls::Wrapper(tls(&settings.host)?), 465),
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.clone())
                .port(settings.port.unwrap_or(default_port))
                .tls(tls)
                .timeout(Some(settings.timeout))
                .pool_config(PoolConfig::new().max_size(settings.pool_size.max(1)));
        if let Some((user, password)) = &settings.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(SmtpSender {
            builder,
            transport: OnceLock::new(),
            from: settings.from,
        })
    }

    fn transport(&self) -> &AsyncSmtpTransport<Tokio1Executor> {
        self.transport.get_or_init(|| self.builder.clone().build())
    }
}

impl std::fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSender")
            .field("from", &self.from.email.to_string())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Sender for SmtpSender {
    fn provider(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        let to: Mailbox = message.to.as_str().parse::<Mailbox>().map_err(|e| {
            let reason = scrub::provider_text(&e.to_string(), message);
            DeliveryError::Rejected(format!("recipient: {reason}"))
        })?;
        let from = Mailbox::new(
            message
                .content
                .from_name
                .clone()
                .or_else(|| self.from.name.clone()),
            self.from.email.clone(),
        );
        let email = lettre::Message::builder()
            .from(from)
            .to(to)
            .subject(message.content.subject.clone())
            .multipart(MultiPart::alternative_plain_html(
                message.content.text.clone(),
                message.content.html.clone(),
            ))
            .map_err(|e| {
                let reason = scrub::provider_text(&e.to_string(), message);
                DeliveryError::Rejected(format!("message: {reason}"))
            })?;
        match self.transport().send(email).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // Server replies name the recipient (`550 5.1.1 <person@example.com>`):
                // masked here, the reply code kept.
                let reason = format!("SMTP: {}", scrub::provider_text(&e.to_string(), message));
                // 5xx: the server refuses this message for good.
                if e.is_permanent() {
                    Err(DeliveryError::Rejected(reason))
                } else {
                    Err(DeliveryError::Failed(reason))
                }
            }
        }
    }
}
