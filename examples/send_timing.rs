//! Whether a send answer's timing tells a known account from an unknown one: send
//! requests over HTTP for members and for strangers, alternating, and the medians, their
//! difference and the Mann-Whitney U test for each of three set-ups:
//!
//! - nexudus: `config/nexudus.toml` (static directory, no auto-create), its users file
//!   swapped for one holding enough members;
//! - generic: the generic dialect with a static directory, no auto-create;
//! - aerocall: the aerocall dialect, a project with a static directory, no auto-create and
//!   `reveal_account = false`.
//!
//! ```sh
//! cargo run --release --example send_timing -- 400      # bench/send_timing.sh
//! ```
//!
//! The gate is the tower layer on a loopback port (one runtime thread, like
//! `examples/bench_app.rs`); the client is a plain blocking HTTP/1.1 connection, so a
//! sample is the answer's round trip and little else. Every sample uses an identifier of
//! its own, so no limit or cooldown applies to either kind, and per-IP limits are raised
//! out of the way. Each pair goes in a random order, so any after-effect of one request
//! (the outbox worker delivering or dropping its message) falls on both kinds alike.
//! Delivery is a sender that only counts, so that what is timed is the request path.
//! Exits with status 1 when a difference of medians reaches 10 µs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use otpgate::IpLimits;
use otpgate::config::Config;
use otpgate::delivery::{DeliveryError, Message, Sender, Senders};
use otpgate::directory::StaticDirectory;
use otpgate::http::Front;
use otpgate::otp::Rate;
use otpgate::tower::OtpLayer;

/// Pairs sent first and not counted: connection, caches and allocator warm up.
const WARM_UP: usize = 100;

/// The largest difference of medians that passes.
const LIMIT_MICROS: f64 = 10.0;

/// Pause after each request, so that the outbox worker's part is done before the next.
/// Spent spinning: a sleeping client lets its core idle, and the wake-up from idle adds
/// more noise than anything measured here.
const PAUSE: Duration = Duration::from_micros(300);

type Error = Box<dyn std::error::Error>;

const GENERIC: &str = r#"
[server]
default_tenant = "default"

[[endpoints]]
dialect = "generic"
prefix = "/auth"

[delivery.email]
kind = "console"

[directory]
kind = "static"
file = "users.toml"

[[tenants]]
id = "default"
channels = ["email"]
auto_create = false
reveal_account = false
"#;

const AEROCALL: &str = r#"
[server]
default_tenant = "members"

[otp]
length = 6
ttl = "10m"

[token]
audience = "aerocall-app"
cookie = ""

[[endpoints]]
dialect = "aerocall"
prefix = "/api/v1/public/projects"

[delivery.email]
kind = "console"

[directory]
kind = "static"
file = "users.toml"

[[tenants]]
id = "members"
channels = ["email"]
auto_create = false
reveal_account = false
"#;

/// One way of asking for a code.
struct Setup {
    name: &'static str,
    /// The tenant the users file puts members in.
    tenant: &'static str,
    /// The raw HTTP/1.1 request that sends a code to `email`.
    request: fn(&str) -> String,
}

fn nexudus_request(email: &str) -> String {
    format!(
        "GET /api/sys/users/sendOtp?email={email}&businessId=7 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
}

fn json_post(path: &str, email: &str) -> String {
    let body = format!(r#"{{"email":"{email}"}}"#);
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn generic_request(email: &str) -> String {
    json_post("/auth/otp/send", email)
}

fn aerocall_request(email: &str) -> String {
    json_post("/api/v1/public/projects/members/auth/otp/send", email)
}

/// Counts what it is given, and delivers nothing.
#[derive(Default)]
struct Counting(AtomicU64);

#[async_trait]
impl Sender for Counting {
    async fn send(&self, _message: &Message) -> Result<(), DeliveryError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn member(i: usize) -> String {
    format!("k{i:06}@example.com")
}

/// Same length as a member's, so hashing and copying cost the same.
fn stranger(i: usize) -> String {
    format!("u{i:06}@example.com")
}

fn write_users(dir: &Path, tenant: &str, count: usize) -> Result<(), Error> {
    let mut text = String::new();
    for i in 0..count {
        text.push_str(&format!(
            "[[users]]\nid = \"{i}\"\nemail = \"{}\"\ntenant = \"{tenant}\"\n\n",
            member(i)
        ));
    }
    std::fs::write(dir.join("users.toml"), text)?;
    Ok(())
}

fn gate_for(setup: &Setup, dir: &Path, sender: Arc<Counting>) -> Result<Front, Error> {
    let config = match setup.name {
        "nexudus" => Config::from_file(Path::new("config/nexudus.toml"))?,
        "generic" => Config::parse(GENERIC, "generic", dir)?,
        _ => Config::parse(AEROCALL, "aerocall", dir)?,
    };
    let limits = IpLimits {
        sends: Rate::new(u32::MAX, Duration::from_secs(60)),
        verifies: Rate::new(u32::MAX, Duration::from_secs(60)),
    };
    let (builder, http) = config.into_parts();
    let gate = builder
        // nexudus.toml's own users file has two members; the rest of the file stays.
        .directory(Arc::new(StaticDirectory::from_file(
            &dir.join("users.toml"),
        )?))
        .senders(Senders {
            email: Some(sender.clone()),
            sms: Some(sender),
            ..Senders::default()
        })
        .ip_limits(limits)
        .build()?;
    Ok(Front::new(gate, http))
}

/// Serves `gate` as a tower layer on a loopback port, on a runtime of its own.
fn serve(gate: Front) -> Result<SocketAddr, Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let app = Router::new()
                .fallback(|| async { "ok" })
                .layer(OtpLayer::new(gate));
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
            if let Err(error) = served {
                eprintln!("server stopped: {error}");
            }
        });
    });
    Ok(addr)
}

/// One keep-alive HTTP/1.1 connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Result<Client, Error> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends `request`, reads the whole answer; its status, body and round trip.
    fn round_trip(&mut self, request: &[u8]) -> Result<(u16, Vec<u8>, Duration), Error> {
        self.buf.clear();
        let started = Instant::now();
        self.stream.write_all(request)?;
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let (status, length) = {
            let head = std::str::from_utf8(&self.buf[..head_end])?;
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or("no status")?;
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .ok_or("answer without content-length")?;
            (status, length)
        };
        while self.buf.len() < head_end + length {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let elapsed = started.elapsed();
        Ok((status, self.buf[head_end..].to_vec(), elapsed))
    }
}

/// What one set-up measured, in microseconds.
struct Outcome {
    /// First quartile, median, third quartile.
    known: [f64; 3],
    unknown: [f64; 3],
    u: f64,
    p: f64,
}

fn measure(setup: &Setup, samples: usize) -> Result<Outcome, Error> {
    let dir = tempfile::tempdir()?;
    write_users(dir.path(), setup.tenant, WARM_UP + samples)?;
    let sender = Arc::new(Counting::default());
    let gate = gate_for(setup, dir.path(), sender.clone())?;
    let addr = serve(gate.clone())?;
    let mut client = Client::connect(addr)?;

    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..WARM_UP + samples {
        let pair = [
            (true, (setup.request)(&member(i))),
            (false, (setup.request)(&stranger(i))),
        ];
        let order: [usize; 2] = if rand::random::<bool>() {
            [0, 1]
        } else {
            [1, 0]
        };
        let mut bodies = [Vec::new(), Vec::new()];
        for index in order {
            let (is_member, request) = &pair[index];
            let (status, body, took) = client.round_trip(request.as_bytes())?;
            if status != 200 {
                return Err(format!(
                    "{}: status {status}: {}",
                    setup.name,
                    String::from_utf8_lossy(&body)
                )
                .into());
            }
            if i >= WARM_UP {
                let micros = took.as_secs_f64() * 1e6;
                let kind = if *is_member { &mut known } else { &mut unknown };
                kind.push(micros);
            }
            bodies[index] = body;
            let paused = Instant::now();
            while paused.elapsed() < PAUSE {
                std::hint::spin_loop();
            }
        }
        if bodies[0] != bodies[1] {
            return Err(format!("{}: the answers differ", setup.name).into());
        }
    }

    // Every member's code reached the sender; every stranger's was dropped by the worker.
    let sent = (WARM_UP + samples) as u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    while sender.0.load(Ordering::Relaxed) < sent || gate.gate().decoys_dropped() < sent {
        if Instant::now() > deadline {
            return Err(format!(
                "{}: delivered {} and dropped {}, expected {sent} each",
                setup.name,
                sender.0.load(Ordering::Relaxed),
                gate.gate().decoys_dropped()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = gate.gate().delivery_stats();
    if sender.0.load(Ordering::Relaxed) != sent || stats.sent != sent || stats.failed != 0 {
        return Err(format!("{}: delivery counts are off: {stats:?}", setup.name).into());
    }

    let (u, p) = mann_whitney(&known, &unknown);
    Ok(Outcome {
        known: quartiles(&mut known),
        unknown: quartiles(&mut unknown),
        u,
        p,
    })
}

fn main() -> Result<(), Error> {
    // nexudus.toml names its files relative to the repository root.
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR"))?;
    let samples: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 400,
    };
    let setups = [
        Setup {
            name: "nexudus",
            tenant: "7",
            request: nexudus_request,
        },
        Setup {
            name: "generic",
            tenant: "default",
            request: generic_request,
        },
        Setup {
            name: "aerocall",
            tenant: "members",
            request: aerocall_request,
        },
    ];
    println!(
        "| set-up | known median µs | unknown median µs | difference µs | known p25–p75 µs | unknown p25–p75 µs | Mann-Whitney U | p (two-sided) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut worst: f64 = 0.0;
    for setup in &setups {
        let o = measure(setup, samples)?;
        let difference = o.known[1] - o.unknown[1];
        worst = worst.max(difference.abs());
        println!(
            "| {} | {:.1} | {:.1} | {:+.1} | {:.0}–{:.0} | {:.0}–{:.0} | {:.0} | {} |",
            setup.name,
            o.known[1],
            o.unknown[1],
            difference,
            o.known[0],
            o.known[2],
            o.unknown[0],
            o.unknown[2],
            o.u,
            format_p(o.p)
        );
    }
    println!();
    println!(
        "{samples} samples of each kind per set-up, after {WARM_UP} pairs of warm-up; largest |difference| {worst:.1} µs (limit {LIMIT_MICROS} µs)"
    );
    if worst >= LIMIT_MICROS {
        eprintln!("error: a difference of medians reached {LIMIT_MICROS} µs");
        std::process::exit(1);
    }
    Ok(())
}

/// Three decimals, or scientific notation where those would read 0.000.
fn format_p(p: f64) -> String {
    if p < 1e-3 {
        format!("{p:.1e}")
    } else {
        format!("{p:.3}")
    }
}

/// The median of sorted `values`.
fn median(values: &[f64]) -> f64 {
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// First quartile, median and third quartile (medians of the lower and upper halves);
/// sorts `values`.
fn quartiles(values: &mut [f64]) -> [f64; 3] {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    [
        median(&values[..n / 2]),
        median(values),
        median(&values[n.div_ceil(2)..]),
    ]
}

/// The Mann-Whitney U of `a` against `b` and its two-sided p-value, by the normal
/// approximation with tie and continuity corrections (as scipy's `asymptotic` method).
fn mann_whitney(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&v| (v, true))
        .chain(b.iter().map(|&v| (v, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let (mut rank_sum_a, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // Tied values share the mean of the ranks they span (ranks count from 1).
        let rank = (i + j) as f64 / 2.0 + 1.0;
        let in_a = all[i..=j].iter().filter(|x| x.1).count() as f64;
        rank_sum_a += rank * in_a;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        i = j + 1;
    }
    let u = rank_sum_a - n1 * (n1 + 1.0) / 2.0;
    let total = n1 + n2;
    let mean = n1 * n2 / 2.0;
    let variance = n1 * n2 / 12.0 * ((total + 1.0) - ties / (total * (total - 1.0)));
    if variance <= 0.0 || !variance.is_finite() {
        return (u, 1.0);
    }
    let z = ((u - mean).abs() - 0.5).max(0.0) / variance.sqrt();
    (u, erfc(z / std::f64::consts::SQRT_2).min(1.0))
}

/// The complementary error function, to a relative error under 1.2e-7 (Numerical
/// Recipes' Chebyshev fit): ample for a p-value.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, relative: f64) -> bool {
        (a - b).abs() <= relative * b.abs()
    }

    #[test]
    fn erfc_matches_known_values() {
        // Reference values from Python's math.erfc.
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (2.0, 0.004_677_734_981_047_265),
            (-1.0, 1.842_700_792_949_715),
        ] {
            assert!(close(erfc(x), want, 2e-7), "erfc({x}) = {}", erfc(x));
        }
    }

    #[test]
    fn mann_whitney_matches_a_reference() {
        // Reference: a direct rank-sum computation in Python (scipy's asymptotic method
        // gives the same: U = 0, p = 0.0122 for the first).
        let (u, p) = mann_whitney(&[1., 2., 3., 4., 5.], &[6., 7., 8., 9., 10.]);
        assert_eq!(u, 0.0);
        assert!(close(p, 0.012_185_780_355_344_818, 1e-6), "p = {p}");
        let (u, p) = mann_whitney(
            &[1., 2., 2., 3., 3., 3., 4.],
            &[2., 3., 4., 4., 5., 5., 6., 6.],
        );
        assert_eq!(u, 8.5);
        assert!(close(p, 0.025_144_761_173_357_396, 1e-6), "p = {p}");
    }

    #[test]
    fn mann_whitney_is_symmetric_and_calm_on_equal_samples() {
        let a = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        let b = [2.0, 7.0, 1.0, 8.0, 2.0, 8.0, 1.0, 8.0];
        let (u_ab, p_ab) = mann_whitney(&a, &b);
        let (u_ba, p_ba) = mann_whitney(&b, &a);
        assert_eq!(u_ab + u_ba, 64.0);
        assert!(close(p_ab, p_ba, 1e-12));
        assert_eq!(mann_whitney(&a, &a).1, 1.0);
        assert_eq!(mann_whitney(&[2.0; 5], &[2.0; 5]).1, 1.0);
    }

    #[test]
    fn quartiles_of_odd_and_even_counts() {
        assert_eq!(quartiles(&mut [3.0, 1.0, 2.0]), [1.0, 2.0, 3.0]);
        assert_eq!(quartiles(&mut [4.0, 1.0, 3.0, 2.0]), [1.5, 2.5, 3.5]);
        assert_eq!(
            quartiles(&mut [7.0, 1.0, 5.0, 3.0, 2.0, 6.0, 4.0, 8.0]),
            [2.5, 4.5, 6.5]
        );
    }
}
