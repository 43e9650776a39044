//! curl as a test client: for what only a real client shows (the HTTP version it
//! negotiated, TLS with SNI and a CA of the test's own), the answer read back whole.

use std::process::Command;

use serde_json::Value;

/// What curl got: the HTTP version it spoke, the status, the headers (names lower-case)
/// and the body.
pub struct Answer {
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Runs curl with `args` then `target`, off the runtime's threads.
pub async fn curl(args: &[&str], target: Vec<String>) -> Answer {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).chain(target).collect();
    tokio::task::spawn_blocking(move || {
        let output = Command::new("curl")
            .args(["-sS", "-D", "-", "-w", "\n%{http_version}"])
            .args(&args)
            .output()
            .expect("curl runs (install the curl package)");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "curl {args:?}: {}{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        let (head, rest) = text.split_once("\r\n\r\n").expect("a head");
        let (body, version) = rest.rsplit_once('\n').expect("the version line");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Answer {
            version: version.to_owned(),
            status,
            headers,
            body: body.to_owned(),
        }
    })
    .await
    .unwrap()
}
