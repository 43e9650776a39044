//! The crate's layers, checked on its source: imports run one way only (adapters → front
//! → dialects → engine → parts → core), nothing but the command imports the config, the
//! dialects reach the store only through the engine, and no source file outgrows 600
//! lines (tests aside).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Where a file sits. Lower layers never name a higher one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Core,
    Parts,
    Engine,
    Dialects,
    Front,
    Adapters,
    Config,
    /// `lib.rs` and the command: they wire everything together.
    Wiring,
}

fn layer_of_module(module: &str) -> Option<Layer> {
    Some(match module {
        "otp" | "identifier" | "util" | "error" => Layer::Core,
        "store" | "token" | "delivery" | "directory" | "metrics" => Layer::Parts,
        "gate" => Layer::Engine,
        "http" => Layer::Front,
        "tower" | "pingora" => Layer::Adapters,
        "config" => Layer::Config,
        _ => return None,
    })
}

/// The layer of a file under `src/`.
fn layer_of_file(relative: &Path) -> Layer {
    let parts: Vec<&str> = relative
        .iter()
        .map(|part| part.to_str().unwrap_or_default())
        .collect();
    if parts.starts_with(&["http", "dialect"]) {
        return Layer::Dialects;
    }
    let first = parts[0].trim_end_matches(".rs");
    layer_of_module(first).unwrap_or(Layer::Wiring)
}

fn is_test_file(relative: &Path) -> bool {
    relative.file_name().is_some_and(|name| name == "tests.rs")
        || relative.iter().any(|part| part == "tests")
}

fn source_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, into);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            into.push(path);
        }
    }
}

/// The code of a file without its comments and its `#[cfg(test)]` module, which may
/// reach anywhere.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        if line.trim_start() == "#[cfg(test)]" {
            // Everything after a test module's attribute is test code in this crate's style.
            break;
        }
        let line = line.split("//").next().unwrap_or_default();
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// Every top-level crate module a piece of code names: `crate::x::…` and
/// `crate::{x, y::…}`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let module = item.trim().split("::").next().unwrap_or_default();
                if !module.is_empty() {
                    named.insert(module.to_owned());
                }
            }
        } else {
            let module: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            named.insert(module);
        }
    }
    named
}

fn sources() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path.strip_prefix(&root).unwrap().to_owned(), text)
        })
        .collect()
}

#[test]
fn imports_run_one_way() {
    let mut wrong = Vec::new();
    for (relative, text) in sources() {
        if is_test_file(&relative) {
            continue;
        }
        let from = layer_of_file(&relative);
        let code = code_of(&text);
        for module in named_modules(&code) {
            let Some(to) = layer_of_module(&module) else {
                continue;
            };
            let allowed = match (from, to) {
                // Everything but the command builds from the config, never the reverse.
                (Layer::Wiring, _) => true,
                (_, Layer::Config) => false,
                // The config builds the proxy's settings, and nothing else of an adapter.
                (Layer::Config, Layer::Adapters) => module == "pingora",
                (Layer::Config, _) => true,
                // Dialects use the front's vocabulary (requests, answers, settings), not
                // the front itself: checked below by name.
                (Layer::Dialects, Layer::Front) => true,
                (from, to) => to <= from,
            };
            if !allowed {
                wrong.push(format!(
                    "src/{} ({from:?}) names crate::{module} ({to:?})",
                    relative.display()
                ));
            }
        }
        if from == Layer::Dialects && (code.contains("Front") || code.contains("crate::store")) {
            wrong.push(format!(
                "src/{}: a dialect reaches past the engine (the front or the store)",
                relative.display()
            ));
        }
        if from == Layer::Adapters {
            let other = if relative.starts_with("tower") {
                "pingora"
            } else {
                "tower"
            };
            if named_modules(&code).contains(other) {
                wrong.push(format!(
                    "src/{}: one adapter names the other",
                    relative.display()
                ));
            }
        }
        if from == Layer::Config
            && named_modules(&code).contains("pingora")
            && !code.contains("crate::pingora::{ProxySettings, Upstream")
        {
            wrong.push(format!(
                "src/{}: the config takes more than the proxy's settings from the proxy",
                relative.display()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_source_file_outgrows_600_lines() {
    let long: Vec<String> = sources()
        .into_iter()
        .filter(|(relative, _)| !is_test_file(relative))
        .map(|(relative, text)| (relative, code_of(&text).lines().count()))
        .filter(|(_, lines)| *lines > 600)
        .map(|(relative, lines)| format!("src/{}: {lines} lines", relative.display()))
        .collect();
    assert!(
        long.is_empty(),
        "files over 600 lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_look_for() {
    // The scanner itself: a grouped import and a path both count; comments do not.
    let code = code_of(
        "use crate::{store::Store, token};\n// crate::config\nlet x = crate::http::Front;\n",
    );
    assert_eq!(
        named_modules(&code).into_iter().collect::<Vec<_>>(),
        ["http", "store", "token"]
    );
    assert_eq!(
        layer_of_file(Path::new("http/dialect/baanx.rs")),
        Layer::Dialects
    );
    assert_eq!(layer_of_file(Path::new("http/front.rs")), Layer::Front);
    assert_eq!(layer_of_file(Path::new("store/keys.rs")), Layer::Parts);
    assert!(Layer::Engine < Layer::Dialects && Layer::Dialects < Layer::Front);
}
