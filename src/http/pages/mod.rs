//! The gate's own pages for people in a browser: sign in (ask for an email or phone,
//! send the code, take the code, set the session cookie, go back), sign out, and the
//! sign-in link's confirmation.
//!
//! Server-rendered HTML without scripts, but for the proof-of-work script of tenants
//! that require a challenge on sends. One sign-in flow lives in one cookie,
//! `otpgate_flow` (Path = the prefix, HttpOnly, SameSite=Strict), sealed by the engine so
//! it cannot be forged; every form carries its nonce as `csrf`, and every step replaces
//! the cookie. Every answer is a page or a `303` with a strict Content-Security-Policy,
//! `no-store` and `no-referrer`; engine refusals are said in words, in English or French,
//! and each tenant can have its own title, logo, colours and texts.

use std::time::Duration;

use bytes::Bytes;

use super::dialect::Context;
use super::{GateResponse, RequestView};

mod branding;
mod challenge;
mod flow;
mod handlers;
mod render;
mod texts;

pub use branding::{Branding, Locale, is_color, is_logo_url, is_text_key, logo_origin};

/// A page the gate serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Page {
    /// `{prefix}/sign-in`: GET asks for an email or phone, POST sends the code.
    SignIn,
    /// `{prefix}/code`: GET shows the code form, POST verifies the code.
    Code,
    /// `{prefix}/resend`: POST sends a new code once the cooldown has passed.
    Resend,
    /// `{prefix}/sign-out`: GET asks to confirm, POST revokes the session.
    SignOut,
    /// `{prefix}/link`: GET shows a sign-in link's confirm button, POST signs in.
    Link,
    /// `{prefix}/challenge.js`: the script that solves a send's proof-of-work challenge.
    ChallengeScript,
}

impl Page {
    /// The page at `path` under `prefix`, if any.
    pub fn at(path: &str, prefix: &str) -> Option<Page> {
        match path.strip_prefix(prefix.trim_end_matches('/'))? {
            "/sign-in" => Some(Page::SignIn),
            "/code" => Some(Page::Code),
            "/resend" => Some(Page::Resend),
            "/sign-out" => Some(Page::SignOut),
            "/link" => Some(Page::Link),
            "/challenge.js" => Some(Page::ChallengeScript),
            _ => None,
        }
    }
}

/// How the pages are served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageSettings {
    /// Where the pages live: `{prefix}/sign-in`, `{prefix}/code`, … and forward-auth's
    /// `{prefix}/check`.
    pub prefix: String,
    /// Where a sign-in without a usable return URL ends.
    pub default_return: String,
    /// Hosts besides the request's own that a return URL may name.
    pub allowed_return_hosts: Vec<String>,
    /// Whether code emails also carry a sign-in link (off by default). Links start with
    /// [`public_url`](Self::public_url); without one, no link is sent.
    pub sign_in_links: bool,
    /// How long one sign-in flow (its CSRF cookie) lasts.
    pub flow_ttl: Duration,
    /// The site's own address (`https://app.example.com`), which sign-in links start
    /// with. Required for links: a link's host must never come from the request's Host
    /// header, or a forged one would receive the code.
    pub public_url: Option<String>,
    /// Per-tenant looks and words; tenants without one get the defaults.
    pub branding: Vec<Branding>,
    /// Whether `{prefix}/check` answers forward-auth questions (from trusted proxies
    /// only). Off for a gate that is the only proxy: then no client behind a trusted load
    /// balancer can ask it about the policy.
    pub forward_auth: bool,
}

impl Default for PageSettings {
    fn default() -> Self {
        PageSettings {
            prefix: "/auth".into(),
            default_return: "/".into(),
            allowed_return_hosts: Vec::new(),
            sign_in_links: false,
            flow_ttl: Duration::from_secs(15 * 60),
            public_url: None,
            branding: Vec::new(),
            forward_auth: true,
        }
    }
}

impl PageSettings {
    /// Where a browser is sent to sign in and then come back to `return_to` (a path on
    /// this site), in `tenant` when the rule names one.
    pub fn sign_in_location(&self, return_to: &str, tenant: Option<&str>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("return", return_to);
        if let Some(tenant) = tenant {
            query.append_pair("tenant", tenant);
        }
        format!(
            "{}/sign-in?{}",
            self.prefix.trim_end_matches('/'),
            query.finish()
        )
    }
}

/// Answers a request to `page`, errors included: pages answer in HTML.
pub(crate) async fn handle(
    ctx: &Context<'_>,
    settings: &PageSettings,
    page: Page,
    request: &RequestView<'_>,
    body: Bytes,
) -> GateResponse {
    handlers::handle(ctx, settings, page, request, &body).await
}
