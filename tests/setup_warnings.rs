//! `otpgate check` and `otpgate run` warn about set-ups that run but are rarely wanted,
//! and refuse those no one could want.

// The command is built with the proxy only.
#![cfg(feature = "proxy")]

mod common;

use common::otpgate;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A file that sets everything up as production wants it, before `extra`.
const QUIET: &str = r#"
[token]
private_key = "keys/gate.pem"

[[protect]]
prefix = "/app/"

[delivery.email]
kind = "webhook"
url = "http://127.0.0.1:9/email"

[delivery.sms]
kind = "webhook"
url = "http://127.0.0.1:9/sms"
"#;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A directory with a key at keys/gate.pem.
fn keyed_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = otpgate(dir.path(), &["keygen", "--out", "keys/gate.pem"]);
    assert!(ok, "{err}");
    dir
}

/// `otpgate check` on `config`: it must succeed; its warning lines.
fn check_warnings(dir: &Path, config: &str) -> Vec<String> {
    std::fs::write(dir.join("gate.toml"), config).unwrap();
    let (ok, out, err) = otpgate(dir, &["check", "--config", "gate.toml"]);
    assert!(ok, "warnings never fail the check: {err}");
    assert!(out.contains("gate.toml: ok"), "{out}");
    err.lines()
        .filter(|line| line.starts_with("warning: "))
        .map(str::to_owned)
        .collect()
}

/// A local port no one listens on.
#[test]
fn a_production_set_up_checks_without_warnings() {
    let dir = keyed_dir();
    let warnings = check_warnings(dir.path(), QUIET);
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[test]
fn nothing_protected_is_warned_about() {
    let dir = keyed_dir();
    let config = QUIET.replace("[[protect]]\nprefix = \"/app/\"\n", "");
    let warnings = check_warnings(dir.path(), &config);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("`protect`")
            && warnings[0].contains("nothing is protected")
            && warnings[0].contains("only offers sign-in"),
        "{warnings:#?}"
    );
}

#[test]
fn a_prefix_without_its_leading_slash_is_refused_saying_how_to_write_it() {
    let dir = keyed_dir();
    let config = QUIET.replace("\"/app/\"", "\"app/\"");
    std::fs::write(dir.path().join("gate.toml"), config).unwrap();
    let (ok, _, err) = otpgate(dir.path(), &["check", "--config", "gate.toml"]);
    assert!(!ok, "refused");
    assert!(
        err.contains("gate.toml:6: `protect.prefix`") && err.contains("write it like \"/api/\""),
        "{err}"
    );
}

#[test]
fn console_delivery_is_warned_about_naming_the_sender() {
    let dir = keyed_dir();
    let config = QUIET.replace(
        "kind = \"webhook\"\nurl = \"http://127.0.0.1:9/sms\"",
        "kind = \"console\"",
    );
    let warnings = check_warnings(dir.path(), &config);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("gate.toml:12: `delivery.sms`: kind = \"console\"")
            && warnings[0].contains("printed to the log"),
        "{warnings:#?}"
    );

    // With no sender at all, both channels print codes.
    let config = &QUIET[..QUIET.find("[delivery.email]").unwrap()];
    let warnings = check_warnings(dir.path(), config);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("`delivery`") && warnings[0].contains("printed to the log"),
        "{warnings:#?}"
    );
}

#[test]
fn a_key_made_at_start_is_warned_about_with_a_hint_that_overwrites_nothing() {
    let dir = keyed_dir();
    let config = QUIET.replace("private_key = \"keys/gate.pem\"\n", "");
    let warnings = check_warnings(dir.path(), &config);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let warning = &warnings[0];
    assert!(
        warning.contains("`token.private_key`")
            && warning.contains("die with the process")
            && warning.contains("otpgate keygen --out keys/otpgate.pem")
            && warning.contains("refuses to overwrite"),
        "{warning}"
    );
    assert!(!warning.contains("--force"), "{warning}");
}

#[test]
fn keygen_keeps_an_existing_key_and_never_suggests_replacing_it() {
    let dir = keyed_dir();
    let before = std::fs::read(dir.path().join("keys/gate.pem")).unwrap();
    let (ok, _, err) = otpgate(dir.path(), &["keygen", "--out", "keys/gate.pem"]);
    assert!(!ok && err.contains("exists and is kept"), "{err}");
    assert!(!err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("keys/gate.pem")).unwrap(),
        before
    );
}

#[cfg(feature = "redis")]
#[test]
fn an_unreachable_redis_is_warned_about_without_its_password() {
    let dir = keyed_dir();
    let config = format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"redis://:hunter2@127.0.0.1:{}\"\n\
         timeout = \"200ms\"\n[otp]\nsecret = \"{SECRET}\"\n{QUIET}",
        common::free_port()
    );
    let warnings = check_warnings(dir.path(), &config);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("gate.toml:3: `store.redis_url`")
            && warnings[0].contains("does not answer")
            && warnings[0].contains("503"),
        "{warnings:#?}"
    );
    assert!(!warnings[0].contains("hunter2"), "{warnings:#?}");
}

/// Starts `otpgate run` on `config` and collects its log until every one of `expected`
/// has appeared (or 20 seconds pass); then checks it is still running and stops it.
fn run_log(dir: &Path, args: &[&str], expected: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_otpgate"))
        .arg("run")
        .args(args)
        .current_dir(dir)
        .env_remove("OTPGATE_CONFIG")
        .env("RUST_LOG", "info")
        .env("OTPGATE_LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("otpgate runs");
    let (lines, received) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = String::new();
    while !expected.iter().all(|e| log.contains(e)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
            }
            Err(_) => break,
        }
    }
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let status = child.wait().unwrap();
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        use std::io::Read;
        let _ = stderr.read_to_string(&mut err);
    }
    assert!(
        still_running,
        "otpgate run stopped ({status}): {log}\n{err}"
    );
    log
}

#[cfg(feature = "redis")]
#[test]
fn run_warns_loudly_about_console_delivery_and_starts_without_redis() {
    let dir = keyed_dir();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\n\
         [store]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:{}\"\n\
         timeout = \"200ms\"\n[otp]\nsecret = \"{SECRET}\"\n{}",
        common::free_port(),
        common::free_port(),
        QUIET.replace(
            "kind = \"webhook\"\nurl = \"http://127.0.0.1:9/email\"",
            "kind = \"console\"",
        )
    );
    std::fs::write(dir.path().join("gate.toml"), config).unwrap();
    let log = run_log(
        dir.path(),
        &["--config", "gate.toml"],
        &["`store.redis_url`", "`delivery.email`"],
    );
    let console = log
        .lines()
        .find(|line| line.contains("`delivery.email`"))
        .unwrap();
    assert!(
        console.contains("WARN") && console.contains("NOT FOR PRODUCTION"),
        "{log}"
    );
    let store = log
        .lines()
        .find(|line| line.contains("`store.redis_url`"))
        .unwrap();
    assert!(
        store.contains("WARN") && store.contains("starts anyway"),
        "{log}"
    );
    assert!(
        !log.contains("`protect`") && !log.contains("`token.private_key`"),
        "{log}"
    );
}
