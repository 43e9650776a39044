//! The gate's own work, beyond pass-through (`bench/run.sh` runs this and puts its rows
//! in bench/RESULTS.md):
//!
//! - sign-ins over HTTP: send + verify against `otpgate run` (memory store, then a
//!   redis-server on loopback; codes delivered by webhook to this process), 64 clients at
//!   once, against plain `GET /healthz` from the same clients in the same run;
//! - Redis commands per sign-in (`INFO commandstats` around the timed Redis sign-ins,
//!   less an idle gate's over as long), and round trips (Redis's socket reads) per send
//!   and per verify from one client, so that no two of its requests share a read;
//! - memory per pending code: RSS growth of a gate holding 100k and then 1M pending codes,
//!   against the plain size of one (its store key's bytes and its record's struct);
//! - cold start: from spawning `otpgate run` to the first answered request, against
//!   spawning `/bin/true`.
//!
//! `cargo bench --bench http -- --bench` for the full run (`BENCH_QUICK=1` for a short
//! one). Under `cargo test` it runs a small smoke pass of each.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::routing::post;
use axum::{Json, Router};
use otpgate::delivery::{DeliveryError, Message, Sender, Senders};
use otpgate::identifier::Identifier;
use otpgate::store::MemoryStore;
use otpgate::{Gate, GateError, SendRequest};
use serde_json::{Value, json};
use tokio::sync::oneshot;

const CLIENTS: usize = 64;

struct Scale {
    load_for: Duration,
    /// Sign-ins one after another, to count round trips.
    sequential: u64,
    pending: [u64; 2],
    cold_starts: usize,
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let quick = std::env::var("BENCH_QUICK").as_deref() == Ok("1");
    let scale = match (benchmarking, quick) {
        (true, false) => Scale {
            load_for: Duration::from_secs(10),
            sequential: 1_000,
            pending: [100_000, 1_000_000],
            cold_starts: 20,
        },
        (true, true) => Scale {
            load_for: Duration::from_secs(2),
            sequential: 200,
            pending: [20_000, 100_000],
            cold_starts: 5,
        },
        // `cargo test`: prove each part works, quickly.
        (false, _) => Scale {
            load_for: Duration::from_millis(300),
            sequential: 20,
            pending: [1_000, 2_000],
            cold_starts: 1,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("eddsa.pem");
    let status = Command::new(env!("CARGO_BIN_EXE_otpgate"))
        .args(["keygen", "--alg", "EdDSA", "--out"])
        .arg(&key)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    let redis = RedisServer::start();
    for redis_port in [None, Some(redis.1)] {
        for row in runtime.block_on(sign_ins(dir.path(), &key, &scale, redis_port)) {
            println!("{row}");
        }
    }
    drop(redis);
    for row in pending_codes(&runtime, &scale) {
        println!("{row}");
    }
    println!("{}", cold_start(dir.path(), &key, &scale));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `otpgate run` with `extra` config, killed when dropped.
struct Gateway(Child, u16);

impl Gateway {
    fn spawn(dir: &std::path::Path, key: &std::path::Path, extra: &str) -> Gateway {
        let port = free_port();
        let config = dir.join(format!("gate-{port}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"http://127.0.0.1:9\"\nthreads = 1\n\
                 [token]\nalgorithm = \"EdDSA\"\nprivate_key = \"{}\"\n{extra}",
                key.display()
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_otpgate"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("otpgate runs");
        Gateway(child, port)
    }

    /// Blocks until `/healthz` answers 200 (at most 10 s).
    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.1)) {
                let _ = stream.write_all(
                    b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n",
                );
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
                if answer.starts_with(b"HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        panic!("otpgate did not answer /healthz within 10 s");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A redis-server on a free loopback port, without persistence; killed when dropped.
struct RedisServer(Child, u16);

impl RedisServer {
    fn start() -> RedisServer {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(5));
        }
        RedisServer(child, port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Redis's own counts: since it started (a reading), or between two readings.
struct RedisWork {
    /// Calls of each command but `INFO` (a script's commands count too).
    calls: BTreeMap<String, f64>,
    /// Socket reads with a client's commands (`total_reads_processed`): one per round
    /// trip, while no two round trips arrive together.
    reads: f64,
    /// When it was read, or how long from one reading to the other.
    at: Duration,
}

impl RedisWork {
    /// Less `other`, scaled by `share`.
    fn minus(&self, other: &RedisWork, share: f64) -> RedisWork {
        let mut calls = self.calls.clone();
        for (name, count) in &other.calls {
            *calls.entry(name.clone()).or_default() -= count * share;
        }
        calls.retain(|_, count| count.abs() > 1e-9);
        let (reads, at) = (self.reads - other.reads * share, self.at);
        RedisWork { calls, reads, at }
    }

    /// From `earlier` to this reading, less the probe's own two reads of this one.
    /// Given `idle`, also less what it did in as long a time: what the requests made.
    fn since(&self, earlier: &RedisWork, idle: Option<&RedisWork>) -> RedisWork {
        let mut work = self.minus(earlier, 1.0);
        work.reads -= 2.0;
        work.at = self.at - earlier.at;
        if let Some(idle) = idle {
            work = work.minus(idle, work.at.as_secs_f64() / idle.at.as_secs_f64());
        }
        work
    }

    fn commands(&self) -> f64 {
        // Folded from +0.0: an empty sum would be -0.0, printed "-0".
        self.calls.values().fold(0.0, |sum, count| sum + count)
    }
}

/// One plain connection reading Redis's counters with `INFO`, each reading two commands,
/// each sent after the answer to the one before (two reads).
struct RedisProbe(BufReader<TcpStream>, Instant);

impl RedisProbe {
    fn connect(port: u16) -> RedisProbe {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("redis-server answers");
        RedisProbe(BufReader::new(stream), Instant::now())
    }

    /// The text of `INFO section` (a bulk string reply).
    fn info(&mut self, section: &str) -> String {
        let command = format!("INFO {section}\r\n");
        self.0.get_mut().write_all(command.as_bytes()).unwrap();
        let mut header = String::new();
        self.0.read_line(&mut header).unwrap();
        let length: usize = (header.strip_prefix('$'))
            .and_then(|n| n.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("INFO answered {header:?}"));
        let mut body = vec![0; length + 2];
        self.0.read_exact(&mut body).unwrap();
        body.truncate(length);
        String::from_utf8(body).unwrap()
    }

    /// Blocks this worker thread, not the runtime, for a moment.
    fn read(&mut self) -> RedisWork {
        tokio::task::block_in_place(|| self.read_now())
    }

    fn read_now(&mut self) -> RedisWork {
        // `cmdstat_get:calls=3,usec=...`: every command's calls but this probe's.
        let calls = (self.info("commandstats").lines())
            .filter_map(|line| line.strip_prefix("cmdstat_")?.split_once(":calls="))
            .filter(|(name, _)| *name != "info")
            .filter_map(|(name, rest)| Some((name.into(), rest.split(',').next()?.parse().ok()?)))
            .collect();
        let reads = (self.info("stats").lines())
            .find_map(|line| line.strip_prefix("total_reads_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("total_reads_processed in INFO stats (Redis 6 or later)");
        let at = self.1.elapsed();
        RedisWork { calls, reads, at }
    }
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<String>>>>;

/// A client signing in at the gate, with the codes its webhook receives.
#[derive(Clone)]
struct SignIn {
    client: reqwest::Client,
    base: Arc<str>,
    waiters: Waiters,
}

impl SignIn {
    /// Posts `body` to `path`; the answer must be a success.
    async fn post(&self, path: &str, body: Value) {
        let request = self.client.post(format!("{}{path}", self.base));
        let status = request.json(&body).send().await.unwrap().status();
        assert!(status.is_success(), "{path}: {status}");
    }

    /// Asks for a code for `email`; answers it once the webhook has it.
    async fn send(&self, email: &str) -> String {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap().insert(email.to_owned(), tx);
        self.post("/auth/otp/send", json!({ "email": email })).await;
        rx.await.unwrap()
    }

    async fn verify(&self, email: &str, code: &str) {
        self.post("/auth/otp/verify", json!({ "email": email, "code": code }))
            .await;
    }
}

/// Sign-ins per second on the memory store, or on the Redis at `redis_port`.
async fn sign_ins(
    dir: &std::path::Path,
    key: &std::path::Path,
    scale: &Scale,
    redis_port: Option<u16>,
) -> Vec<String> {
    // The webhook receiver: hands each code to the client waiting for that address.
    let waiters: Waiters = Arc::default();
    let hook_waiters = waiters.clone();
    let hook = Router::new().route(
        "/hook",
        post(move |Json(body): Json<Value>| {
            let waiters = hook_waiters.clone();
            async move {
                let to = body["to"].as_str().unwrap_or_default().to_owned();
                if let Some(waiter) = waiters.lock().unwrap().remove(&to) {
                    let _ = waiter.send(body["code"].as_str().unwrap_or_default().to_owned());
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, hook).await });

    // A shared store needs the secret every instance shares.
    let store = match redis_port {
        Some(port) => format!(
            "[store]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}\"\n\
             namespace = \"bench{}\"\n",
            free_port()
        ),
        None => String::new(),
    };
    // Every client is 127.0.0.1, so the per-IP limits are lifted for this measurement.
    let gate = Gateway::spawn(
        dir,
        key,
        &format!(
            "{store}[otp]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
             sends_per_ip = \"1000000000/1s\"\nverifies_per_ip = \"1000000000/1s\"\n\
             [delivery.email]\nkind = \"webhook\"\nurl = \"http://{hook_addr}/hook\"\n\
             [delivery.sms]\nkind = \"webhook\"\nurl = \"http://{hook_addr}/hook\"\n"
        ),
    );
    tokio::task::block_in_place(|| gate.wait_healthy());
    let one = SignIn {
        client: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{}", gate.1).into(),
        waiters,
    };
    // One sign-in first: what the gate does once (Redis loading its scripts) is no part
    // of the rate, nor of the commands per sign-in.
    let code = one.send("warm@example.com").await;
    one.verify("warm@example.com", &code).await;

    let (healthz, _) = drive(scale.load_for, |_| {
        let request = one.client.get(format!("{}/healthz", one.base));
        async move {
            let answer = request.send().await.unwrap();
            assert!(answer.status().is_success());
        }
    })
    .await;

    let mut probe = redis_port.map(RedisProbe::connect);
    let next = AtomicU64::new(0);
    let before = probe.as_mut().map(RedisProbe::read);
    let (sign_ins, under_load) = drive(scale.load_for, |_| {
        let email = format!("user{}@example.com", next.fetch_add(1, Ordering::Relaxed));
        let one = one.clone();
        async move {
            let code = one.send(&email).await;
            one.verify(&email, &code).await;
        }
    })
    .await;
    let after = probe.as_mut().map(RedisProbe::read);
    let store_name = redis_port.map_or("memory", |_| "Redis");
    let mut rows = vec![format!(
        "| sign-ins over HTTP (send + verify, {CLIENTS} clients, {store_name} store) | {sign_ins:.0} /s | `GET /healthz`: {healthz:.0} req/s | {:.3} |",
        sign_ins / healthz
    )];
    let (Some(mut probe), Some(before), Some(after)) = (probe, before, after) else {
        return rows;
    };
    // What the gate makes Redis do with no requests at all (a timer, a poll), over as
    // long a time: taken off every measurement below.
    let idle_from = probe.read();
    tokio::time::sleep(after.at - before.at).await;
    let idle = probe.read().since(&idle_from, None);
    let load = after.since(&before, Some(&idle));
    let load_per_sign_in = load.commands() / under_load as f64;

    // One client, a fixed count: every send, then every verify, so each has its own
    // counts, and no request overlaps another, so each round trip is one read.
    let mut codes = Vec::new();
    let sends_from = probe.read();
    for n in 0..scale.sequential {
        let email = format!("one{n}@example.com");
        // The delivery is awaited here, so it is done before the next send starts.
        codes.push((one.send(&email).await, email));
    }
    let verifies_from = probe.read();
    for (code, email) in codes {
        one.verify(&email, &code).await;
    }
    let verifies_to = probe.read();
    let n = scale.sequential as f64;
    let sends = verifies_from.since(&sends_from, Some(&idle));
    let verifies = verifies_to.since(&verifies_from, Some(&idle));
    let commands = (sends.commands() + verifies.commands()) / n;
    let round_trips = (sends.reads + verifies.reads) / n;
    let (idle_commands, count) = (idle.commands(), scale.sequential);
    let (send_trips, verify_trips) = (sends.reads / n, verifies.reads / n);
    let (load_ratio, per_trip) = (load_per_sign_in / commands, commands / round_trips);
    rows.push(format!("| Redis commands per sign-in (send + verify), {under_load} sign-ins at {CLIENTS} clients (a script's commands count too; less an idle gate's {idle_commands:.0} over as long) | {load_per_sign_in:.2} | one client, {count} sign-ins: {commands:.2} | {load_ratio:.2} |"));
    rows.push(format!("| Redis round trips per sign-in (Redis's socket reads), one client, {count} sign-ins: send {send_trips:.2} + verify {verify_trips:.2} | {round_trips:.2} | commands per sign-in, same sign-ins: {commands:.2} | {per_trip:.2} commands per round trip |"));
    for (what, work) in [("send", &sends), ("verify", &verifies)] {
        // Each command's calls per operation: `2.00 EVALSHA, 3.00 GET`.
        let each: Vec<_> = (work.calls.iter())
            .map(|(name, calls)| format!("{:.2} {}", calls / n, name.to_uppercase()))
            .collect();
        let (total, each) = (work.commands() / n, each.join(", "));
        rows.push(format!(
            "| Redis commands per {what}, one client | {total:.2} | {each} | — |"
        ));
    }
    rows
}

/// Runs `CLIENTS` loops of `round` for `duration`; returns rounds per second, and rounds.
async fn drive<F, Fut>(duration: Duration, round: F) -> (f64, u64)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut loops = tokio::task::JoinSet::new();
    // Each client runs its rounds one after another; the futures are built here, on the
    // caller's side, so `round` need not be Send.
    let mut pending: Vec<_> = (0..CLIENTS).map(|i| Some(round(i))).collect();
    while Instant::now() < deadline {
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(future) = slot.take() {
                let done = done.clone();
                loops.spawn(async move {
                    future.await;
                    done.fetch_add(1, Ordering::Relaxed);
                    i
                });
            }
        }
        match loops.join_next().await {
            Some(finished) => pending[finished.unwrap()] = Some(round(0)),
            None => break,
        }
    }
    while loops.join_next().await.is_some() {}
    let rounds = done.load(Ordering::Relaxed);
    (rounds as f64 / started.elapsed().as_secs_f64(), rounds)
}

/// Discards messages: the store is what is measured.
struct Discard;

#[async_trait]
impl Sender for Discard {
    async fn send(&self, _: &Message) -> Result<(), DeliveryError> {
        Ok(())
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

fn pending_codes(runtime: &tokio::runtime::Runtime, scale: &Scale) -> Vec<String> {
    let gate = runtime.block_on(async {
        Gate::builder()
            .store(Arc::new(MemoryStore::new(4_000_000)))
            .senders(Senders {
                email: Some(Arc::new(Discard)),
                sms: Some(Arc::new(Discard)),
                ..Senders::default()
            })
            .build()
            .unwrap()
    });
    let issue = |from: u64, to: u64| {
        runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            let per = (to - from).div_ceil(CLIENTS as u64);
            for c in 0..CLIENTS as u64 {
                let gate = gate.clone();
                let start = from + c * per;
                let end = (start + per).min(to);
                tasks.spawn(async move {
                    for n in start..end {
                        let identifier =
                            Identifier::email(&format!("user{n}@example.com")).unwrap();
                        loop {
                            let sent = gate
                                .send(SendRequest {
                                    tenant: None,
                                    identifier: identifier.clone(),
                                    client_ip: None,
                                    locale: None,
                                })
                                .await;
                            match sent {
                                Ok(_) => break,
                                // The outbox is full for a moment (nothing was stored):
                                // wait for it, then retry.
                                Err(GateError::DeliveryUnavailable) => {
                                    tokio::time::sleep(Duration::from_millis(1)).await
                                }
                                Err(other) => panic!("send: {other}"),
                            }
                        }
                    }
                });
            }
            while let Some(task) = tasks.join_next().await {
                task.unwrap();
            }
        })
    };
    // Warm the allocator and the runtime first, so the growth is the codes'.
    issue(0, 1_000);
    let base = rss_bytes();
    let key = otpgate::store::keys::code_record(
        "default",
        &Identifier::email("user1@example.com").unwrap(),
    );
    assert!(
        runtime
            .block_on(gate.store().peek_code_state(&key))
            .unwrap()
            .is_some()
    );
    // What one pending code is, laid out plainly: its key's bytes and its record's struct.
    let logical = key.len() + std::mem::size_of::<otpgate::otp::CodeState>();
    let mut rows = Vec::new();
    let mut pending = 0;
    for target in scale.pending {
        issue(1_000 + pending, 1_000 + target);
        pending = target;
        let per_code = (rss_bytes().saturating_sub(base)) as f64 / target as f64;
        rows.push(format!(
            "| memory per pending code, {target} pending | {per_code:.0} bytes | key + record struct: {logical} bytes | {:.2} |",
            per_code / logical as f64
        ));
    }
    rows
}

fn cold_start(dir: &std::path::Path, key: &std::path::Path, scale: &Scale) -> String {
    let mut starts = Vec::new();
    let mut baselines = Vec::new();
    for _ in 0..scale.cold_starts {
        let started = Instant::now();
        let status = Command::new("true").status().unwrap();
        assert!(status.success());
        baselines.push(started.elapsed());

        let started = Instant::now();
        let gate = Gateway::spawn(dir, key, "");
        gate.wait_healthy();
        starts.push(started.elapsed());
    }
    starts.sort();
    baselines.sort();
    let median = starts[starts.len() / 2];
    let baseline = baselines[baselines.len() / 2];
    format!(
        "| cold start to first answered request (median of {}, max {:.1} ms) | {:.1} ms | spawning `true`: {:.2} ms | {:.0} |",
        starts.len(),
        starts[starts.len() - 1].as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
        baseline.as_secs_f64() * 1e3,
        median.as_secs_f64() / baseline.as_secs_f64()
    )
}
