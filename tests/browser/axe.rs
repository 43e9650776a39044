//! Accessibility checks with axe-core, the engine browsers' own audits use, run inside
//! the page the browser shows.
//!
//! The pages forbid every script (`default-src 'none'`), but WebDriver's scripts run
//! through DevTools, which the page's Content-Security-Policy does not govern: the
//! engine is injected that way into each page as it stands.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Browser, DEADLINE};

/// Where `make test-deps` installs axe-core with npm.
const AXE: &str = "target/axe-core/node_modules/axe-core/axe.min.js";

/// The WCAG 2.0 and 2.1 rules, levels A and AA.
const TAGS: [&str; 4] = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

fn axe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(AXE)
}

/// The engine's source, read once.
fn axe_source() -> &'static str {
    static SOURCE: OnceLock<String> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let path = axe_path();
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "axe-core is missing at {} ({e}): run `make test-deps`, which installs it \
                 with npm (apt packages `nodejs npm`)",
                path.display()
            )
        })
    })
}

/// Puts axe-core into the page the browser shows, unless it is there already.
pub async fn inject(browser: &Browser) {
    let loaded = |answer: &Value| answer == "object";
    let kind = browser
        .client
        .execute("return typeof window.axe", vec![])
        .await
        .expect("a script runs in the page");
    if loaded(&kind) {
        return;
    }
    let script = format!("{}\n;return typeof window.axe;", axe_source());
    let kind = browser
        .client
        .execute(&script, vec![])
        .await
        .expect("axe-core's source runs in the page");
    assert!(loaded(&kind), "axe-core did not load: typeof axe is {kind}");
}

/// Runs axe-core's WCAG 2.1 A and AA rules on the page the browser shows, named `name`
/// in failures, and asserts that none is violated.
pub async fn assert_accessible(browser: &Browser, name: &str) {
    let report = violations(browser, name).await;
    assert!(
        report.is_empty(),
        "{name}: {} accessibility violation(s) (WCAG 2.1 A/AA):\n{}",
        report.len(),
        report.join("\n")
    );
}

/// The WCAG 2.1 A and AA rules the page the browser shows violates, one line each:
/// rule, impact, what it asks for, and the failing elements' selectors.
pub async fn violations(browser: &Browser, name: &str) -> Vec<String> {
    inject(browser).await;
    let run = browser.client.execute_async(
        "const [tags, done] = arguments;\
         axe.run(document, {runOnly: {type: 'tag', values: tags}})\
           .then(r => done({\
             passes: r.passes.length,\
             violations: r.violations.map(v => ({\
               id: v.id, impact: v.impact, help: v.help,\
               nodes: v.nodes.map(n => n.target)\
             }))\
           }))\
           .catch(e => done({failed: String(e)}));",
        vec![json!(TAGS)],
    );
    let result = tokio::time::timeout(DEADLINE + Duration::from_secs(20), run)
        .await
        .unwrap_or_else(|_| panic!("{name}: axe-core did not finish"))
        .unwrap_or_else(|e| panic!("{name}: axe-core does not run: {e}"));
    assert!(
        result["failed"].is_null(),
        "{name}: axe-core failed: {result}"
    );
    // A run that checked nothing would pass any page.
    assert!(
        result["passes"].as_u64().is_some_and(|passes| passes > 0),
        "{name}: axe-core checked no rule: {result}"
    );
    let violations = result["violations"].as_array().cloned().unwrap_or_default();
    violations
        .iter()
        .map(|v| {
            format!(
                "  {} ({}): {} at {}",
                v["id"].as_str().unwrap_or("?"),
                v["impact"].as_str().unwrap_or("?"),
                v["help"].as_str().unwrap_or("?"),
                v["nodes"]
            )
        })
        .collect()
}

/// The `id` of the element that has focus.
pub async fn focused_id(browser: &Browser) -> String {
    let id = browser
        .client
        .execute(
            "return document.activeElement ? document.activeElement.id : ''",
            vec![],
        )
        .await
        .expect("a script runs in the page");
    id.as_str().unwrap_or_default().to_owned()
}

/// The document's language (`<html lang>`).
pub async fn language(browser: &Browser) -> String {
    let lang = browser
        .client
        .execute("return document.documentElement.lang", vec![])
        .await
        .expect("a script runs in the page");
    lang.as_str().unwrap_or_default().to_owned()
}

/// Whether an inline script added to the page runs: the pages' policy must stop it, even
/// though WebDriver's own scripts (this one included) run.
pub async fn inline_script_runs(browser: &Browser) -> bool {
    let ran = browser
        .client
        .execute(
            "const s = document.createElement('script');\
             s.textContent = 'window.inlineScriptRan = true;';\
             document.head.appendChild(s);\
             s.remove();\
             return window.inlineScriptRan === true;",
            vec![],
        )
        .await
        .expect("WebDriver's script runs despite the page's policy");
    ran == true
}
