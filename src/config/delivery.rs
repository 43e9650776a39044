//! `[delivery]` and `[[templates]]`: the sender of each channel and its fallback, the
//! outbox's retries and bounds, and the words messages travel in.

use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::schema::{
    DeliverySection, EnvString, SecurityKind, SenderKind, SenderSection, TemplateSection,
};
use super::{ConfigError, Place, Source};
use crate::delivery::{
    ConsoleSender, OutboxPolicy, Sender, Senders, SmtpSecurity, SmtpSender, SmtpSettings, Template,
    TemplateScope, Templates, TwilioFrom, TwilioSender, WebhookSender,
};
use crate::identifier::Channel;

/// `[delivery]` and `[[templates]]`, checked; no sender is made yet (and no CA file read).
pub(super) struct DeliveryModel {
    /// `None` when the file configures no channel: the engine's development default,
    /// console delivery for both, applies.
    channels: Option<ChannelPlans>,
    outbox: OutboxPolicy,
    templates: Option<Templates>,
}

/// What [`DeliveryModel::build`] makes.
pub(super) struct DeliveryParts {
    /// `None`: the engine's default senders.
    pub(super) senders: Option<Senders>,
    pub(super) outbox: OutboxPolicy,
    /// `None`: the built-in templates.
    pub(super) templates: Option<Templates>,
}

struct ChannelPlans {
    email: Option<SenderPair>,
    sms: Option<SenderPair>,
}

/// A channel's primary sender and its fallback.
struct SenderPair {
    primary: SenderPlan,
    fallback: Option<SenderPlan>,
}

/// One sender, checked: every value it needs, and the key it is written at.
struct SenderPlan {
    /// `delivery.email`, `delivery.sms.fallback`, ...; its line is the channel's table.
    place: Place,
    kind: PlanKind,
}

enum PlanKind {
    Console,
    Webhook {
        url: reqwest::Url,
        secret: Option<String>,
        timeout: Duration,
    },
    Smtp {
        settings: SmtpSettings,
        /// Read when building, relative to the config's directory.
        ca_file: Option<String>,
    },
    Twilio {
        base_url: String,
        account_sid: String,
        auth_token: String,
        from: TwilioFrom,
        timeout: Duration,
    },
}

/// Checks `[delivery]` and `[[templates]]`.
pub(super) fn check(
    delivery: &DeliverySection,
    templates: &[Spanned<TemplateSection>],
    source: &Source<'_>,
) -> Result<DeliveryModel, ConfigError> {
    let channels = if delivery.email.is_some() || delivery.sms.is_some() {
        Some(ChannelPlans {
            email: pair("delivery.email", delivery.email.as_ref(), source)?,
            sms: pair("delivery.sms", delivery.sms.as_ref(), source)?,
        })
    } else {
        None
    };
    let defaults = OutboxPolicy::default();
    if let Some(attempts) = &delivery.attempts
        && !(1..=10).contains(attempts.get_ref())
    {
        return Err(source.invalid(
            "delivery.attempts",
            Some(attempts.span()),
            "must be between 1 and 10",
        ));
    }
    let outbox = OutboxPolicy {
        capacity: delivery.outbox_capacity.unwrap_or(defaults.capacity),
        concurrency: delivery.concurrency.unwrap_or(defaults.concurrency),
        attempts: delivery
            .attempts
            .as_ref()
            .map_or(defaults.attempts, |a| *a.get_ref()),
        backoff: delivery.retry_backoff.map_or(defaults.backoff, |d| d.0),
        timeout: delivery.timeout.map_or(defaults.timeout, |d| d.0),
    };
    Ok(DeliveryModel {
        channels,
        outbox,
        templates: check_templates(templates, source)?,
    })
}

/// `[[templates]]`, compiled; `None` when there are none.
fn check_templates(
    templates: &[Spanned<TemplateSection>],
    source: &Source<'_>,
) -> Result<Option<Templates>, ConfigError> {
    let Some(first) = templates.first() else {
        return Ok(None);
    };
    let scoped = templates
        .iter()
        .map(|t| {
            let t = t.get_ref();
            (
                TemplateScope {
                    tenant: t.tenant.clone(),
                    channel: t.channel,
                    locale: t.locale.as_ref().map(|l| l.to_ascii_lowercase()),
                },
                Template {
                    subject: t.subject.clone(),
                    text: t.text.clone(),
                    html: t.html.clone(),
                    from_name: t.from_name.clone(),
                },
            )
        })
        .collect();
    Templates::new(scoped)
        .map(Some)
        .map_err(|e| source.invalid("templates", Some(first.span()), e.to_string()))
}

/// Where a configuration prints codes to the log instead of sending them.
pub(super) enum ConsoleDelivery {
    /// No channel is configured: the default prints both email and SMS codes.
    Default,
    /// These senders print codes: each by its key (`delivery.email`,
    /// `delivery.sms.fallback`, ...); empty when none does.
    Senders(Vec<Place>),
}

impl DeliveryModel {
    /// The senders that print codes to the log instead of sending them.
    pub(super) fn console_delivery(&self) -> ConsoleDelivery {
        let Some(channels) = &self.channels else {
            return ConsoleDelivery::Default;
        };
        let places = [&channels.email, &channels.sms]
            .into_iter()
            .flatten()
            .flat_map(|pair| std::iter::once(&pair.primary).chain(&pair.fallback))
            .filter(|plan| matches!(plan.kind, PlanKind::Console))
            .map(|plan| plan.place.clone())
            .collect();
        ConsoleDelivery::Senders(places)
    }
}

/// A channel's table, with its one fallback.
fn pair(
    key: &str,
    section: Option<&Spanned<SenderSection>>,
    source: &Source<'_>,
) -> Result<Option<SenderPair>, ConfigError> {
    let Some(spanned) = section else {
        return Ok(None);
    };
    let place = source.place(key, Some(spanned.span()));
    let primary = plan(place.clone(), spanned.get_ref(), source)?;
    let fallback = match &spanned.get_ref().fallback {
        Some(fallback) if fallback.fallback.is_some() => {
            return Err(source.invalid(
                &format!("{key}.fallback.fallback"),
                Some(spanned.span()),
                "one fallback per channel",
            ));
        }
        Some(fallback) => Some(plan(place.child("fallback"), fallback, source)?),
        None => None,
    };
    Ok(Some(SenderPair { primary, fallback }))
}

/// Checks one sender table.
fn plan(
    place: Place,
    section: &SenderSection,
    source: &Source<'_>,
) -> Result<SenderPlan, ConfigError> {
    let invalid = |field: &str, message: String| source.at(&place.child(field), message);
    let required = |field: &str, value: Option<&EnvString>| {
        value.map(|v| v.0.clone()).ok_or_else(|| {
            invalid(
                field,
                format!("a {:?} sender needs {field}", section.kind).to_lowercase(),
            )
        })
    };
    let timeout = section.timeout.map_or(Duration::from_secs(10), |d| d.0);
    let kind = match section.kind {
        SenderKind::Console => PlanKind::Console,
        SenderKind::Webhook => {
            let url: reqwest::Url = required("url", section.url.as_ref())?
                .parse()
                .map_err(|e| invalid("url", format!("invalid URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid("url", "the URL must be http or https".into()));
            }
            PlanKind::Webhook {
                url,
                secret: section.secret.as_ref().map(|s| s.0.clone()),
                timeout,
            }
        }
        SenderKind::Smtp => {
            let host = section
                .host
                .clone()
                .ok_or_else(|| invalid("host", "an smtp sender needs host".into()))?;
            let from: lettre::message::Mailbox = required("from", section.from.as_ref())?
                .parse()
                .map_err(|e| {
                invalid(
                    "from",
                    format!("not an address like \"Acme <no-reply@acme.example>\": {e}"),
                )
            })?;
            let credentials = match (&section.username, &section.password) {
                (Some(user), Some(password)) => Some((user.0.clone(), password.0.clone())),
                (None, None) => None,
                _ => {
                    return Err(invalid(
                        "username",
                        "username and password go together".into(),
                    ));
                }
            };
            let security = match section.security.unwrap_or(SecurityKind::Starttls) {
                SecurityKind::None => SmtpSecurity::None,
                SecurityKind::Starttls => SmtpSecurity::StartTls,
                SecurityKind::Tls => SmtpSecurity::Tls,
            };
            PlanKind::Smtp {
                settings: SmtpSettings {
                    host,
                    port: section.port,
                    security,
                    credentials,
                    from,
                    timeout,
                    root_certificates: Vec::new(),
                    pool_size: section.pool_size.unwrap_or(4),
                },
                ca_file: section.ca_file.clone(),
            }
        }
        SenderKind::Twilio => {
            let account_sid = required("account_sid", section.account_sid.as_ref())?;
            let auth_token = required("auth_token", section.auth_token.as_ref())?;
            let from = match (&section.from, &section.messaging_service_sid) {
                (Some(from), None) => TwilioFrom::Number(from.0.clone()),
                (None, Some(sid)) => TwilioFrom::MessagingService(sid.0.clone()),
                _ => {
                    return Err(invalid(
                        "from",
                        "a twilio sender needs exactly one of from and messaging_service_sid"
                            .into(),
                    ));
                }
            };
            PlanKind::Twilio {
                base_url: section
                    .base_url
                    .clone()
                    .unwrap_or_else(|| TwilioSender::DEFAULT_BASE_URL.to_owned()),
                account_sid,
                auth_token,
                from,
                timeout,
            }
        }
    };
    Ok(SenderPlan { place, kind })
}

impl DeliveryModel {
    /// Whether messages for `channel` have a sender.
    pub(super) fn delivers(&self, channel: Channel) -> bool {
        match &self.channels {
            None => true,
            Some(plans) => match channel {
                Channel::Email => plans.email.is_some(),
                Channel::Sms => plans.sms.is_some(),
            },
        }
    }

    /// The channel tables the file writes, as `(channel, line)`.
    pub(super) fn written_channels(&self) -> Vec<(Channel, Option<usize>)> {
        let Some(plans) = &self.channels else {
            return Vec::new();
        };
        [(Channel::Email, &plans.email), (Channel::Sms, &plans.sms)]
            .into_iter()
            .filter_map(|(channel, pair)| Some((channel, pair.as_ref()?.primary.place.line)))
            .collect()
    }

    /// Makes the senders (reading any CA file).
    pub(super) fn build(self, source: &Source<'_>) -> Result<DeliveryParts, ConfigError> {
        let senders = match self.channels {
            None => None,
            Some(plans) => {
                let (email, email_fallback) = build_pair(plans.email, source)?;
                let (sms, sms_fallback) = build_pair(plans.sms, source)?;
                Some(Senders {
                    email,
                    sms,
                    email_fallback,
                    sms_fallback,
                })
            }
        };
        Ok(DeliveryParts {
            senders,
            outbox: self.outbox,
            templates: self.templates,
        })
    }
}

type BuiltPair = (Option<Arc<dyn Sender>>, Option<Arc<dyn Sender>>);

fn build_pair(pair: Option<SenderPair>, source: &Source<'_>) -> Result<BuiltPair, ConfigError> {
    let Some(pair) = pair else {
        return Ok((None, None));
    };
    let primary = build_sender(pair.primary, source)?;
    let fallback = match pair.fallback {
        Some(plan) => Some(build_sender(plan, source)?),
        None => None,
    };
    Ok((Some(primary), fallback))
}

fn build_sender(plan: SenderPlan, source: &Source<'_>) -> Result<Arc<dyn Sender>, ConfigError> {
    let invalid = |field: &str, message: String| source.at(&plan.place.child(field), message);
    match plan.kind {
        PlanKind::Console => Ok(Arc::new(ConsoleSender)),
        PlanKind::Webhook {
            url,
            secret,
            timeout,
        } => {
            let mut webhook = WebhookSender::new(url).timeout(timeout);
            if let Some(secret) = secret {
                webhook = webhook.signing_secret(secret.as_bytes());
            }
            Ok(Arc::new(webhook))
        }
        PlanKind::Smtp {
            mut settings,
            ca_file,
        } => {
            if let Some(path) = ca_file {
                let full = source.dir.join(&path);
                let pem = std::fs::read(&full).map_err(|e| {
                    invalid("ca_file", format!("cannot read {}: {e}", full.display()))
                })?;
                settings.root_certificates.push(pem);
            }
            let sender = SmtpSender::new(settings).map_err(|e| invalid("host", e.to_string()))?;
            Ok(Arc::new(sender))
        }
        PlanKind::Twilio {
            base_url,
            account_sid,
            auth_token,
            from,
            timeout,
        } => {
            let sender = TwilioSender::new(&base_url, &account_sid, &auth_token, from, timeout)
                .map_err(|e| invalid("base_url", e.to_string()))?;
            Ok(Arc::new(sender))
        }
    }
}
