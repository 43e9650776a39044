//! What the browser tests stand on: chromedriver and a headless Chromium, the real
//! `otpgate` binary in front of a small HTML app, bounded waits and screenshot checks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use otpgate::config::Config;
use otpgate::tower::OtpLayer;
use serde_json::{Value, json};

use crate::common::{self, RunningGate, WebhookReceiver};

/// How long any wait for the browser or a server lasts before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The window every page is shown and photographed in.
pub const WINDOW: (u32, u32) = (1024, 768);

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const MISSING: &str = "install the apt packages `chromium chromium-driver` (`make test-deps` does)";

/// chromedriver on a free loopback port, in a process group of its own so that the
/// Chromium it starts dies with it. Killed when dropped.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    async fn start() -> Chromedriver {
        for program in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: {MISSING}"
            );
        }
        let port = common::free_port();
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            0,
        )
        .spawn()
        .unwrap_or_else(|e| panic!("{CHROMEDRIVER} does not start ({e}): {MISSING}"));
        let driver = Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        poll(&format!("chromedriver ready on port {port}"), || async {
            let answer = reqwest::get(&status).await.ok()?;
            let body: Value = answer.json().await.ok()?;
            body["value"]["ready"].as_bool().filter(|ready| *ready)
        })
        .await;
        driver
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and every Chromium process it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session. Its processes are killed when it is dropped; a test that
/// ends normally calls [`Browser::quit`] first.
pub struct Browser {
    pub client: Client,
    _driver: Chromedriver,
}

impl Browser {
    pub async fn start() -> Browser {
        let driver = Chromedriver::start().await;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-sync",
                    "--lang=en-US",
                    "--hide-scrollbars",
                ],
            }),
        );
        let client = tokio::time::timeout(
            Duration::from_secs(30),
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&driver.url),
        )
        .await
        .unwrap_or_else(|_| panic!("Chromium did not start within 30 s: {MISSING}"))
        .unwrap_or_else(|e| panic!("no Chromium session ({e}): {MISSING}"));
        let browser = Browser {
            client,
            _driver: driver,
        };
        browser.fit_viewport().await;
        browser
    }

    /// Resizes the window so that the page itself, without whatever the headless window
    /// keeps for its frame, is [`WINDOW`]: screenshots then have exactly that size. The
    /// page sees a resize a moment after it is made, so this measures until it matches.
    async fn fit_viewport(&self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let viewport = self.viewport().await;
            if viewport == WINDOW {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the page's viewport stays {viewport:?}, not {WINDOW:?}"
            );
            let (outer_width, outer_height) = self.client.get_window_size().await.unwrap();
            let fit = |outer: u64, inner: u32, wanted: u32| {
                let outer = u32::try_from(outer).unwrap_or(wanted);
                (outer + wanted).saturating_sub(inner).max(wanted)
            };
            self.client
                .set_window_size(
                    fit(outer_width, viewport.0, WINDOW.0),
                    fit(outer_height, viewport.1, WINDOW.1),
                )
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page's viewport in device pixels.
    async fn viewport(&self) -> (u32, u32) {
        let size = self
            .client
            .execute(
                "return [Math.round(innerWidth * devicePixelRatio), \
                 Math.round(innerHeight * devicePixelRatio)]",
                vec![],
            )
            .await
            .expect("the viewport's size");
        let side = |index: usize| {
            size[index]
                .as_u64()
                .and_then(|side| u32::try_from(side).ok())
                .unwrap_or_else(|| panic!("a viewport size of {size}"))
        };
        (side(0), side(1))
    }

    /// Ends the session, closing Chromium.
    pub async fn quit(self) {
        let _ = tokio::time::timeout(DEADLINE, self.client.clone().close()).await;
    }

    pub async fn goto(&self, url: &str) {
        tokio::time::timeout(DEADLINE, self.client.goto(url))
            .await
            .unwrap_or_else(|_| panic!("{url} did not load within {DEADLINE:?}"))
            .unwrap_or_else(|e| panic!("navigating to {url}: {e}"));
    }

    pub async fn url(&self) -> reqwest::Url {
        self.client.current_url().await.expect("the current URL")
    }

    /// The element with `id`, waiting for it to appear.
    pub async fn element(&self, id: &str) -> Element {
        let what = format!("an element with id `{id}`");
        let found = poll(&what, || async {
            self.client.find(Locator::Id(id)).await.ok()
        });
        match tokio::time::timeout(DEADLINE + Duration::from_secs(1), found).await {
            Ok(element) => element,
            Err(_) => panic!("{}", self.describe(&what).await),
        }
    }

    /// The text of the element matching `css`, waiting for it to appear.
    pub async fn text_of(&self, css: &str) -> String {
        let what = format!("an element matching `{css}`");
        poll(&what, || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            element.text().await.ok()
        })
        .await
    }

    /// Waits until the page's path is `path`; returns the whole URL.
    pub async fn wait_for_path(&self, path: &str) -> reqwest::Url {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(url) = self.client.current_url().await
                && url.path() == path
                && self.loaded().await
            {
                return url;
            }
            if Instant::now() > deadline {
                panic!("{}", self.describe(&format!("the path {path}")).await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn loaded(&self) -> bool {
        self.client
            .execute("return document.readyState", vec![])
            .await
            .is_ok_and(|state| state == "complete")
    }

    /// Types `text` into the input with `id`, then clicks the button with `button`.
    pub async fn fill_and_click(&self, id: &str, text: &str, button: &str) {
        let input = self.element(id).await;
        input.clear().await.expect("clearing the input");
        input.send_keys(text).await.expect("typing");
        self.click(button).await;
    }

    pub async fn click(&self, id: &str) {
        self.element(id)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking #{id}: {e}"));
    }

    /// The value of the session cookie as the browser holds it (WebDriver sees HttpOnly
    /// cookies too), and whether it is HttpOnly.
    pub async fn session_cookie(&self) -> (String, bool) {
        let cookie = self
            .client
            .get_named_cookie(SESSION_COOKIE)
            .await
            .unwrap_or_else(|e| panic!("no {SESSION_COOKIE} cookie in the browser: {e}"));
        (cookie.value().to_owned(), cookie.http_only() == Some(true))
    }

    /// Saves a screenshot of the window as `target/screenshots/{name}.png` and checks
    /// that it is a PNG of the window's size that shows something; a good one `for_docs`
    /// is also copied to `docs/screenshots/` when `OTPGATE_UPDATE_SCREENSHOTS=1`.
    pub async fn screenshot(&self, name: &str, for_docs: bool) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let file = format!("{name}.png");
        let dir = target_dir().join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        // Saved before the checks, so that a failing one can be looked at.
        std::fs::write(dir.join(&file), &png).unwrap();
        // The window's size, unless the page changed the viewport since the start.
        assert_eq!(self.viewport().await, WINDOW, "the viewport of {name}");
        check_screenshot(name, &png, WINDOW);
        if for_docs && std::env::var("OTPGATE_UPDATE_SCREENSHOTS").is_ok_and(|value| value == "1") {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::write(docs.join(&file), &png).unwrap();
        }
    }

    /// A failure message: what was awaited, where the browser is and what it shows.
    async fn describe(&self, what: &str) -> String {
        let url = self
            .client
            .current_url()
            .await
            .map_or_else(|e| format!("<{e}>"), |url| url.to_string());
        let source = self.client.source().await.unwrap_or_default();
        let source: String = source.chars().take(2000).collect();
        format!("no {what} within {DEADLINE:?}; the browser is at {url}, showing:\n{source}")
    }
}

/// The session cookie's name (the default `token.cookie`).
pub const SESSION_COOKIE: &str = "otpgate_session";

/// The target directory this test binary was built into (`target/debug/deps/browser-…`
/// lies three levels below it), wherever `CARGO_TARGET_DIR` put it.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        Path::to_owned,
    )
}

/// Checks that `png` decodes as a PNG of `size` that shows a page, not a blank window:
/// more than two colours, and at least 0.1% of its pixels unlike its background (the
/// most common colour).
pub fn check_screenshot(name: &str, png: &[u8], size: (u32, u32)) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder
        .read_info()
        .unwrap_or_else(|e| panic!("screenshot {name} is not a PNG: {e}"));
    let mut pixels = vec![0; reader.output_buffer_size().expect("a PNG of a sane size")];
    let frame = reader
        .next_frame(&mut pixels)
        .unwrap_or_else(|e| panic!("screenshot {name} does not decode: {e}"));
    assert_eq!(
        (frame.width, frame.height),
        size,
        "screenshot {name} is not the window's size"
    );
    let channels = frame.color_type.samples();
    assert_eq!(frame.bit_depth, png::BitDepth::Eight, "screenshot {name}");
    let mut counts: HashMap<&[u8], usize> = HashMap::new();
    for pixel in pixels[..frame.buffer_size()].chunks_exact(channels) {
        *counts.entry(pixel).or_default() += 1;
    }
    let total = (frame.width * frame.height) as usize;
    let background = counts.values().copied().max().unwrap_or_default();
    let share = (total - background) as f64 / total as f64;
    assert!(
        counts.len() > 2 && share >= 0.001,
        "screenshot {name} looks blank: {} colours, {:.2}% of pixels unlike the background",
        counts.len(),
        share * 100.0
    );
}

/// Calls `check` every 50 ms until it gives something, for at most [`DEADLINE`].
pub async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "no {what} within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The app behind the gate: `/` public and script-free, `/app/` a protected page that
/// greets the email the gate injected, `/api/data` protected JSON.
fn app() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async {
                page(
                    "Welcome",
                    "<h1>Welcome</h1><p>A public page anyone may read.</p>",
                )
            }),
        )
        .route(
            "/app/",
            get(|headers: HeaderMap| async move {
                let email = headers
                    .get("x-auth-email")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("nobody");
                page(
                    "The app",
                    &format!(
                        "<h1 id=\"greeting\">Hello {}</h1><p>Only signed-in people see this.</p>",
                        escape(email)
                    ),
                )
            }),
        )
        .route(
            "/api/data",
            get(|headers: HeaderMap| async move {
                axum::Json(
                    json!({ "email": headers.get("x-auth-email").and_then(|v| v.to_str().ok()) }),
                )
            }),
        )
}

fn page(title: &str, body: &str) -> impl IntoResponse + use<> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;margin:3em;background:#f4f6fb;color:#1b2333}}\
         h1{{color:#2a4d9b}}</style></head><body><main>{body}</main></body></html>"
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The gate in front of the app, protecting `/app/` and `/api/`, with every code
/// delivered to a webhook the test reads: the real `otpgate` binary as a proxy, or the
/// tower layer around the app in this process.
pub struct Site {
    /// `http://127.0.0.1:{port}`, where the browser reaches the gate.
    pub base: String,
    pub hook: WebhookReceiver,
    /// The `otpgate` process, killed when the site is dropped.
    _gate: Option<RunningGate>,
}

/// What both forms of the gate are configured with, after `[server]`.
fn gate_config(hook: &WebhookReceiver) -> String {
    format!(
        "[[protect]]\nprefix = \"/app/\"\n\n[[protect]]\nprefix = \"/api/\"\n\n{}",
        common::webhook_delivery_toml(&hook.url)
    )
}

impl Site {
    /// The `otpgate` binary proxying to the app.
    pub async fn start() -> Site {
        let hook = WebhookReceiver::start().await;
        let app = common::serve(app()).await;
        let config = format!(
            "[server]\nupstream = \"http://{app}\"\nthreads = 1\n\
             shutdown_timeout = \"1s\"\ngrace_period = \"1s\"\n\n{}",
            gate_config(&hook)
        );
        let gate = RunningGate::start(&config).await;
        Site {
            base: gate.base.clone(),
            hook,
            _gate: Some(gate),
        }
    }

    /// The app wrapped in [`OtpLayer`], configured from the same kind of file, served
    /// with the peer's address as connect info.
    pub async fn start_layer() -> Site {
        Site::start_layer_with("").await
    }

    /// [`start_layer`](Self::start_layer) with `extra` added to the configuration.
    pub async fn start_layer_with(extra: &str) -> Site {
        let hook = WebhookReceiver::start().await;
        let config = format!("{}\n{extra}", gate_config(&hook));
        let front = Config::parse(&config, "browser.toml", Path::new("."))
            .unwrap_or_else(|e| panic!("the layer's config does not load: {e}"))
            .build()
            .unwrap_or_else(|e| panic!("the layer's config does not build: {e}"));
        let addr = common::serve(app().layer(OtpLayer::new(front))).await;
        Site {
            base: format!("http://{addr}"),
            hook,
            _gate: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The code the gate delivered last (waiting at most 5 s).
    pub async fn next_code(&self) -> String {
        common::Inbox::next_code(&self.hook).await
    }
}
