//! `[otp]`: the code policy, the per-IP limits and the secret that keys code hashes.
//! Nothing here is read or resolved, so this section has no building step.

use std::ops::Range;

use toml::Spanned;

use super::schema::OtpSection;
use super::{ConfigError, Source};
use crate::gate::{BuildError, IpLimits, validate_policy};
use crate::otp::{Backoff, CodeFormat, CodePolicy, ServerSecret};

/// `[otp]`, checked.
pub(super) struct OtpModel {
    /// The code policy, accepted by the engine's rule book.
    pub(super) policy: CodePolicy,
    /// Sends and verifications per client address.
    pub(super) ip_limits: IpLimits,
    /// Keys code hashes; random when not written.
    pub(super) secret: Option<ServerSecret>,
}

/// Checks `[otp]`. The policy is judged by [`validate_policy`], the one rule book the
/// engine also applies, so a value is refused alike from code and from the file.
pub(super) fn check(
    section: &Spanned<OtpSection>,
    source: &Source<'_>,
) -> Result<OtpModel, ConfigError> {
    let otp = section.get_ref();
    let policy = policy(otp).map_err(|message| {
        source.invalid(
            "otp.length",
            otp.length.as_ref().map(Spanned::span),
            message,
        )
    })?;
    if let Err(error) = validate_policy(&policy) {
        return Err(policy_error(section, error, source));
    }
    let ip_defaults = IpLimits::default();
    let ip_limits = IpLimits {
        sends: otp.sends_per_ip.map_or(ip_defaults.sends, |r| r.0),
        verifies: otp.verifies_per_ip.map_or(ip_defaults.verifies, |r| r.0),
    };
    let secret = match &otp.secret {
        Some(secret) => Some(
            ServerSecret::new(secret.get_ref().0.as_bytes().to_vec())
                .map_err(|e| source.invalid("otp.secret", Some(secret.span()), e.to_string()))?,
        ),
        None => None,
    };
    Ok(OtpModel {
        policy,
        ip_limits,
        secret,
    })
}

/// The policy `[otp]` writes, over the defaults. Fails only on a code format that cannot
/// be (`length` against `alphabet`).
fn policy(otp: &OtpSection) -> Result<CodePolicy, String> {
    let defaults = CodePolicy::default();
    let length = otp
        .length
        .as_ref()
        .map_or(defaults.format.length(), |l| *l.get_ref());
    let format =
        CodeFormat::new(length, otp.alphabet.unwrap_or_default()).map_err(|e| e.to_string())?;
    let max_attempts = otp
        .max_attempts
        .as_ref()
        .map_or(defaults.max_attempts, |m| *m.get_ref());
    Ok(CodePolicy {
        format,
        ttl: otp.ttl.as_ref().map_or(defaults.ttl, |d| d.get_ref().0),
        max_attempts,
        resend_cooldown: otp
            .resend_cooldown
            .as_ref()
            .map_or(defaults.resend_cooldown, |d| d.get_ref().0),
        sends_per_identifier: otp
            .sends_per_identifier
            .as_ref()
            .map_or(defaults.sends_per_identifier, |r| r.get_ref().0),
        failure_budget: otp
            .failure_budget
            .as_ref()
            .map_or(defaults.failure_budget, |b| *b.get_ref()),
        // The attempts one code allows are free of backoff; the wait starts after them.
        backoff: Backoff {
            free_failures: max_attempts,
            ..defaults.backoff
        },
        failure_memory: otp
            .failure_memory
            .as_ref()
            .map_or(defaults.failure_memory, |d| d.get_ref().0),
    })
}

/// Moves one policy key from the first section to the second, giving its span when the
/// file writes it.
type MoveKey = fn(&mut OtpSection, &mut OtpSection) -> Option<Range<usize>>;

/// The `[otp]` keys the rule book judges, beyond the code format (checked on its own).
const POLICY_KEYS: [(&str, MoveKey); 6] = [
    ("otp.ttl", |from, to| {
        to.ttl = from.ttl.take();
        to.ttl.as_ref().map(Spanned::span)
    }),
    ("otp.max_attempts", |from, to| {
        to.max_attempts = from.max_attempts.take();
        to.max_attempts.as_ref().map(Spanned::span)
    }),
    ("otp.resend_cooldown", |from, to| {
        to.resend_cooldown = from.resend_cooldown.take();
        to.resend_cooldown.as_ref().map(Spanned::span)
    }),
    ("otp.sends_per_identifier", |from, to| {
        to.sends_per_identifier = from.sends_per_identifier.take();
        to.sends_per_identifier.as_ref().map(Spanned::span)
    }),
    ("otp.failure_budget", |from, to| {
        to.failure_budget = from.failure_budget.take();
        to.failure_budget.as_ref().map(Spanned::span)
    }),
    ("otp.failure_memory", |from, to| {
        to.failure_memory = from.failure_memory.take();
        to.failure_memory.as_ref().map(Spanned::span)
    }),
];

/// Names the key that broke the rule book: the written values are laid one at a time
/// over the defaults (which pass), and the first one after which the policy fails is the
/// one named, at its line. When no single key can be named, the error is at `[otp]`.
fn policy_error(
    section: &Spanned<OtpSection>,
    error: BuildError,
    source: &Source<'_>,
) -> ConfigError {
    let message = error.to_string();
    let mut rest = section.get_ref().clone();
    let mut laid = OtpSection {
        length: rest.length.clone(),
        alphabet: rest.alphabet,
        ..OtpSection::default()
    };
    for (key, move_key) in POLICY_KEYS {
        let Some(span) = move_key(&mut rest, &mut laid) else {
            continue;
        };
        let passes = policy(&laid).is_ok_and(|p| validate_policy(&p).is_ok());
        if !passes {
            // "otp.ttl must ...": the key is named already.
            let message = message
                .strip_prefix(key)
                .filter(|rest| rest.starts_with(" must "))
                .map_or(message.as_str(), str::trim_start);
            return source.invalid(key, Some(span), message);
        }
    }
    source.invalid("otp", Some(section.span()), message)
}
