//! One sign-in flow's state, kept by the browser in one short-lived cookie
//! (`otpgate_flow`) and sealed by the gate so it cannot be forged: the CSRF nonce every
//! form carries, where to go back to, the tenant, the identifier once known and when the
//! last code went. Every step replaces the one cookie; none is ever added beside it.

use http::HeaderMap;
use http::header::HeaderValue;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::PageSettings;
use crate::http::dialect::Context;

/// The flow cookie's name.
pub(crate) const FLOW_COOKIE: &str = "otpgate_flow";

/// What the seal is for: a flow never unseals as any other sealed value.
const PURPOSE: &str = "pages.flow";

/// Fresh random bytes, base64url: nonces that nobody can guess.
pub(crate) fn random_token() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A sign-in flow.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Flow {
    /// The CSRF nonce: every form of the flow carries it back.
    #[serde(rename = "n")]
    pub(crate) nonce: String,
    /// Where the browser goes once signed in; already checked with `safe_return`.
    #[serde(rename = "r")]
    pub(crate) return_to: String,
    /// The tenant, when the sign-in names one.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub(crate) tenant: Option<String>,
    /// The normalized email or phone the code went to.
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub(crate) identifier: Option<String>,
    /// When the last code was sent (engine clock, milliseconds).
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub(crate) sent_at: Option<u64>,
    /// When the flow stops being accepted (engine clock, milliseconds).
    #[serde(rename = "e")]
    pub(crate) expires_at: u64,
}

/// What the request's flow cookie holds.
pub(crate) enum FlowRead {
    /// No flow cookie.
    Missing,
    /// A cookie that does not unseal: altered, forged, or sealed by another secret.
    Tampered,
    /// A genuine flow past its expiry.
    Expired(Flow),
    /// A genuine, live flow.
    Live(Flow),
}

impl FlowRead {
    /// The flow, live or expired: enough to know where the browser meant to go back to.
    pub(crate) fn readable(&self) -> Option<&Flow> {
        match self {
            FlowRead::Expired(flow) | FlowRead::Live(flow) => Some(flow),
            _ => None,
        }
    }
}

impl Flow {
    /// A new flow going back to `return_to`, in `tenant`.
    pub(crate) fn new(return_to: String, tenant: Option<String>) -> Flow {
        Flow {
            nonce: random_token(),
            return_to,
            tenant,
            identifier: None,
            sent_at: None,
            expires_at: 0,
        }
    }

    /// Whether `csrf` is this flow's nonce, compared in constant time so that timing does
    /// not tell how much of a guess was right.
    pub(crate) fn accepts(&self, csrf: Option<&str>) -> bool {
        csrf.is_some_and(|csrf| bool::from(csrf.as_bytes().ct_eq(self.nonce.as_bytes())))
    }

    /// The `Set-Cookie` that replaces the flow cookie with this flow, valid for the
    /// flow's lifetime from now.
    pub(crate) fn cookie(
        &mut self,
        ctx: &Context<'_>,
        settings: &PageSettings,
    ) -> Option<HeaderValue> {
        let ttl = settings.flow_ttl;
        self.expires_at = ctx.gate.now().plus(ttl).0;
        let json = serde_json::to_vec(self).ok()?;
        let sealed = ctx.gate.seal(PURPOSE, &json);
        cookie_value(ctx, settings, &sealed, ttl.as_secs())
    }
}

/// The `Set-Cookie` that removes the flow cookie.
pub(crate) fn clear_cookie(ctx: &Context<'_>, settings: &PageSettings) -> Option<HeaderValue> {
    cookie_value(ctx, settings, "", 0)
}

fn cookie_value(
    ctx: &Context<'_>,
    settings: &PageSettings,
    value: &str,
    max_age: u64,
) -> Option<HeaderValue> {
    // Secure unless the session cookie is explicitly sent without it (plain-HTTP setups).
    let secure = ctx.settings.cookie.as_ref().is_none_or(|c| c.secure);
    let path = match settings.prefix.trim_end_matches('/') {
        "" => "/",
        path => path,
    };
    // HttpOnly: no script reads the nonce. SameSite=Strict: no other site's form or link
    // carries the flow. The one Path and name mean each step replaces the cookie.
    let text = format!(
        "{FLOW_COOKIE}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&text).ok()
}

/// The flow the request's cookie holds. Of several flow cookies (another path's, an old
/// one), the first genuine one counts.
pub(crate) fn read(ctx: &Context<'_>, headers: &HeaderMap) -> FlowRead {
    let mut found = FlowRead::Missing;
    for flow in flows(ctx, headers) {
        match flow {
            Some(flow) if ctx.gate.now().0 < flow.expires_at => return FlowRead::Live(flow),
            Some(flow) => found = FlowRead::Expired(flow),
            None if matches!(found, FlowRead::Missing) => found = FlowRead::Tampered,
            None => {}
        }
    }
    found
}

/// The live flow whose nonce is `csrf`, among every flow cookie the request carries: a
/// genuine flow cookie tossed in ahead of the browser's own (by a sibling subdomain, on a
/// longer path) must not hide the one the form came from.
pub(crate) fn matching(ctx: &Context<'_>, headers: &HeaderMap, csrf: Option<&str>) -> Option<Flow> {
    let now = ctx.gate.now().0;
    flows(ctx, headers)
        .flatten()
        .find(|flow| now < flow.expires_at && flow.accepts(csrf))
}

/// Every flow cookie of the request, unsealed: `None` for one that does not unseal.
fn flows<'h>(
    ctx: &'h Context<'_>,
    headers: &'h HeaderMap,
) -> impl Iterator<Item = Option<Flow>> + 'h {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == FLOW_COOKIE)
        .map(|(_, value)| {
            ctx.gate
                .unseal(PURPOSE, value)
                .and_then(|json| serde_json::from_slice::<Flow>(&json).ok())
        })
}
