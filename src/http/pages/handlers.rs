//! What each page does with a request: the sign-in flow's steps, sign-out and the
//! sign-in link's confirmation. Every answer is a page or a `303`, never JSON.

use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use serde_json::json;

use super::flow::{self, Flow, FlowRead};
use super::render::{View, with_retry_after};
use super::{Page, PageSettings};
use crate::gate::{GateError, SendOptions, SendRequest, VerifyRequest};
use crate::http::dialect::Context;
use crate::http::policy::safe_return;
use crate::http::{GateResponse, RequestView};
use crate::identifier::{Channel, Identifier, InvalidIdentifier};
use crate::token::Subject;

/// Answers a request to `page`.
pub(crate) async fn handle(
    ctx: &Context<'_>,
    settings: &PageSettings,
    page: Page,
    request: &RequestView<'_>,
    body: &[u8],
) -> GateResponse {
    let query = pairs(request.query.unwrap_or("").as_bytes());
    let flow = flow::read(ctx, request.headers);
    // The looks are those of the tenant the answer's flow is for: the one a new flow is
    // started in (`tenant`, or a link's `t`), else the flow's. Any other parameter would
    // dress one tenant's sign-in in another tenant's title and logo.
    let tenant_hint = match (page, *request.method == Method::GET) {
        (Page::SignIn | Page::SignOut, true) => first(&query, "tenant").map(str::to_owned),
        (Page::Link, true) => first(&query, "t").map(str::to_owned),
        _ => flow.readable().and_then(|f| f.tenant.clone()),
    };
    let view = View::new(ctx, settings, request.headers, tenant_hint.as_deref());
    let post = *request.method == Method::POST;
    let get = *request.method == Method::GET && page != Page::Resend;
    if !post && !get {
        let mut response = view.refusal(&GateError::MethodNotAllowed, None);
        let allow = match page {
            Page::Resend => "POST",
            _ => "GET, POST",
        };
        response
            .headers
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        return response;
    }
    if post && !is_form(request) {
        return view.refusal(&GateError::UnsupportedMediaType, None);
    }
    let step = Step {
        ctx,
        settings,
        request,
        view,
        flow,
        query,
        form: if post { pairs(body) } else { Vec::new() },
    };
    match (page, post) {
        (Page::SignIn, false) => step.show_sign_in(),
        (Page::SignIn, true) => step.send().await,
        (Page::Code, false) => step.show_code(),
        (Page::Code, true) => step.verify().await,
        (Page::Resend, _) => step.resend().await,
        (Page::SignOut, false) => step.show_sign_out(),
        (Page::SignOut, true) => step.sign_out().await,
        (Page::Link, false) => step.show_link(),
        (Page::Link, true) => step.verify().await,
        (Page::ChallengeScript, _) => super::challenge::script(),
    }
}

/// One request to one page.
struct Step<'a> {
    ctx: &'a Context<'a>,
    settings: &'a PageSettings,
    request: &'a RequestView<'a>,
    view: View<'a>,
    flow: FlowRead,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
}

/// A refusal to show inside a form: its status, its words and its `Retry-After`.
struct Problem<'e> {
    status: StatusCode,
    text: String,
    error: Option<&'e GateError>,
}

impl<'a> Step<'a> {
    /// `GET {prefix}/sign-in?return=&tenant=`: a new flow and the identifier form.
    fn show_sign_in(&self) -> GateResponse {
        let tenant = first(&self.query, "tenant").map(str::to_owned);
        if self.ctx.gate.tenant_channels(tenant.as_deref()).is_none() {
            return self.view.refusal(&GateError::UnknownTenant, None);
        }
        let return_to = self.return_url(first(&self.query, "return"));
        self.sign_in_form(Flow::new(return_to, tenant), None, None)
    }

    /// `POST {prefix}/sign-in`: sends the code, then `303` to the code form.
    async fn send(&self) -> GateResponse {
        let mut flow = match self.checked_flow() {
            Ok(flow) => flow,
            Err(expired) => return *expired,
        };
        let raw = self.field("identifier").unwrap_or("").trim().to_owned();
        if raw.is_empty() {
            let problem = self.problem_text(StatusCode::BAD_REQUEST, "error_identifier_required");
            return self.sign_in_form(flow, Some(problem), None);
        }
        let identifier = match parse_identifier(&raw) {
            Ok(identifier) => identifier,
            Err(error) => {
                let error = GateError::InvalidIdentifier(error);
                return self.sign_in_form(flow, Some(self.problem(&error)), Some(&raw));
            }
        };
        if let Err(error) = self.send_code(&flow, identifier.clone()).await {
            return self.sign_in_form(flow, Some(self.problem(&error)), Some(&raw));
        }
        flow.identifier = Some(identifier.as_str().to_owned());
        flow.sent_at = Some(self.ctx.gate.now().0);
        self.replace_flow(self.view.redirect(&self.page_path("code")), &mut flow)
    }

    /// `GET {prefix}/code`: the code form, or back to sign-in without a flow.
    fn show_code(&self) -> GateResponse {
        let flow = match self.started_flow() {
            Ok(flow) => flow,
            Err(restart) => return *restart,
        };
        let notice =
            (first(&self.query, "sent") == Some("1")).then(|| self.view.words.get("resent"));
        self.code_form(&flow, None, notice)
    }

    /// `POST {prefix}/resend`: a new code, then `303` to the code form.
    async fn resend(&self) -> GateResponse {
        let mut flow = match self.checked_flow() {
            Ok(flow) => flow,
            Err(expired) => return *expired,
        };
        let Some(identifier) = flow_identifier(&flow) else {
            return self.view.redirect(&self.restart_location(Some(&flow)));
        };
        if let Err(error) = self.send_code(&flow, identifier).await {
            return self.code_form(&flow, Some(self.problem(&error)), None);
        }
        flow.sent_at = Some(self.ctx.gate.now().0);
        let location = format!("{}?sent=1", self.page_path("code"));
        self.replace_flow(self.view.redirect(&location), &mut flow)
    }

    /// `POST {prefix}/code` and `POST {prefix}/link`: checks the code; right, the session
    /// cookie and `303` back; wrong, the code form with the refusal in words.
    async fn verify(&self) -> GateResponse {
        let flow = match self.checked_flow() {
            Ok(flow) => flow,
            Err(expired) => return *expired,
        };
        let Some(identifier) = flow_identifier(&flow) else {
            return self.view.redirect(&self.restart_location(Some(&flow)));
        };
        let code = self.field("code").unwrap_or("").trim();
        if code.is_empty() {
            let problem = self.problem_text(StatusCode::BAD_REQUEST, "error_code_required");
            return self.code_form(&flow, Some(problem), None);
        }
        let verified = self
            .ctx
            .gate
            .verify(VerifyRequest {
                tenant: flow.tenant.as_deref(),
                identifier,
                code,
                client_ip: self.request.client_ip,
            })
            .await;
        match verified {
            Ok(subject) => self.signed_in(&flow, &subject),
            Err(error) => self.code_form(&flow, Some(self.problem(&error)), None),
        }
    }

    /// The session cookie, the flow cookie cleared, and `303` to the return URL.
    fn signed_in(&self, flow: &Flow, subject: &Subject) -> GateResponse {
        let session = match self.ctx.gate.start_session(subject) {
            Ok(session) => session,
            Err(error) => return self.code_form(flow, Some(self.problem(&error)), None),
        };
        let Some(cookie) = self
            .ctx
            .settings
            .session_cookie(&session.access.token, session.access.expires_in)
        else {
            let text = self.view.words.get("error_no_cookie");
            let heading = self.view.words.get("error_heading");
            return self
                .view
                .message(StatusCode::INTERNAL_SERVER_ERROR, &heading, &text, None);
        };
        let mut response = self.view.redirect(&flow.return_to);
        response.headers.append(header::SET_COOKIE, cookie);
        self.clear_flow(response)
    }

    /// `GET {prefix}/sign-out`: the confirm form, in a new flow.
    fn show_sign_out(&self) -> GateResponse {
        let mut flow = Flow::new(self.settings.default_return.clone(), None);
        let response = self.view.render(
            StatusCode::OK,
            "sign_out.html",
            json!({ "csrf": flow.nonce }),
        );
        self.replace_flow(response, &mut flow)
    }

    /// `POST {prefix}/sign-out`: revokes the session the request carries and clears the
    /// cookies.
    async fn sign_out(&self) -> GateResponse {
        if let Err(expired) = self.checked_flow() {
            return *expired;
        }
        let gate = self.ctx.gate;
        if let Some(token) = self.ctx.settings.token_in(self.request.headers)
            && let Err(error) = gate.sign_out(token).await
        {
            // Not signed out: saying so would be a lie the person acts on.
            return self.view.refusal(&error, None);
        }
        let sign_in = self
            .settings
            .sign_in_location(&self.settings.default_return, None);
        let mut response = self.view.render(
            StatusCode::OK,
            "signed_out.html",
            json!({ "sign_in": sign_in }),
        );
        if let Some(cookie) = self.ctx.settings.session_cookie("", 0) {
            response.headers.append(header::SET_COOKIE, cookie);
        }
        self.clear_flow(response)
    }

    /// `GET {prefix}/link?e=&t=&r=&code=`: a confirm button and nothing else. Mail
    /// scanners that follow links spend no code: only the button's POST verifies it.
    fn show_link(&self) -> GateResponse {
        let tenant = first(&self.query, "t").map(str::to_owned);
        if self.ctx.gate.tenant_channels(tenant.as_deref()).is_none() {
            return self.view.refusal(&GateError::UnknownTenant, None);
        }
        let return_to = self.return_url(first(&self.query, "r"));
        let identifier = first(&self.query, "e").and_then(|e| parse_identifier(e).ok());
        let code = first(&self.query, "code").filter(|c| !c.is_empty() && c.len() <= 64);
        let (Some(identifier), Some(code)) = (identifier, code) else {
            let words = &self.view.words;
            let start = self
                .settings
                .sign_in_location(&return_to, tenant.as_deref());
            return self.view.message(
                StatusCode::BAD_REQUEST,
                &words.get("error_heading"),
                &words.get("error_invalid_link"),
                Some((&start, words.get("start_again"))),
            );
        };
        let mut flow = Flow::new(return_to, tenant);
        flow.identifier = Some(identifier.as_str().to_owned());
        let heading = self
            .view
            .words
            // In full, not masked: the address is in the link already, and a masked one
            // (`m•••@example.com`) would let a colleague's link sign someone in as the
            // colleague without their noticing (login CSRF with one click).
            .with("link_heading", "destination", identifier.as_str());
        let response = self.view.render(
            StatusCode::OK,
            "link.html",
            json!({
                "heading": heading,
                "e": identifier.as_str(),
                "tenant": flow.tenant,
                "return_to": flow.return_to,
                "code": code,
                "csrf": flow.nonce,
            }),
        );
        self.replace_flow(response, &mut flow)
    }

    /// The identifier form, replacing the flow cookie.
    fn sign_in_form(
        &self,
        mut flow: Flow,
        problem: Option<Problem<'_>>,
        identifier: Option<&str>,
    ) -> GateResponse {
        let channels = self
            .ctx
            .gate
            .tenant_channels(flow.tenant.as_deref())
            .unwrap_or_default();
        let (label, input_type, autocomplete) = match (
            channels.contains(&Channel::Email),
            channels.contains(&Channel::Sms),
        ) {
            (true, false) => ("label_email", "email", "email"),
            (false, true) => ("label_phone", "tel", "tel"),
            _ => ("label_either", "text", "username"),
        };
        let status = problem.as_ref().map_or(StatusCode::OK, |p| p.status);
        let response = self.view.render(
            status,
            "sign_in.html",
            json!({
                "label": self.view.words.get(label),
                "input_type": input_type,
                "autocomplete": autocomplete,
                "identifier": identifier,
                "error": problem.as_ref().map(|p| &p.text),
                "csrf": flow.nonce,
                "return_to": flow.return_to,
                "tenant": flow.tenant,
            }),
        );
        let response = problem_headers(response, problem.as_ref());
        self.replace_flow(response, &mut flow)
    }

    /// The code form of `flow`, which has an identifier.
    fn code_form(
        &self,
        flow: &Flow,
        problem: Option<Problem<'_>>,
        notice: Option<String>,
    ) -> GateResponse {
        let words = &self.view.words;
        let destination = flow_identifier(flow).map(|i| mask(&i)).unwrap_or_default();
        let now = self.ctx.gate.now();
        let ready_at = flow
            .sent_at
            .map(|sent| crate::otp::Timestamp(sent).plus(self.ctx.gate.policy().resend_cooldown));
        let resend_hint = match ready_at.map(|at| now.until(at)) {
            Some(wait) if !wait.is_zero() => words.with(
                "resend_wait",
                "wait",
                &words.wait(wait.as_millis().div_ceil(1000) as u64),
            ),
            _ => words.get("resend_ready"),
        };
        let status = problem.as_ref().map_or(StatusCode::OK, |p| p.status);
        let response = self.view.render(
            status,
            "code.html",
            json!({
                "sent_to": words.with("code_sent_to", "destination", &destination),
                "notice": notice,
                "error": problem.as_ref().map(|p| &p.text),
                "csrf": flow.nonce,
                "resend_hint": resend_hint,
                "restart": self.restart_location(Some(flow)),
            }),
        );
        problem_headers(response, problem.as_ref())
    }

    /// Sends a code for `flow` to `identifier`, with a sign-in link when they are on.
    async fn send_code(&self, flow: &Flow, identifier: Identifier) -> Result<(), GateError> {
        let link = self.link_prefix(flow, &identifier);
        let request = SendRequest {
            tenant: flow.tenant.as_deref(),
            identifier,
            client_ip: self.request.client_ip,
            locale: Some(self.view.words.locale.as_str()),
        };
        // An empty field is no challenge: the script did not run (no JavaScript).
        let challenge = self.field("challenge").filter(|c| !c.is_empty());
        let link_prefix = link.as_deref();
        let options = SendOptions {
            link_prefix,
            challenge,
        };
        self.ctx.gate.send_with(request, options).await.map(|_| ())
    }

    /// `{public_url}{prefix}/link?e=&t=&r=&code=`, when sign-in links are on. The host
    /// comes from the configuration only: one taken from the request's Host header would
    /// send the code to whoever forged it.
    fn link_prefix(&self, flow: &Flow, identifier: &Identifier) -> Option<String> {
        let public = self.settings.public_url.as_deref()?;
        if !self.settings.sign_in_links {
            return None;
        }
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("e", identifier.as_str());
        if let Some(tenant) = &flow.tenant {
            query.append_pair("t", tenant);
        }
        query.append_pair("r", &flow.return_to);
        Some(format!(
            "{}{}/link?{}&code=",
            public.trim_end_matches('/'),
            self.view.prefix(),
            query.finish()
        ))
    }

    /// The live flow whose CSRF nonce the form carries, or the "form has expired" page.
    fn checked_flow(&self) -> Result<Flow, Box<GateResponse>> {
        flow::matching(self.ctx, self.request.headers, self.field("csrf"))
            .ok_or_else(|| Box::new(self.expired()))
    }

    /// The live flow that has sent a code, or a `303` to a fresh sign-in.
    fn started_flow(&self) -> Result<Flow, Box<GateResponse>> {
        match &self.flow {
            FlowRead::Live(flow) if flow.identifier.is_some() => Ok(flow.clone()),
            other => Err(Box::new(
                self.view.redirect(&self.restart_location(other.readable())),
            )),
        }
    }

    /// `403` "This form has expired. Start again.", linking to a fresh sign-in that
    /// keeps the return URL when it can be read.
    fn expired(&self) -> GateResponse {
        let readable = self.flow.readable();
        let return_to = readable
            .map(|f| f.return_to.clone())
            .unwrap_or_else(|| self.return_url(self.field("return").or_else(|| self.field("r"))));
        let tenant = readable.and_then(|f| f.tenant.clone()).or_else(|| {
            self.field("tenant")
                .or_else(|| self.field("t"))
                .filter(|t| !t.is_empty() && self.ctx.gate.tenant_channels(Some(t)).is_some())
                .map(str::to_owned)
        });
        let words = &self.view.words;
        let start = self
            .settings
            .sign_in_location(&return_to, tenant.as_deref());
        let response = self.view.message(
            StatusCode::FORBIDDEN,
            &words.get("expired_heading"),
            &words.get("expired"),
            Some((&start, words.get("start_again"))),
        );
        self.clear_flow(response)
    }

    /// Where a browser starts again: sign-in, keeping the flow's return URL and tenant.
    fn restart_location(&self, flow: Option<&Flow>) -> String {
        let return_to = flow.map_or(self.settings.default_return.as_str(), |f| &f.return_to);
        let tenant = flow.and_then(|f| f.tenant.as_deref());
        self.settings.sign_in_location(return_to, tenant)
    }

    /// `raw` if it is a safe return URL, else the default one.
    fn return_url(&self, raw: Option<&str>) -> String {
        // HTTP/2 names the host in the target's authority instead of a Host header.
        let host = self
            .request
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(self.request.authority);
        raw.and_then(|raw| safe_return(raw, host, &self.settings.allowed_return_hosts))
            .unwrap_or_else(|| self.settings.default_return.clone())
    }

    fn page_path(&self, page: &str) -> String {
        format!("{}/{page}", self.view.prefix())
    }

    fn field(&self, name: &str) -> Option<&str> {
        first(&self.form, name)
    }

    fn problem<'e>(&self, error: &'e GateError) -> Problem<'e> {
        Problem {
            status: error.status(),
            text: self.view.error_text(error),
            error: Some(error),
        }
    }

    fn problem_text(&self, status: StatusCode, key: &str) -> Problem<'static> {
        Problem {
            status,
            text: self.view.words.get(key),
            error: None,
        }
    }

    /// `response` with the flow cookie replaced by `flow`.
    fn replace_flow(&self, mut response: GateResponse, flow: &mut Flow) -> GateResponse {
        if let Some(cookie) = flow.cookie(self.ctx, self.settings) {
            response.headers.append(header::SET_COOKIE, cookie);
        }
        response
    }

    /// `response` with the flow cookie removed.
    fn clear_flow(&self, mut response: GateResponse) -> GateResponse {
        if let Some(cookie) = flow::clear_cookie(self.ctx, self.settings) {
            response.headers.append(header::SET_COOKIE, cookie);
        }
        response
    }
}

fn problem_headers(response: GateResponse, problem: Option<&Problem<'_>>) -> GateResponse {
    match problem.and_then(|p| p.error) {
        Some(error) => with_retry_after(response, error),
        None => response,
    }
}

/// The identifier a flow's code went to.
fn flow_identifier(flow: &Flow) -> Option<Identifier> {
    flow.identifier
        .as_deref()
        .and_then(|i| parse_identifier(i).ok())
}

/// An email when it has an `@`, else a phone number, written with or without spaces,
/// dashes, dots and brackets.
fn parse_identifier(raw: &str) -> Result<Identifier, InvalidIdentifier> {
    let raw = raw.trim();
    if raw.contains('@') {
        return Identifier::email(raw);
    }
    let compact: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    Identifier::phone(&compact)
}

/// `a•••@example.com`, `+1•••2671`: enough for people to recognise where the code went.
fn mask(identifier: &Identifier) -> String {
    let text = identifier.as_str();
    match identifier {
        Identifier::Email(_) => match text.rsplit_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}•••@{domain}")
            }
            None => "•••".into(),
        },
        Identifier::Phone(_) => {
            let start: String = text.chars().take(2).collect();
            let end: String = text
                .chars()
                .skip(text.chars().count().saturating_sub(4))
                .collect();
            format!("{start}•••{end}")
        }
    }
}

/// The decoded pairs of a query string or form body.
fn pairs(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The first non-empty value of `name`.
fn first<'p>(pairs: &'p [(String, String)], name: &str) -> Option<&'p str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Whether the body is declared `application/x-www-form-urlencoded`.
fn is_form(request: &RequestView<'_>) -> bool {
    request
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}
