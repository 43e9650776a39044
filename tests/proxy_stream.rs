//! A 50 MiB upload to a public path streams through the pingora gate: the app receives
//! every byte while the process's peak memory grows far less than the body.
//!
//! Alone in its test binary so that no other test's allocations share the process.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Form, start_form};
use otpgate::Gate;
use otpgate::http::Front;
use serde_json::Value;

const BODY: u64 = 50 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// Peak resident set size of this process, in bytes (Linux `VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux)");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM line");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mib_upload_streams_through_the_proxy() {
    let gate = Gate::builder().build().unwrap();
    let (base, _) = start_form(Form::Pingora, Front::with_defaults(gate)).await;
    let client = reqwest::Client::new();
    // Warm up connections and allocator pools so the measurement sees only the upload.
    client.get(format!("{base}/warm")).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = peak_rss();

    // The client sends one 64 KiB chunk 800 times; it never holds the body either.
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let chunks = (BODY / CHUNK as u64) as usize;
    let stream = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let response = client
        .post(format!("{base}/upload"))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["body_bytes"], BODY, "every byte reached the app");

    let grown = peak_rss().saturating_sub(before);
    eprintln!(
        "peak RSS grew by {} KiB during a {} KiB upload",
        grown / 1024,
        BODY / 1024
    );
    assert!(
        grown < BODY / 4,
        "peak RSS grew by {grown} bytes for a {BODY}-byte upload"
    );
}
