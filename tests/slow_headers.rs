//! Slow and numerous clients against `otpgate run`: request heads sent a line at a time
//! are cut off at `server.header_timeout`, one address past `server.max_connections_per_ip`
//! is refused, and meanwhile everyone else is served, under a 256-descriptor limit.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{AppCalls, echo_app, free_port, serve, wait_for_port};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const SLOW_CLIENTS: usize = 400;
const PER_IP: usize = 50;
const SLOW_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// `otpgate run` under `ulimit -n 256`, logging to a file; killed when dropped.
struct Gate {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Gate {
    async fn start(upstream: SocketAddr, extra: &str) -> Gate {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("gate.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"http://{upstream}\"\n\
                 threads = 2\nheader_timeout = \"2s\"\nmax_connections_per_ip = {PER_IP}\n{extra}"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("gate.log")).unwrap();
        let child = Command::new("bash")
            .args(["-c", "ulimit -n 256 && exec \"$0\" run --config \"$1\""])
            .arg(env!("CARGO_BIN_EXE_otpgate"))
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port).await;
        Gate { child, port, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gate.log")).unwrap_or_default()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
enum Outcome {
    /// The gate answered 503 too_many_connections at once.
    Refused,
    /// The gate closed the connection while the client was still sending its head.
    CutOff { after: Duration, answer: String },
    /// Still open when the test stopped waiting.
    StillOpen,
    /// The client could not connect.
    NoConnection(String),
}

/// A client that sends a request head one line every 500 ms, for ever, from
/// `SLOW_ADDRESS`; returns how the gate ended it.
async fn slow_client(port: u16, give_up: Instant) -> Outcome {
    let socket = match TcpSocket::new_v4() {
        Ok(socket) => socket,
        Err(e) => return Outcome::NoConnection(e.to_string()),
    };
    if let Err(e) = socket.bind(SocketAddr::new(IpAddr::V4(SLOW_ADDRESS), 0)) {
        return Outcome::NoConnection(e.to_string());
    }
    let stream = match socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
    {
        Ok(stream) => stream,
        Err(e) => return Outcome::NoConnection(e.to_string()),
    };
    let start = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let mut answer = Vec::new();
    let mut line = 0u32;
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    let ended = loop {
        tokio::select! {
            read = reader.read_buf(&mut answer) => match read {
                Ok(0) | Err(_) => break true,
                Ok(_) => {}
            },
            _ = ticks.tick() => {
                let text = if line == 0 {
                    "GET /public HTTP/1.1\r\nHost: gate\r\n".to_owned()
                } else {
                    format!("X-Slow-{line}: still sending\r\n")
                };
                line += 1;
                if writer.write_all(text.as_bytes()).await.is_err() {
                    // Closed by the gate: read what it said before closing.
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        reader.read_to_end(&mut answer),
                    )
                    .await;
                    break true;
                }
            }
            _ = tokio::time::sleep_until(give_up.into()) => break false,
        }
    };
    let answer = String::from_utf8_lossy(&answer).into_owned();
    if !ended {
        Outcome::StillOpen
    } else if answer.starts_with("HTTP/1.1 503") {
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let body: Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(body["error"], "too_many_connections", "{answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"));
        Outcome::Refused
    } else {
        Outcome::CutOff {
            after: start.elapsed(),
            answer,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_too_many_connections_cannot_starve_the_gate() {
    let upstream = serve(echo_app(AppCalls::default())).await;
    let gate = Gate::start(upstream, "").await;
    let base = format!("http://127.0.0.1:{}", gate.port);
    // A new connection for each check: new clients are the ones a starved gate turns away.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .local_address(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .build()
        .unwrap();

    let give_up = Instant::now() + Duration::from_secs(20);
    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| tokio::spawn(slow_client(gate.port, give_up)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // While the slow clients hold what they can, others are still served.
    let mut health_checks = 0;
    while health_checks < 5 || slow.iter().any(|task| !task.is_finished()) {
        if Instant::now() > give_up {
            break;
        }
        let response = client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("healthz failed: {e}\n{}", gate.log()));
        assert_eq!(response.status(), StatusCode::OK, "{}", gate.log());
        health_checks += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut refused = 0;
    let mut cut_off = 0;
    for task in slow {
        match task.await.unwrap() {
            Outcome::Refused => refused += 1,
            Outcome::CutOff { after, answer } => {
                cut_off += 1;
                // Not before the deadline: the gate waited the whole header_timeout.
                assert!(after >= Duration::from_millis(1500), "{after:?}");
                assert!(
                    answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
                    "{answer}"
                );
            }
            Outcome::StillOpen => panic!("a slow head still open after 20 s\n{}", gate.log()),
            Outcome::NoConnection(e) => panic!("cannot connect: {e}\n{}", gate.log()),
        }
    }
    assert!(cut_off <= PER_IP, "{cut_off} connections held past the cap");
    assert!(cut_off > 0, "no slow connection was admitted");
    assert_eq!(refused + cut_off, SLOW_CLIENTS);
    assert!(
        gate.log().contains("max_connections lowered"),
        "{}",
        gate.log()
    );

    // The slow address's places are given back: it, and everyone, is served normally.
    for from in [Ipv4Addr::LOCALHOST, SLOW_ADDRESS] {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .local_address(IpAddr::V4(from))
            .build()
            .unwrap();
        let response = client.get(format!("{base}/public")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{}", gate.log());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["path"], "/public");
    }
}

/// Reads one response with a `content-length` body; `None` if the connection closed first.
async fn read_response(stream: &mut TcpStream) -> Option<(String, Value)> {
    let mut data = Vec::new();
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a content-length");
            while data.len() < end + 4 + length {
                if stream.read_buf(&mut data).await.ok()? == 0 {
                    return None;
                }
            }
            let body = serde_json::from_slice(&data[end + 4..end + 4 + length]).unwrap();
            return Some((head, body));
        }
        if stream.read_buf(&mut data).await.ok()? == 0 {
            return None;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connections_and_slow_bodies_outlive_the_head_deadline() {
    let upstream = serve(echo_app(AppCalls::default())).await;
    let gate = Gate::start(upstream, "keepalive_timeout = \"3s\"\n").await;
    let mut stream = TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();

    // A body sent slowly, past header_timeout (2 s): the head was on time, the body is
    // not the head deadline's business.
    stream
        .write_all(b"POST /public HTTP/1.1\r\nHost: gate\r\nContent-Length: 6\r\n\r\nab")
        .await
        .unwrap();
    for part in [b"cd", b"ef"] {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        stream.write_all(part).await.unwrap();
    }
    let (head, body) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
        .await
        .unwrap()
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{}", gate.log());
    assert_eq!(body["body_bytes"], 6);

    // Idle past header_timeout but within keepalive_timeout: the next request is served.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stream
        .write_all(b"GET /public HTTP/1.1\r\nHost: gate\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
        .await
        .unwrap()
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{}", gate.log());
    assert_eq!(body["path"], "/public");

    // Idle past keepalive_timeout: the gate closes the connection.
    let start = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(read.is_err() || rest.is_empty(), "{rest:?}");
    assert!(start.elapsed() >= Duration::from_millis(2500));
}
