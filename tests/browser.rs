//! The sign-in pages in a real browser: a headless Chromium, driven over WebDriver,
//! signs in through the `otpgate` binary in front of a small HTML app, the way a person
//! would: protected page, sign-in form, code form, back to the page, sign out.
//!
//! The same sign-in runs against the tower layer around the app, served in this process.
//!
//! Every page the tests pass is checked with axe-core against WCAG 2.1 A and AA.
//!
//! Needs the apt packages `chromium` and `chromium-driver`, and axe-core from npm in
//! `target/axe-core` (`make test-deps` installs all three). Each test saves screenshots
//! of the pages it passes in `target/screenshots/`; with `OTPGATE_UPDATE_SCREENSHOTS=1`
//! those of the proxy's pages are also copied to `docs/screenshots/`.

#[path = "browser/axe.rs"]
mod axe;
mod common;
#[path = "browser/harness.rs"]
mod harness;

use std::sync::OnceLock;

use harness::{Browser, SESSION_COOKIE, Site};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::{Semaphore, SemaphorePermit};

/// A few browsers at a time: each Chromium takes a core while it starts.
async fn browser_slot() -> SemaphorePermit<'static> {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS
        .get_or_init(|| Semaphore::new(2))
        .acquire()
        .await
        .expect("the semaphore is never closed")
}

/// Checks what every page promises (one `<main>` holding one `<h1>`, no WCAG 2.1 A or
/// AA violation), then saves and checks a screenshot of it named `name`.
async fn page_shown(browser: &Browser, name: &str) {
    page_checked(browser, name).await;
    browser.screenshot(name, true).await;
}

/// [`page_shown`] for the layer's pages, whose screenshots stay out of the docs.
async fn layer_page_shown(browser: &Browser, name: &str) {
    page_checked(browser, name).await;
    browser.screenshot(name, false).await;
}

async fn page_checked(browser: &Browser, name: &str) {
    let count = |css: &'static str| async move {
        browser
            .client
            .find_all(fantoccini::Locator::Css(css))
            .await
            .map_or(0, |found| found.len())
    };
    assert_eq!(count("main").await, 1, "{name}: one <main>");
    assert_eq!(count("main h1").await, 1, "{name}: one <h1> in <main>");
    assert_eq!(count("h1").await, 1, "{name}: no <h1> outside <main>");
    assert!(
        !axe::language(browser).await.is_empty(),
        "{name}: <html lang> is not set"
    );
    axe::assert_accessible(browser, name).await;
}

/// The sign-in page's `return` parameter in `url`.
fn return_of(url: &reqwest::Url) -> Option<String> {
    url.query_pairs()
        .find(|(name, _)| name == "return")
        .map(|(_, value)| value.into_owned())
}

/// On the sign-in page: types `email`, sends, and waits for the code page.
async fn ask_for_code(browser: &Browser, email: &str) {
    browser.element("sign-in").await;
    browser.fill_and_click("identifier", email, "send").await;
    browser.wait_for_path("/auth/code").await;
}

/// On the code page: types the code the gate delivered and verifies it.
async fn enter_code(browser: &Browser, site: &Site) {
    let code = site.next_code().await;
    browser.element("verify").await;
    browser.fill_and_click("code", &code, "verify-button").await;
}

/// Signs `email` in from `/app/` and waits until the app greets them.
async fn sign_in_at_app(browser: &Browser, site: &Site, email: &str) {
    browser.goto(&site.url("/app/")).await;
    browser.wait_for_path("/auth/sign-in").await;
    ask_for_code(browser, email).await;
    enter_code(browser, site).await;
    browser.wait_for_path("/app/").await;
    let greeting = browser.text_of("main h1").await;
    assert_eq!(greeting, format!("Hello {email}"));
}

/// The main sign-in, from a protected page back to it, checking each page on the way;
/// `shown` checks and photographs a page under the name it is given.
async fn protected_page_round_trip<F, Fut>(site: &Site, browser: &Browser, shown: F)
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let origin = reqwest::Url::parse(&site.base).unwrap().origin();
    // A navigation without a session is sent to sign in, remembering where it was going.
    browser.goto(&site.url("/app/")).await;
    let url = browser.wait_for_path("/auth/sign-in").await;
    assert_eq!(url.origin(), origin);
    assert_eq!(return_of(&url).as_deref(), Some("/app/"), "{url}");

    // The sign-in page as the contract describes it, its field focused to type in.
    browser.element("sign-in").await;
    assert_eq!(
        browser
            .element("identifier")
            .await
            .attr("name")
            .await
            .unwrap()
            .as_deref(),
        Some("identifier")
    );
    assert!(!browser.text_of("main h1").await.trim().is_empty());
    assert_eq!(axe::focused_id(browser).await, "identifier");
    shown("sign-in").await;

    browser
        .fill_and_click("identifier", "alice@example.com", "send")
        .await;
    browser.wait_for_path("/auth/code").await;
    let code_input = browser.element("code").await;
    assert_eq!(
        code_input.attr("autocomplete").await.unwrap().as_deref(),
        Some("one-time-code")
    );
    assert_eq!(
        code_input.attr("inputmode").await.unwrap().as_deref(),
        Some("numeric")
    );
    assert_eq!(axe::focused_id(browser).await, "code");
    browser.element("resend-button").await;
    shown("code").await;

    enter_code(browser, site).await;
    let url = browser.wait_for_path("/app/").await;
    assert_eq!(url.origin(), origin);
    // The app's own page, greeting the email the gate injected.
    assert_eq!(browser.text_of("main h1").await, "Hello alice@example.com");
    let (_, http_only) = browser.session_cookie().await;
    assert!(http_only, "the {SESSION_COOKIE} cookie must be HttpOnly");
    shown("app").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_from_a_protected_page_returns_to_it() {
    let _slot = browser_slot().await;
    let site = Site::start().await;
    let browser = Browser::start().await;
    protected_page_round_trip(&site, &browser, |name| page_shown(&browser, name)).await;
    browser.quit().await;
}

/// The pages served by the tower layer around the app, not the proxy: the same sign-in,
/// the same checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_through_the_tower_layer_returns_to_the_page() {
    let _slot = browser_slot().await;
    let site = Site::start_layer().await;
    let browser = Browser::start().await;
    protected_page_round_trip(&site, &browser, |name| {
        let browser = &browser;
        async move { layer_page_shown(browser, &format!("layer-{name}")).await }
    })
    .await;
    browser.quit().await;
}

/// The pages the sign-in does not pass through: a sign-in link's confirmation and the
/// "form expired" answer to a form whose sign-in cookie is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_and_expired_pages_are_accessible() {
    let _slot = browser_slot().await;
    let site = Site::start().await;
    let browser = Browser::start().await;

    // The policy forbids every script on the page; the checks' own scripts still run.
    browser.goto(&site.url("/auth/sign-in")).await;
    browser.element("sign-in").await;
    assert!(
        !axe::inline_script_runs(&browser).await,
        "an inline script ran on the sign-in page"
    );

    // Showing a link's confirm button spends nothing, so any code shows it.
    browser
        .goto(&site.url("/auth/link?e=alice%40example.com&r=%2Fapp%2F&code=123456"))
        .await;
    browser.element("link").await;
    assert_eq!(axe::focused_id(&browser).await, "confirm-button");
    page_shown(&browser, "link").await;

    browser.goto(&site.url("/auth/sign-in?return=/app/")).await;
    browser.element("sign-in").await;
    browser.client.delete_all_cookies().await.unwrap();
    browser
        .fill_and_click("identifier", "judy@example.com", "send")
        .await;
    let start_again = browser.element("start-again").await;
    let heading = browser.text_of("main h1").await;
    assert!(heading.to_lowercase().contains("expired"), "{heading}");
    let href = start_again.attr("href").await.unwrap().unwrap_or_default();
    assert!(href.contains("/auth/sign-in"), "{href}");
    assert_eq!(axe::focused_id(&browser).await, "start-again");
    page_shown(&browser, "expired").await;

    // The check itself sees violations: a field without a label, and light grey on white (set
    // through the DOM: the policy drops `style` attributes).
    browser
        .client
        .execute(
            "const input = document.createElement('input');\
             input.id = 'unlabelled';\
             const faint = document.createElement('p');\
             faint.id = 'faint';\
             faint.textContent = 'Hard to read';\
             faint.style.color = '#bbbbbb';\
             faint.style.background = '#ffffff';\
             document.querySelector('main').append(input, faint);",
            vec![],
        )
        .await
        .unwrap();
    let found = axe::violations(&browser, "expired, spoiled")
        .await
        .join("\n");
    for rule in ["label", "color-contrast"] {
        assert!(
            found.contains(&format!("  {rule} (")),
            "{rule} not found in:\n{found}"
        );
    }
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_without_a_session_gets_401_json_not_a_redirect() {
    let _slot = browser_slot().await;
    let site = Site::start().await;
    let browser = Browser::start().await;
    browser.goto(&site.url("/")).await;
    assert_eq!(browser.text_of("main h1").await, "Welcome");

    let answer = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             fetch('/api/data')\
               .then(async r => done({status: r.status, redirected: r.redirected, url: r.url, body: await r.text()}))\
               .catch(e => done({failed: String(e)}));",
            vec![],
        )
        .await
        .expect("the script runs");
    assert_eq!(answer["status"], 401, "{answer}");
    assert_eq!(answer["redirected"], false, "{answer}");
    assert_eq!(answer["url"], site.url("/api/data"), "{answer}");
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"));
    assert_eq!(body["error"], "unauthorized", "{answer}");
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_code_shows_an_error_on_the_code_page() {
    let _slot = browser_slot().await;
    let site = Site::start().await;
    let browser = Browser::start().await;
    browser.goto(&site.url("/app/")).await;
    browser.wait_for_path("/auth/sign-in").await;
    ask_for_code(&browser, "dora@example.com").await;

    let code = site.next_code().await;
    // The delivered code with its last digit changed: certainly wrong.
    let mut wrong: Vec<char> = code.chars().collect();
    if let Some(last) = wrong.last_mut() {
        *last = if *last == '0' { '1' } else { '0' };
    }
    let wrong: String = wrong.into_iter().collect();
    browser
        .fill_and_click("code", &wrong, "verify-button")
        .await;
    let error = browser.text_of("#error[role=alert]").await;
    let words = error
        .split_whitespace()
        .filter(|word| word.chars().any(char::is_alphabetic))
        .count();
    assert!(
        words >= 2 && !error.contains('{') && !error.contains("invalid_code"),
        "the error is not a sentence for a person: {error:?}"
    );
    let url = browser.url().await;
    assert_eq!(url.path(), "/auth/code", "{url}");
    browser.element("verify").await;
    page_shown(&browser, "code-error").await;

    // The right code still signs in from the page that showed the error.
    browser.fill_and_click("code", &code, "verify-button").await;
    browser.wait_for_path("/app/").await;
    assert_eq!(browser.text_of("main h1").await, "Hello dora@example.com");
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_revokes_the_session_cookie() {
    let _slot = browser_slot().await;
    let site = Site::start().await;
    let browser = Browser::start().await;
    sign_in_at_app(&browser, &site, "erin@example.com").await;

    let (cookie, _) = browser.session_cookie().await;
    let client = reqwest::Client::new();
    let with_cookie = || {
        client
            .get(site.url("/api/data"))
            .header("cookie", format!("{SESSION_COOKIE}={cookie}"))
            .send()
    };
    let before = with_cookie().await.unwrap();
    assert_eq!(
        before.status(),
        StatusCode::OK,
        "the browser's cookie works elsewhere"
    );
    assert_eq!(
        before.json::<Value>().await.unwrap()["email"],
        "erin@example.com"
    );

    browser.goto(&site.url("/auth/sign-out")).await;
    browser.element("sign-out").await;
    page_shown(&browser, "sign-out").await;
    browser.click("sign-out-button").await;
    let heading = harness::poll("a \"signed out\" heading", || async {
        let heading = browser
            .client
            .find(fantoccini::Locator::Css("main h1"))
            .await
            .ok()?;
        let text = heading.text().await.ok()?;
        text.to_lowercase().contains("signed out").then_some(text)
    })
    .await;
    assert!(!heading.is_empty());
    page_shown(&browser, "signed-out").await;

    // The browser is sent to sign in again, and the old cookie is refused everywhere.
    browser.goto(&site.url("/app/")).await;
    let url = browser.wait_for_path("/auth/sign-in").await;
    assert_eq!(return_of(&url).as_deref(), Some("/app/"), "{url}");
    let after = with_cookie().await.unwrap();
    assert_eq!(
        after.status(),
        StatusCode::UNAUTHORIZED,
        "a signed-out cookie must be revoked"
    );
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_return_url_ends_on_the_default_page() {
    let _slot = browser_slot().await;
    let site = Site::start().await;
    let browser = Browser::start().await;
    let origin = reqwest::Url::parse(&site.base).unwrap().origin();
    for (forged, email) in [
        ("//evil.example/x", "frank@example.com"),
        ("https%3A%2F%2Fevil.example%2F", "grace@example.com"),
        ("/%2F%2Fevil.example", "heidi@example.com"),
        ("/%5Cevil.example", "ivan@example.com"),
    ] {
        browser
            .goto(&site.url(&format!("/auth/sign-in?return={forged}")))
            .await;
        ask_for_code(&browser, email).await;
        enter_code(&browser, &site).await;
        let url = browser.wait_for_path("/").await;
        assert_eq!(url.origin(), origin, "return={forged} left the site: {url}");
        assert_eq!(
            browser.text_of("main h1").await,
            "Welcome",
            "return={forged}"
        );
        // The next forged URL starts from no session and no sign-in under way.
        browser.client.delete_all_cookies().await.unwrap();
    }
    browser.quit().await;
}

/// A PNG of `width` × `height` pixels of one colour, with `ink` pixels of two others
/// drawn from the top left.
fn synthetic_png(width: u32, height: u32, ink: usize) -> Vec<u8> {
    let mut pixels = vec![255u8; (width * height * 3) as usize];
    for (index, pixel) in pixels.chunks_exact_mut(3).take(ink).enumerate() {
        let shade = if index % 2 == 0 { 0 } else { 90 };
        pixel.copy_from_slice(&[shade, shade, shade]);
    }
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&pixels).unwrap();
    writer.finish().unwrap();
    png
}

/// Whether the screenshot check refuses `png` for a window of `size`.
fn refused(png: &[u8], size: (u32, u32)) -> bool {
    std::panic::catch_unwind(|| harness::check_screenshot("synthetic", png, size)).is_err()
}

#[test]
fn the_screenshot_check_refuses_blank_windows_and_wrong_sizes() {
    let window = harness::WINDOW;
    let pixels = (window.0 * window.1) as usize;
    // A page with some text passes: 0.2% of its pixels are ink.
    assert!(!refused(
        &synthetic_png(window.0, window.1, pixels / 500),
        window
    ));
    assert!(
        refused(&synthetic_png(window.0, window.1, 0), window),
        "blank"
    );
    assert!(
        refused(&synthetic_png(window.0, window.1, 20), window),
        "a speck"
    );
    assert!(
        refused(&synthetic_png(800, 600, pixels / 500), window),
        "wrong size"
    );
    assert!(refused(b"not a png", window), "not a PNG");
}

/// A tenant that requires a proof-of-work challenge on sends: the sign-in page's own
/// script fetches one, solves it with Web Crypto and fills the form, so signing in reads
/// as usual (the gate refuses a send without a solved challenge, so reaching the code page
/// proves it was solved in the browser).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_challenges_signs_in_through_the_pages_script() {
    let _slot = browser_slot().await;
    let site = Site::start_layer_with(
        "[[tenants]]\nid = \"default\"\nchallenge = \"always\"\nchallenge_max_number = 20000\n",
    )
    .await;
    let browser = Browser::start().await;
    browser.goto(&site.url("/app/")).await;
    browser.wait_for_path("/auth/sign-in").await;
    let field = browser
        .client
        .find(fantoccini::Locator::Css("#sign-in input[name=challenge]"))
        .await
        .expect("the sign-in form carries a challenge field");
    // Solved in the background while the page is read; poll until the script filled it.
    let field = &field;
    let payload = harness::poll("the challenge is solved", || async move {
        field
            .prop("value")
            .await
            .ok()
            .flatten()
            .filter(|v| !v.is_empty())
    })
    .await;
    assert!(payload.len() > 100, "{payload}");
    page_checked(&browser, "challenge-sign-in").await;
    ask_for_code(&browser, "carol@example.com").await;
    enter_code(&browser, &site).await;
    browser.wait_for_path("/app/").await;
    assert_eq!(browser.text_of("main h1").await, "Hello carol@example.com");
    browser.quit().await;
}
