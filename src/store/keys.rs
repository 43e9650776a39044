//! Every key the gate writes to a [`Store`](super::Store), in one place, so that no two
//! features can collide and an operator can read a Redis keyspace with this list open.
//!
//! | key | holds | written by |
//! |---|---|---|
//! | `otp:{tenant}:{channel}:{destination}` | a destination's code record | send, verify |
//! | `ip:{action}:{ip}` | a per-IP window counter | send, verify |
//! | `account:{tenant}:{channel}:{destination}` | the id of an auto-created account | verify |
//! | `revoked:{jti}` | a revoked access token | logout |
//! | `revoked-epoch` | a random value changed by every logout, which gates poll | logout |
//! | `used:{jti}` | a spent single-use token (exchange, refresh) | exchange, refresh |
//! | `family-revoked:{family}` | a revoked refresh-token family | logout, reuse detection |
//! | `second-factor:user:{tenant}:{user}` | the phone of a login waiting for its code | second factor |
//! | `second-factor:login:{tenant}:{login}` | the user id a login name waits as | second factor |
//! | `sms-guard:{counter}:{scope}:{window}:{index}:{n\|r}` | an SMS guard window counter | SMS send |
//! | `sms-guard:cool-down:{prefix}` | until when a pumped number prefix is throttled | SMS send |
//! | `sms-guard:tripped:{reason}:{scope}:{index}` | a guard cap already logged as tripped | SMS send |
//! | `challenge-used:{signature}` | a spent proof-of-work challenge | send |
//!
//! Backends may prefix every key (the Redis store does, with its namespace).
//!
//! In Redis a key becomes `namespace:kind:` and an HMAC in hex, so the braces above are
//! placeholders only: no stored key holds `{` or `}`, and in a Redis Cluster each key
//! hashes to a slot of its own. That is enough because every operation and script of the
//! store touches exactly one key. A future script that reads or writes two keys at once
//! needs both in one slot: give them the same hash tag (`namespace:{tag}:kind`, the tag an
//! HMAC of what groups them, never a readable identity), and keep revocation and
//! spent-token keys readable under their old names for one token lifetime, or revoked
//! tokens would count as valid again.

use crate::identifier::Identifier;

/// The code record of `destination` within `tenant`.
pub fn code_record(tenant: &str, destination: &Identifier) -> String {
    format!(
        "otp:{tenant}:{}:{}",
        destination.channel(),
        destination.as_str()
    )
}

/// The per-IP counter of `action` (`send`, `verify`).
pub fn ip_counter(action: &str, ip: std::net::IpAddr) -> String {
    format!("ip:{action}:{ip}")
}

/// The account the gate auto-created for `destination`.
pub fn created_account(tenant: &str, destination: &Identifier) -> String {
    format!(
        "account:{tenant}:{}:{}",
        destination.channel(),
        destination.as_str()
    )
}

/// A revoked access token.
pub fn revoked(jti: &str) -> String {
    format!("revoked:{jti}")
}

/// Changed by every access-token revocation: a gate that sees it change checks its cached
/// tokens against the store again.
pub fn revocation_epoch() -> &'static str {
    "revoked-epoch"
}

/// A spent single-use token.
pub fn used(jti: &str) -> String {
    format!("used:{jti}")
}

/// A revoked refresh-token family.
pub fn family_revoked(family: &str) -> String {
    format!("family-revoked:{family}")
}

/// The phone a user's pending second factor goes to.
pub fn second_factor_user(tenant: &str, user_id: &str) -> String {
    format!("second-factor:user:{tenant}:{user_id}")
}

/// The user a login name is waiting for a second factor as.
pub fn second_factor_login(tenant: &str, login: &str) -> String {
    format!("second-factor:login:{tenant}:{login}")
}

/// One of the SMS guard's window counters: `counter` (`prefix`, `verified`, `country`,
/// `messages`, `cost`) of `scope` (a number prefix, a calling code, `hour`, `day`) in
/// the window of length `window` numbered `index` since the epoch. `reads`: the
/// companion that counts only the reads, which the guard subtracts (a counter can only be
/// read by hitting it).
pub fn sms_counter(
    counter: &str,
    scope: &str,
    window: std::time::Duration,
    index: u64,
    reads: bool,
) -> String {
    let part = if reads { "r" } else { "n" };
    format!(
        "sms-guard:{counter}:{scope}:{}:{index}:{part}",
        window.as_secs()
    )
}

/// The cool-down of a number prefix found pumped: holds until when, in epoch milliseconds.
pub fn sms_cool_down(prefix: &str) -> String {
    format!("sms-guard:cool-down:{prefix}")
}

/// Set by the first send an SMS guard cap refuses in a window, so that the trip is
/// logged once: `reason`, `scope` as in [`sms_counter`], the window's `index`.
pub fn sms_tripped(reason: &str, scope: &str, index: u64) -> String {
    format!("sms-guard:tripped:{reason}:{scope}:{index}")
}

/// Set while the SMS guard has refused sends lately (for one cool-down after a trip):
/// tenants with `challenge = "under_attack"` then ask every send for a solved challenge.
pub fn sms_guard_alert() -> &'static str {
    "sms-guard:alert"
}

/// A spent proof-of-work challenge, by its signature (hex).
pub fn challenge_used(signature: &str) -> String {
    format!("challenge-used:{signature}")
}
