//! A simulated SMS pumping attack against a gate with the recommended SMS guard: 10,000
//! sends to numbers in four ranges of one country's mobile numbers, from 500 client
//! addresses, mixed with 1,000 real users who each send and type their code, spread over
//! many prefixes. It runs through `Gate::send` and `Gate::verify` with the client address
//! set (on the memory store and on Redis), and through the HTTP front from loopback as a
//! trusted proxy naming each client in `X-Forwarded-For`; on a manual clock that moves
//! 100 ms per request. It counts the attack's messages that reached the SMS sender, the
//! real users refused, and the time on that clock from the attack's first send to the
//! guard's first refusal of it and to its refusal of every attacked range.
//!
//! `bench/sms_pumping.sh` runs it and prints the figures.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use otpgate::delivery::{DeliveryError, Message, OutboxPolicy, Sender, Senders};
use otpgate::gate::{SmsGuard, ThrottleReason};
use otpgate::identifier::Identifier;
use otpgate::otp::{Clock, ManualClock, ServerSecret, Timestamp};
use otpgate::store::{MemoryStore, RedisSettings, RedisStore, Store};
use otpgate::{Gate, GateError, SendRequest, VerifyRequest};

/// The attacked ranges: 10,000 numbers each (Latvian mobiles, `+371 2xxx xxxx`), the
/// 7-digit prefixes the guard counts by.
const ATTACKED: [&str; 4] = ["3712001", "3712002", "3712003", "3712004"];

/// How far the clock moves per request: ten a second.
const STEP: Duration = Duration::from_millis(100);

/// How many requests later a real user types the code: 20 s.
const TYPING: u64 = 200;

/// Where the attack's messages and the real users' codes end up.
#[derive(Default)]
struct Sink {
    attack: AtomicU64,
    codes: Mutex<HashMap<String, String>>,
}

#[async_trait::async_trait]
impl Sender for Sink {
    async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        let to = message.to.as_str();
        if ATTACKED.iter().any(|prefix| to[1..].starts_with(prefix)) {
            self.attack.fetch_add(1, Ordering::SeqCst);
        } else {
            self.codes
                .lock()
                .unwrap()
                .insert(to.to_owned(), message.code.expose().to_owned());
        }
        Ok(())
    }
}

impl Sink {
    /// The code the outbox delivered to `to`, waiting for it (bounded).
    async fn code_for(&self, to: &str) -> String {
        for _ in 0..5_000 {
            if let Some(code) = self.codes.lock().unwrap().remove(to) {
                return code;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("no code delivered to {to} within 5 s");
    }
}

/// A small deterministic generator (xorshift), so every run is the same attack.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A valid number made by `make` from random digits, retried until it is one.
fn valid(random: &mut Random, make: impl Fn(&mut Random) -> String) -> Identifier {
    for _ in 0..1_000 {
        if let Ok(phone) = Identifier::phone(&make(random)) {
            return phone;
        }
    }
    panic!("no valid number from this pattern");
}

/// Real users: US numbers over many area codes and exchanges, and UK mobiles.
fn real_users(random: &mut Random, count: usize) -> Vec<Identifier> {
    const AREAS: [u32; 12] = [201, 212, 213, 305, 312, 415, 503, 617, 646, 702, 713, 206];
    let mut seen = HashSet::new();
    let mut users = Vec::with_capacity(count);
    while users.len() < count {
        let phone = if random.below(4) == 0 {
            valid(random, |r| format!("+4474{:08}", r.below(100_000_000)))
        } else {
            valid(random, |r| {
                let area = AREAS[r.below(AREAS.len() as u64) as usize];
                let exchange = 200 + r.below(800);
                format!("+1{area}{exchange}{:04}", r.below(10_000))
            })
        };
        if seen.insert(phone.as_str().to_owned()) {
            users.push(phone);
        }
    }
    users
}

/// What one run measured.
#[derive(Debug)]
struct Figures {
    attack_attempts: u64,
    attack_delivered: u64,
    real_users: u64,
    real_refused: u64,
    to_first_trip: Option<Duration>,
    to_all_tripped: Option<Duration>,
    prefixes_seen: usize,
    wall: Duration,
}

impl Figures {
    fn print(&self, store: &str) {
        let share = |part: u64, whole: u64| 100.0 * part as f64 / whole.max(1) as f64;
        let secs =
            |d: Option<Duration>| d.map_or("never".into(), |d| format!("{:.1}s", d.as_secs_f64()));
        println!(
            "sms_pumping store={store} attack_attempts={} attack_delivered={} ({:.2}%) \
             real_users={} real_refused={} ({:.2}%) to_first_trip={} to_all_prefixes_tripped={} \
             real_prefixes={} wall={:.2}s",
            self.attack_attempts,
            self.attack_delivered,
            share(self.attack_delivered, self.attack_attempts),
            self.real_users,
            self.real_refused,
            share(self.real_refused, self.real_users),
            secs(self.to_first_trip),
            secs(self.to_all_tripped),
            self.prefixes_seen,
            self.wall.as_secs_f64(),
        );
    }
}

/// How the attack reaches the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Through {
    /// `Gate::send` and `Gate::verify`, with the client address set.
    Engine,
    /// The HTTP front (the tower layer around an app on loopback), from loopback as a
    /// trusted proxy that names the client in `X-Forwarded-For`.
    Http,
}

/// A send's outcome, as either way reports it.
#[derive(Debug)]
enum Sent {
    Ok,
    /// 429 from the SMS guard's pumping signature.
    Pumping,
    /// 429 from a destination's own resend cooldown.
    Cooldown,
    Refused(String),
}

struct Driver {
    gate: Gate,
    http: Option<(reqwest::Client, String)>,
}

impl Driver {
    async fn new(gate: Gate, through: Through) -> Driver {
        let http = match through {
            Through::Engine => None,
            Through::Http => {
                // The test client is the trusted proxy; the address it names is the client.
                let settings = otpgate::http::HttpSettings {
                    trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
                    ..otpgate::http::HttpSettings::default()
                };
                let front = otpgate::http::Front::new(gate.clone(), settings);
                let (base, _) = common::start_form(common::Form::Tower, front).await;
                Some((reqwest::Client::new(), base))
            }
        };
        Driver { gate, http }
    }

    async fn send(&self, who: &Identifier, ip: IpAddr) -> Sent {
        let Some((client, base)) = &self.http else {
            return match self
                .gate
                .send(SendRequest {
                    tenant: None,
                    identifier: who.clone(),
                    client_ip: Some(ip),
                    locale: None,
                })
                .await
            {
                Ok(_) => Sent::Ok,
                Err(GateError::SendsThrottled { reason, .. }) => {
                    assert_eq!(reason, ThrottleReason::Pumping, "the signature, not a cap");
                    Sent::Pumping
                }
                Err(GateError::RateLimited { .. }) => Sent::Cooldown,
                Err(other) => Sent::Refused(format!("{other:?}")),
            };
        };
        let answer = client
            .post(format!("{base}/auth/otp/send"))
            .header("x-forwarded-for", ip.to_string())
            .json(&serde_json::json!({ "phone": who.as_str() }))
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        match (status.as_u16(), body["error"].as_str()) {
            (200, _) => Sent::Ok,
            (429, Some("destination_throttled")) => Sent::Pumping,
            (429, Some("rate_limited")) => Sent::Cooldown,
            _ => Sent::Refused(format!("{status} {body}")),
        }
    }

    async fn verify(&self, who: &Identifier, code: &str, ip: IpAddr) -> Result<(), String> {
        let Some((client, base)) = &self.http else {
            return self
                .gate
                .verify(VerifyRequest {
                    tenant: None,
                    identifier: who.clone(),
                    code,
                    client_ip: Some(ip),
                })
                .await
                .map(drop)
                .map_err(|e| format!("{e:?}"));
        };
        let answer = client
            .post(format!("{base}/auth/otp/verify"))
            .header("x-forwarded-for", ip.to_string())
            .json(&serde_json::json!({ "phone": who.as_str(), "code": code }))
            .send()
            .await
            .unwrap();
        match answer.status().as_u16() {
            200 => Ok(()),
            status => Err(format!(
                "{status} {}",
                answer.text().await.unwrap_or_default()
            )),
        }
    }
}

async fn run(store: Arc<dyn Store>, attack: u64, real: usize, through: Through) -> Figures {
    let started = Instant::now();
    let sink = Arc::new(Sink::default());
    // A fixed start, mid-hour, so that the windows the attack spans are the same every run.
    let clock = ManualClock::starting_at(Timestamp(1_800_000_000_000 + 1_200_000));
    let guard = SmsGuard::recommended()
        // Generous caps, far above this traffic: only the pumping signature may act.
        .with_country_cap(50_000)
        .with_hourly_messages(100_000)
        .with_daily_messages(1_000_000)
        .with_hourly_cost(10_000.0)
        .with_price("LV", 0.12);
    let gate = Gate::builder()
        .store(store.clone())
        .clock(Arc::new(clock.clone()))
        .senders(Senders {
            email: Some(sink.clone() as Arc<dyn Sender>),
            sms: Some(sink.clone() as Arc<dyn Sender>),
            ..Senders::default()
        })
        .outbox_policy(OutboxPolicy {
            capacity: 100_000,
            ..OutboxPolicy::default()
        })
        .sms_guard(guard)
        .build()
        .unwrap();
    let driver = Driver::new(gate.clone(), through).await;

    let mut random = Random(0x5EED_CAFE_F00D_1234);
    let users = real_users(&mut random, real);
    let prefixes_seen: HashSet<String> =
        users.iter().map(|u| u.as_str()[1..8].to_owned()).collect();
    assert!(
        prefixes_seen
            .iter()
            .all(|p| !ATTACKED.contains(&p.as_str())),
        "real users stay off the attacked ranges"
    );
    // Which request is whose: `real` real users spread among `attack` attack sends.
    let total = attack + real as u64;
    let mut real_at: HashSet<u64> = HashSet::new();
    while real_at.len() < real {
        real_at.insert(random.below(total));
    }

    let mut users = users.into_iter();
    let mut attack_sent = 0u64;
    let mut attack_start = None;
    let mut tripped: HashMap<&str, Timestamp> = HashMap::new();
    let mut real_refused = 0u64;
    let mut real_ip = 0u32;
    let mut typing: std::collections::VecDeque<(u64, Identifier, String, IpAddr)> =
        std::collections::VecDeque::new();
    // Past the last request, for the last real users to type their codes.
    for step in 0..total + TYPING {
        clock.advance(STEP);
        // Real users type their code 20 s (200 requests) after they asked for it.
        while typing.front().is_some_and(|(due, ..)| *due <= step) {
            let Some((_, user, code, ip)) = typing.pop_front() else {
                break;
            };
            let verified = driver.verify(&user, &code, ip).await;
            if let Err(error) = verified {
                eprintln!("real user {} refused at verify: {error:?}", user.masked());
                real_refused += 1;
            }
        }
        if step >= total {
            continue;
        }
        if real_at.contains(&step) {
            let user = users.next().expect("a real user");
            real_ip += 1;
            let ip = IpAddr::V4(Ipv4Addr::from(0xC633_0000 + real_ip)); // 198.51.x.x
            let sent = driver.send(&user, ip).await;
            match sent {
                Sent::Ok => {
                    let code = sink.code_for(user.as_str()).await;
                    typing.push_back((step + TYPING, user, code, ip));
                }
                error => {
                    eprintln!("real user {} refused at send: {error:?}", user.masked());
                    real_refused += 1;
                }
            }
            continue;
        }
        let prefix = ATTACKED[(attack_sent % ATTACKED.len() as u64) as usize];
        // Fresh numbers in the range each time, as pumping does.
        let number = valid(&mut random, |r| format!("+{prefix}{:04}", r.below(10_000)));
        let ip = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + (attack_sent % 500) as u32));
        attack_sent += 1;
        attack_start.get_or_insert(clock.now());
        match driver.send(&number, ip).await {
            Sent::Ok => {}
            Sent::Pumping => {
                tripped.entry(prefix).or_insert(clock.now());
            }
            // A repeated random number inside its resend cooldown: the code's own limit.
            Sent::Cooldown => {}
            Sent::Refused(other) => panic!("attack send: {other}"),
        }
    }
    // Every queued message handed to the sender before counting.
    for _ in 0..5_000 {
        if gate.outbox_depth() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(gate.outbox_depth(), 0, "the outbox drained");
    // The trips raised the alert every gate on the store reads: tenants with
    // `challenge = "under_attack"` now ask each send for a solved challenge.
    assert!(
        store
            .get_value(otpgate::store::keys::sms_guard_alert())
            .await
            .unwrap()
            .is_some(),
        "the guard's alert is raised"
    );
    assert!(typing.is_empty(), "every real user typed the code");
    let start = attack_start.expect("the attack ran");
    let since = |at: &Timestamp| start.until(*at);
    Figures {
        attack_attempts: attack_sent,
        attack_delivered: sink.attack.load(Ordering::SeqCst),
        real_users: real as u64,
        real_refused,
        to_first_trip: tripped.values().min().map(since),
        to_all_tripped: (tripped.len() == ATTACKED.len())
            .then(|| tripped.values().max().map(since))
            .flatten(),
        prefixes_seen: prefixes_seen.len(),
        wall: started.elapsed(),
    }
}

fn assert_targets(figures: &Figures) {
    // Under 1% of the attack's attempts reach the SMS sender: each range gets its
    // `min_sends` before its verify ratio is judged, and nothing after.
    assert!(
        figures.attack_delivered * 100 < figures.attack_attempts,
        "{figures:?}"
    );
    let per_range = SmsGuard::DEFAULT_MIN_SENDS + 1;
    assert!(
        figures.attack_delivered <= per_range * ATTACKED.len() as u64,
        "{figures:?}"
    );
    assert!(
        figures.real_refused * 100 < figures.real_users,
        "{figures:?}"
    );
    assert!(
        figures.to_all_tripped.is_some(),
        "every attacked range throttled: {figures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pumping_attack_is_stopped_and_real_users_are_not() {
    let figures = run(
        Arc::new(MemoryStore::default()),
        10_000,
        1_000,
        Through::Engine,
    )
    .await;
    figures.print("memory");
    assert_targets(&figures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pumping_attack_is_stopped_on_redis_too() {
    let redis = common::RedisServer::start().await;
    let store = RedisStore::new(
        RedisSettings {
            url: redis.url(),
            namespace: "pumping".into(),
            timeout: Duration::from_secs(2),
        },
        &ServerSecret::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap(),
    )
    .unwrap();
    let figures = run(Arc::new(store), 10_000, 1_000, Through::Engine).await;
    figures.print("redis");
    assert_targets(&figures);
}

/// The same attack through the HTTP front: every request from loopback, a trusted proxy,
/// naming its client in `X-Forwarded-For` (500 attack addresses, one per real user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pumping_attack_through_the_http_front_is_stopped_too() {
    let figures = run(
        Arc::new(MemoryStore::default()),
        10_000,
        1_000,
        Through::Http,
    )
    .await;
    figures.print("memory, over HTTP");
    assert_targets(&figures);
}
