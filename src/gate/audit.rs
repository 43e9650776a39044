//! Audit events: one log event for each sign-in decision the engine makes, on a target
//! of their own, [`TARGET`] (`otpgate::audit`), so that they can be kept, filtered or
//! shipped apart from the other logs (`RUST_LOG=otpgate::audit=info`). With
//! `OTPGATE_LOG_FORMAT=json` each one is a JSON line whose fields sit at its top level.
//!
//! | `event`                  | level | when                                              |
//! |--------------------------|-------|---------------------------------------------------|
//! | `code_sent`              | info  | a code is issued and queued for delivery          |
//! | `code_verified`          | info  | a code is accepted                                |
//! | `code_failed`            | info  | a code is refused                                 |
//! | `locked_out`             | warn  | a send or verify must wait for past failures      |
//! | `session_refreshed`      | info  | a refresh token is rotated                        |
//! | `refresh_reuse_detected` | warn  | a rotated refresh token came back: its family is revoked |
//! | `sms_guard_tripped`      | warn  | an SMS guard cap started refusing sends (once per trip) |
//! | `logged_out`             | info  | an access or refresh token is revoked             |
//!
//! Every event has `event` and `tenant`, and where known:
//!
//! - `subject`: the account's id. Not on `code_sent`, `code_failed` nor `locked_out`:
//!   those never say whether the account exists. An id that is the address itself (an
//!   auto-created account's) is masked like `destination`.
//! - `destination`: the email or phone, masked: `a***@example.com`, `+1******0123`.
//! - `client`: the client's address.
//! - `dialect`: the API the request came through (`generic`, `nexudus`, `aerocall`,
//!   `baanx`), set by the HTTP front with [`within`].
//!
//! and, by event:
//!
//! - `reason` (`code_failed`): `rejected` (wrong, expired, spent or no code: the engine
//!   does not tell these apart), `malformed` (empty or over 64 characters), or
//!   `no_pending_login` (a second factor nobody is waiting for).
//! - `action` and `retry_after_secs` (`locked_out`): `send` or `verify`, and the wait in
//!   seconds, rounded up.
//! - `revoked` (`logged_out`): `access` or `refresh`.
//! - `reason`, `retry_after_secs` and, by scope, `prefix` (the number's first digits,
//!   never the whole number), `country` (its calling code) or `period` (`hour`, `day`)
//!   (`sms_guard_tripped`): `reason` is `pumping`, `prefix`, `country` or `budget`.
//!
//! No event holds a code, a code's hash or a token. A send to an unknown account writes
//! the same `code_sent` as one to a known account.

use std::borrow::Cow;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use crate::identifier::{Identifier, mask_email};
use crate::token::Claims;

/// The log target of every audit event.
pub const TARGET: &str = "otpgate::audit";

/// Where the requests being answered came from, for the events they cause.
struct Origin {
    dialect: String,
    client: Option<IpAddr>,
}

tokio::task_local! {
    static ORIGIN: Origin;
}

/// Runs `future` with `dialect` (the API a request came through) and `client` (its
/// address, when known) written on every audit event the engine emits inside it.
pub async fn within<F: Future>(dialect: String, client: Option<IpAddr>, future: F) -> F::Output {
    ORIGIN.scope(Origin { dialect, client }, future).await
}

/// The dialect and client of the events emitted now: `client` when the caller knows
/// it, else the one [`within`] noted.
fn origin(client: Option<IpAddr>) -> (Option<String>, Option<IpAddr>) {
    ORIGIN
        .try_with(|origin| (Some(origin.dialect.clone()), client.or(origin.client)))
        .unwrap_or((None, client))
}

/// Emits one audit event at `$level` with the fields every event shares, then the
/// event's own.
macro_rules! audit {
    ($level:ident, $event:literal, $tenant:expr, $client:expr, { $($field:tt)* }, $message:literal) => {{
        let (dialect, client) = origin($client);
        tracing::$level!(
            target: TARGET,
            event = $event,
            tenant = $tenant,
            $($field)*
            client = client.as_ref().map(tracing::field::display),
            dialect = dialect.as_deref(),
            $message
        );
    }};
}

/// A code was issued to `destination` and queued for delivery.
pub(crate) fn code_sent(tenant: &str, destination: &Identifier, client: Option<IpAddr>) {
    crate::metrics::code_sent();
    audit!(info, "code_sent", tenant, client, {
        destination = %destination.masked(),
    }, "code sent");
}

/// A code for `destination` was accepted: it proves the account `subject`.
pub(crate) fn code_verified(
    tenant: &str,
    subject: &str,
    destination: &Identifier,
    client: Option<IpAddr>,
) {
    crate::metrics::code_verified();
    audit!(info, "code_verified", tenant, client, {
        subject = %shown_subject(subject, Some(destination.as_str())),
        destination = %destination.masked(),
    }, "code verified");
}

/// Why a code was refused, no finer than the engine's decision.
#[derive(Clone, Copy, Debug)]
pub(crate) enum FailReason {
    /// Wrong, expired, spent, or no code at all.
    Rejected,
    /// Empty or too long to be a code.
    Malformed,
    /// A second factor for a login nobody is waiting for.
    NoPendingLogin,
}

impl FailReason {
    fn as_str(self) -> &'static str {
        match self {
            FailReason::Rejected => "rejected",
            FailReason::Malformed => "malformed",
            FailReason::NoPendingLogin => "no_pending_login",
        }
    }
}

/// A code for `destination` (when known) was refused.
pub(crate) fn code_failed(
    tenant: &str,
    destination: Option<&Identifier>,
    reason: FailReason,
    client: Option<IpAddr>,
) {
    crate::metrics::code_failed(reason.as_str());
    audit!(info, "code_failed", tenant, client, {
        destination = destination.map(Identifier::masked),
        reason = reason.as_str(),
    }, "code refused");
}

/// A send or verify (`action`) for `destination` must wait `retry_after` for past
/// failures.
pub(crate) fn locked_out(
    tenant: &str,
    destination: &Identifier,
    action: &'static str,
    retry_after: Duration,
    client: Option<IpAddr>,
) {
    crate::metrics::locked_out(action);
    audit!(warn, "locked_out", tenant, client, {
        destination = %destination.masked(),
        action,
        retry_after_secs = whole_seconds(retry_after),
    }, "locked out after failed codes");
}

/// An SMS guard cap (`reason`) started refusing sends to `prefix` or `country`, or all
/// sends for the budget `period`, for `retry_after`. Logged once per trip.
pub(crate) fn sms_guard_tripped(
    tenant: &str,
    reason: &'static str,
    scope: (Option<&str>, Option<u16>, Option<&'static str>),
    retry_after: Duration,
    client: Option<IpAddr>,
) {
    let (prefix, country, period) = scope;
    crate::metrics::sms_guard_tripped(reason);
    audit!(warn, "sms_guard_tripped", tenant, client, {
        reason,
        prefix,
        country,
        period,
        retry_after_secs = whole_seconds(retry_after),
    }, "SMS guard tripped");
}

/// The refresh token with `claims` was rotated.
pub(crate) fn session_refreshed(claims: &Claims) {
    crate::metrics::session_refreshed();
    audit!(info, "session_refreshed", claims.tenant.as_str(), None, {
        subject = %claims_subject(claims),
        destination = claims_destination(claims),
    }, "session refreshed");
}

/// The refresh token with `claims` was presented after its rotation: its family is
/// revoked.
pub(crate) fn refresh_reuse_detected(claims: &Claims) {
    crate::metrics::refresh_reuse_detected();
    audit!(warn, "refresh_reuse_detected", claims.tenant.as_str(), None, {
        subject = %claims_subject(claims),
        destination = claims_destination(claims),
    }, "refresh token reused; its family is revoked");
}

/// The token with `claims`, of kind `revoked` (`access` or `refresh`), was revoked.
pub(crate) fn logged_out(claims: &Claims, revoked: &'static str) {
    crate::metrics::logged_out(revoked);
    audit!(info, "logged_out", claims.tenant.as_str(), None, {
        subject = %claims_subject(claims),
        destination = claims_destination(claims),
        revoked,
    }, "logged out");
}

/// `wait` in whole seconds, rounded up: a wait under a second is not none.
fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// `subject`, masked when it is the full `address`: an auto-created account's id is its
/// address, which must not reach the logs whole.
fn shown_subject<'a>(subject: &'a str, address: Option<&str>) -> Cow<'a, str> {
    match address {
        Some(address) if address == subject => Cow::Owned(mask(subject)),
        _ => Cow::Borrowed(subject),
    }
}

fn claims_address(claims: &Claims) -> Option<&str> {
    claims.email.as_deref().or(claims.phone.as_deref())
}

fn claims_subject(claims: &Claims) -> Cow<'_, str> {
    shown_subject(&claims.sub, claims_address(claims))
}

fn claims_destination(claims: &Claims) -> Option<String> {
    claims_address(claims).map(mask)
}

/// An email address or phone number, masked the way [`Identifier::masked`] does.
fn mask(address: &str) -> String {
    if address.contains('@') {
        mask_email(address)
    } else {
        Identifier::Phone(address.to_owned()).masked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_as_subject_is_masked() {
        assert_eq!(
            shown_subject("alice@example.com", Some("alice@example.com")),
            "a***@example.com"
        );
        assert_eq!(
            shown_subject("+14155552671", Some("+14155552671")),
            "+1******2671"
        );
        assert_eq!(shown_subject("u-7", Some("alice@example.com")), "u-7");
        assert_eq!(shown_subject("u-7", None), "u-7");
    }

    #[tokio::test]
    async fn within_notes_the_dialect_and_a_client_the_caller_does_not_know() {
        let client: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(origin(None), (None, None));
        let (noted, given) = within("generic".into(), Some(client), async {
            (origin(None), origin(Some(other)))
        })
        .await;
        assert_eq!(noted, (Some("generic".into()), Some(client)));
        assert_eq!(given, (Some("generic".into()), Some(other)));
    }
}
