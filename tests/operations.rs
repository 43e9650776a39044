//! `otpgate run` as an operator meets it: log lines a machine can read, and a start that
//! fails at once, saying why, when it cannot serve.

// The command is built with the proxy only.
#![cfg(feature = "proxy")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// An `otpgate run` process and what it writes. Killed when dropped.
struct Gate {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Gate {
    /// Starts `otpgate run` in `dir` with `args` and `env`, reading nothing and with no
    /// config from the environment.
    fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Gate {
        let mut command = Command::new(env!("CARGO_BIN_EXE_otpgate"));
        command
            .arg("run")
            .args(args)
            .current_dir(dir)
            .env_remove("OTPGATE_CONFIG")
            .env_remove("OTPGATE_LOG_FORMAT")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("otpgate runs");
        let (lines, stdout) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Gate {
            child,
            stdout,
            stderr: Some(stderr),
        }
    }

    /// The exit status, if the process ends within `limit`.
    fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything written to standard error, once the process has ended.
    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|reader| reader.join().unwrap())
            .unwrap_or_default()
    }

    /// The standard output lines written so far, waiting up to `limit` for one that
    /// `wanted` accepts.
    fn stdout_until(&self, limit: Duration, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    let done = wanted(&line);
                    lines.push(line);
                    if done {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        lines
    }

    /// Stops the process with SIGTERM, as an operator would, and returns everything it
    /// wrote to standard output.
    fn stop(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.exit_within(Duration::from_secs(10));
        assert!(
            exit.is_some_and(|status| status.success()),
            "SIGTERM stops the gate cleanly: {exit:?}"
        );
        let lines: Vec<String> = self.stdout.try_iter().collect();
        lines.join("\n")
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on right now.
/// A config file in `dir` listening on `port`, in front of an app that is not running.
fn write_config(dir: &Path, port: u16) {
    let app = common::free_port();
    std::fs::write(
        dir.join("gate.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"http://127.0.0.1:{app}\"\n\
             threads = 1\ngrace_period = \"1s\"\nshutdown_timeout = \"1s\"\n"
        ),
    )
    .unwrap();
}

/// Waits until the gate accepts connections on `port` (at most 10 s).
fn wait_for_port(gate: &mut Gate, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = gate.child.try_wait().unwrap() {
            panic!("otpgate exited with {status}: {}", gate.stderr());
        }
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The status code of `GET target` to the gate on `port`.
fn get(port: u16, target: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nhost: gate.test\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// A gate run in `format` that answers two requests, then stops: its standard output.
fn logs_of_a_short_run(format: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    write_config(dir.path(), port);
    let env: Vec<(&str, &str)> = format
        .map(|format| ("OTPGATE_LOG_FORMAT", format))
        .into_iter()
        .collect();
    let mut gate = Gate::spawn(dir.path(), &["--config", "gate.toml"], &env);
    wait_for_port(&mut gate, port);
    assert_eq!(get(port, "/healthz"), 200);
    // Bound for the app, which is down; the query string carries what must not be logged.
    assert_eq!(get(port, "/shop//cart/./items?code=918273"), 502);
    // pingora logs a request after answering it; give the line a moment to be written.
    std::thread::sleep(Duration::from_millis(300));
    gate.stop()
}

#[test]
fn json_logs_are_one_object_per_line_with_a_request_line() {
    let logs = logs_of_a_short_run(Some("json"));
    assert!(
        !logs.contains('\x1b'),
        "no colour codes in JSON logs:\n{logs}"
    );
    assert!(
        !logs.contains("918273"),
        "query strings are not logged:\n{logs}"
    );
    let lines: Vec<Value> = logs
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{logs}"))
        })
        .collect();
    assert!(lines.iter().all(|line| line["level"].is_string()), "{logs}");
    assert!(
        lines
            .iter()
            .any(|line| line["message"] == "otpgate proxy started"),
        "{logs}"
    );
    let requests: Vec<&Value> = lines
        .iter()
        .filter(|line| line["message"] == "request")
        .collect();
    assert_eq!(requests.len(), 2, "one line per request:\n{logs}");
    let health = requests
        .iter()
        .find(|line| line["path"] == "/healthz")
        .unwrap_or_else(|| panic!("no request line for /healthz:\n{logs}"));
    assert_eq!(health["method"], "GET");
    assert_eq!(health["status"], 200);
    assert!(
        health["client"]
            .as_str()
            .is_some_and(|client| client.starts_with("127.0.0.1:")),
        "{health}"
    );
    assert!(
        health["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{health}"
    );
    let id = health["request_id"].as_str().unwrap_or_default();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{health}"
    );
    // The path as the gate judged it, in canonical form, and without its query string.
    let proxied = requests
        .iter()
        .find(|line| line["status"] == 502)
        .unwrap_or_else(|| panic!("no request line for the proxied request:\n{logs}"));
    assert_eq!(proxied["path"], "/shop/cart/items", "{proxied}");
    assert_ne!(proxied["request_id"], health["request_id"]);
}

#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let logs = logs_of_a_short_run(None);
    assert!(!logs.contains('\x1b'), "{logs:?}");
    let request = logs
        .lines()
        .find(|line| line.contains("/healthz"))
        .unwrap_or_else(|| panic!("no request line for /healthz:\n{logs}"));
    for field in [
        "request_id=",
        "client=127.0.0.1:",
        "method=GET",
        "status=200",
        "latency_ms=",
    ] {
        assert!(request.contains(field), "{field} missing: {request}");
    }
    assert!(
        !logs.contains("918273"),
        "query strings are not logged:\n{logs}"
    );
}

#[test]
fn an_unknown_log_format_is_refused_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), common::free_port());
    let mut gate = Gate::spawn(
        dir.path(),
        &["--config", "gate.toml"],
        &[("OTPGATE_LOG_FORMAT", "xml")],
    );
    let exit = gate.exit_within(Duration::from_secs(5));
    let stderr = gate.stderr();
    assert!(exit.is_some_and(|status| !status.success()), "{exit:?}");
    assert!(stderr.contains("OTPGATE_LOG_FORMAT"), "{stderr}");
}

#[test]
fn a_listen_address_in_use_fails_at_once_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), port);
    let mut gate = Gate::spawn(dir.path(), &["--config", "gate.toml"], &[]);
    let exit = gate.exit_within(Duration::from_secs(2));
    let stderr = gate.stderr();
    assert!(
        exit.is_some_and(|status| !status.success()),
        "exits non-zero within 2 s: {exit:?}\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(taken);
}

#[test]
fn run_without_a_config_file_refuses_unless_dev() {
    let empty = tempfile::tempdir().unwrap();
    let mut gate = Gate::spawn(empty.path(), &[], &[]);
    let exit = gate.exit_within(Duration::from_secs(5));
    let stderr = gate.stderr();
    assert!(exit.is_some_and(|status| !status.success()), "{exit:?}");
    assert!(
        stderr.contains("--config FILE") && stderr.contains("--dev"),
        "{stderr}"
    );

    // With --dev it serves the embedded defaults and says so. They listen on
    // 127.0.0.1:8080, which may be taken here: then it stops at once, naming it.
    let mut gate = Gate::spawn(empty.path(), &["--dev"], &[]);
    let lines = gate.stdout_until(Duration::from_secs(10), |line| {
        line.contains("otpgate proxy started")
    });
    let logs = lines.join("\n");
    assert!(
        logs.contains("embedded development defaults"),
        "--dev says what it serves:\n{logs}"
    );
    if !logs.contains("otpgate proxy started") {
        let exit = gate.exit_within(Duration::from_secs(5));
        let stderr = gate.stderr();
        assert!(
            exit.is_some() && stderr.contains("cannot listen on 127.0.0.1:8080"),
            "--dev neither started nor said why:\n{logs}\n{stderr}"
        );
    }
}
