//! The values the engine takes and gives: tenants, limits, requests, outcomes, the
//! verified caller and its session.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::identifier::{Channel, Identifier};
use crate::otp::Rate;
use crate::token::{Claims, MintedToken};

/// A tenant: one set of users with its own channels and account rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// Its id, as clients name it.
    pub id: String,
    /// The channels its users may receive codes by.
    pub channels: Vec<Channel>,
    /// Whether an unknown identifier becomes an account on its first verified code.
    pub auto_create: bool,
    /// Whether send answers say if the account existed. Off by default: on, it lets
    /// anyone enumerate accounts.
    pub reveal_account: bool,
    /// The name messages are signed with (a location, a product); none when `None`.
    pub display_name: Option<String>,
    /// Which destinations it sends codes to. By default every country and email domain,
    /// and only the number types a person carries (mobile; VoIP refused).
    pub destinations: super::guard::Destinations,
    /// Whether its sends need a solved proof-of-work challenge, and how hard one is.
    pub challenge: super::guard::ChallengePolicy,
}

impl Tenant {
    /// The default tenant: email and SMS, auto-create on, accounts not revealed.
    pub fn new(id: &str) -> Tenant {
        Tenant {
            id: id.to_owned(),
            channels: vec![Channel::Email, Channel::Sms],
            auto_create: true,
            reveal_account: false,
            display_name: None,
            destinations: super::guard::Destinations::default(),
            challenge: super::guard::ChallengePolicy::default(),
        }
    }
}

/// Per-IP limits (per-identifier limits are in [`CodePolicy`](crate::otp::CodePolicy)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpLimits {
    /// Sends from one client IP.
    pub sends: Rate,
    /// Verifies from one client IP.
    pub verifies: Rate,
}

impl Default for IpLimits {
    fn default() -> Self {
        IpLimits {
            sends: Rate::new(30, Duration::from_secs(5 * 60)),
            verifies: Rate::new(60, Duration::from_secs(5 * 60)),
        }
    }
}

/// A verified identity: what the app behind the gate learns about the caller. It is
/// also put in the request's extensions.
#[derive(Clone)]
pub struct Identity {
    /// The token's claims.
    pub claims: Arc<Claims>,
    /// The token itself (forwarded so the app can verify it independently).
    pub token: Arc<str>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a bearer credential: whoever reads a debug log must not be able to
        // replay it.
        f.debug_struct("Identity")
            .field("claims", &self.claims)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Identity {
    /// The account id.
    pub fn subject(&self) -> &str {
        &self.claims.sub
    }

    /// The verified email, if any.
    pub fn email(&self) -> Option<&str> {
        self.claims.email.as_deref()
    }

    /// The verified phone, if any.
    pub fn phone(&self) -> Option<&str> {
        self.claims.phone.as_deref()
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.claims.tenant
    }
}

/// A send request.
#[derive(Debug)]
pub struct SendRequest<'a> {
    /// The tenant named by the client; the default tenant when `None`.
    pub tenant: Option<&'a str>,
    /// Where the code goes.
    pub identifier: Identifier,
    /// The client's address, for per-IP limits.
    pub client_ip: Option<IpAddr>,
    /// The language the message should be in (`fr`, `pt-BR`), where a template has it.
    pub locale: Option<&'a str>,
}

/// How a send is made, beyond what it asks for.
#[derive(Clone, Copy, Debug, Default)]
pub struct SendOptions<'a> {
    /// An email also carries a sign-in link: this prefix with the code appended (an
    /// address ending in `code=`). Its origin must come from configuration, never from
    /// the request: a link to another host would hand it the code.
    pub link_prefix: Option<&'a str>,
    /// The solved proof-of-work challenge the client sent (ALTCHA's base64 payload), for
    /// tenants that require one.
    pub challenge: Option<&'a str>,
}

/// What a successful send may tell the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendOutcome {
    /// Whether the account existed; `None` unless the tenant reveals accounts.
    pub account_exists: Option<bool>,
}

/// A verify request.
#[derive(Debug)]
pub struct VerifyRequest<'a> {
    /// The tenant; the default one when `None`.
    pub tenant: Option<&'a str>,
    /// Whose code it is.
    pub identifier: Identifier,
    /// The code as typed.
    pub code: &'a str,
    /// The client's address, for per-IP limits.
    pub client_ip: Option<IpAddr>,
}

/// What a sign-in yields: an access token and, when refresh tokens are on, a refresh token.
#[derive(Clone, Debug)]
pub struct Session {
    /// The access token.
    pub access: MintedToken,
    /// The refresh token.
    pub refresh: Option<MintedToken>,
}
