//! What one send and one verify cost on Redis: at most two network round trips each,
//! counted by a TCP relay between the gate and a real redis-server, and the commands
//! Redis ran, read from `INFO commandstats`. An SMS send with every rule of the SMS guard
//! on costs two as well: the guard's counters ride on the first.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{RedisServer, capture, email_and_sms, next_message, send_to, verify_for};
use otpgate::directory::StaticDirectory;
use otpgate::gate::SmsGuard;
use otpgate::identifier::Identifier;
use otpgate::otp::{ManualClock, ServerSecret};
use otpgate::store::{RedisSettings, RedisStore};
use otpgate::{Gate, GateError, SendRequest, VerifyRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A relay in front of Redis that counts round trips and reads the commands in each: a
/// client write that follows an answer of the server (or opens the connection) starts a
/// new round trip. Commands pipelined together leave in one write and share a round trip;
/// a client that waits for an answer before it sends again takes another.
struct RoundTripCounter {
    port: u16,
    /// The names of the commands sent in each round trip, in order.
    rounds: Arc<Mutex<Vec<Vec<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RoundTripCounter {
    async fn start(redis_port: u16) -> RoundTripCounter {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let rounds = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&rounds);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let server = TcpStream::connect(("127.0.0.1", redis_port)).await.unwrap();
                tokio::spawn(relay(client, server, Arc::clone(&seen)));
            }
        });
        RoundTripCounter { port, rounds, task }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn rounds(&self) -> Vec<Vec<String>> {
        self.rounds.lock().unwrap().clone()
    }
}

impl Drop for RoundTripCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, rounds: Arc<Mutex<Vec<Vec<String>>>>) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    // Whether the server spoke last: then the client's next bytes open a round trip.
    let answered = Arc::new(AtomicBool::new(true));
    let answered_upstream = Arc::clone(&answered);
    let upstream = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut pending = Vec::new();
        loop {
            let read = match from_client.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            {
                let mut rounds = rounds.lock().unwrap();
                if answered_upstream.swap(false, Ordering::SeqCst) {
                    rounds.push(Vec::new());
                }
                pending.extend_from_slice(&buffer[..read]);
                while let Some((name, used)) = command_name(&pending) {
                    rounds.last_mut().unwrap().push(name);
                    pending.drain(..used);
                }
            }
            if to_server.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match from_server.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            // Marked before the client can see the answer, so its next write counts.
            answered.store(true, Ordering::SeqCst);
            if to_client.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(upstream, downstream);
}

/// The name of the first complete command in `bytes` (a RESP array of bulk strings, as
/// clients send) and how many bytes it takes; `None` while it is incomplete.
fn command_name(bytes: &[u8]) -> Option<(String, usize)> {
    fn line(bytes: &[u8], at: usize, prefix: u8) -> Option<(usize, usize)> {
        let end = at + bytes.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        assert_eq!(bytes[at], prefix, "a client command in RESP");
        let number = std::str::from_utf8(&bytes[at + 1..end])
            .ok()?
            .parse()
            .ok()?;
        Some((number, end + 2))
    }
    let (parts, mut at) = line(bytes, 0, b'*')?;
    let mut name = None;
    for _ in 0..parts {
        let (length, start) = line(bytes, at, b'$')?;
        let part = bytes.get(start..start + length)?;
        bytes.get(start + length + 1)?;
        name.get_or_insert_with(|| String::from_utf8_lossy(part).to_uppercase());
        at = start + length + 2;
    }
    Some((name?, at))
}

/// Calls per command since the server started, from `INFO commandstats`, asked on a
/// connection of its own (not through the relay).
async fn command_calls(redis_port: u16) -> BTreeMap<String, u64> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{redis_port}")).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.strip_prefix("calls=")?.split(',').next()?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// The commands run between two readings, `info` itself left out. Commands that scripts
/// run count too, so a script's `GET` shows here as a `get`.
fn ran(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, calls)| *calls > 0)
        .collect()
}

/// What one operation cost: the commands of each round trip as the relay saw them
/// (sorted: the order inside a pipeline does not matter), and the commands Redis ran.
struct Cost {
    rounds: Vec<Vec<String>>,
    ran: BTreeMap<String, u64>,
}

struct Bench {
    redis: RedisServer,
    relay: RoundTripCounter,
    gate: Gate,
    clock: ManualClock,
    inbox: tokio::sync::mpsc::UnboundedReceiver<otpgate::delivery::Message>,
}

const IP: &str = "198.51.100.20";

fn ip() -> Option<IpAddr> {
    Some(IP.parse().unwrap())
}

fn known() -> Identifier {
    Identifier::email("known@example.com").unwrap()
}

fn newcomer() -> Identifier {
    Identifier::email("newcomer@example.com").unwrap()
}

impl Bench {
    async fn start() -> Bench {
        let redis = RedisServer::start().await;
        let relay = RoundTripCounter::start(redis.port).await;
        let store = RedisStore::new(
            RedisSettings {
                url: relay.url(),
                namespace: "trips".into(),
                timeout: Duration::from_secs(2),
            },
            &ServerSecret::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap(),
        )
        .unwrap();
        let (sender, inbox) = capture();
        let clock = ManualClock::starting_now();
        let gate = Gate::builder()
            .clock(Arc::new(clock.clone()))
            .store(Arc::new(store))
            .directory(Arc::new(StaticDirectory::new().with_account(
                "default",
                known(),
                "known-1",
            )))
            .senders(email_and_sms(sender))
            .sms_guard(every_sms_rule())
            .build()
            .unwrap();
        Bench {
            redis,
            relay,
            gate,
            clock,
            inbox,
        }
    }

    /// Runs `operation` alone and returns what it cost.
    async fn cost<T>(&self, operation: impl Future<Output = T>) -> (T, Cost) {
        let rounds_before = self.relay.rounds().len();
        let before = command_calls(self.redis.port).await;
        let outcome = operation.await;
        let cost = Cost {
            rounds: self.relay.rounds()[rounds_before..]
                .iter()
                .map(|round| {
                    let mut round = round.clone();
                    round.sort();
                    round
                })
                .collect(),
            ran: ran(&before, &command_calls(self.redis.port).await),
        };
        (outcome, cost)
    }

    async fn send(&mut self, who: Identifier) -> (String, Cost) {
        let request = SendRequest {
            client_ip: ip(),
            ..send_to(who)
        };
        let (outcome, cost) = self.cost(self.gate.send(request)).await;
        outcome.unwrap();
        let code = next_message(&mut self.inbox).await.code.expose().to_owned();
        (code, cost)
    }

    async fn verify(&self, who: Identifier, code: &str) -> (Result<String, GateError>, Cost) {
        let request = VerifyRequest {
            client_ip: ip(),
            ..verify_for(who, code)
        };
        let (outcome, cost) = self.cost(self.gate.verify(request)).await;
        (outcome.map(|subject| subject.id), cost)
    }
}

/// The SMS guard with every rule on, its caps far above this test's traffic.
fn every_sms_rule() -> SmsGuard {
    SmsGuard::recommended()
        .with_country_cap(1_000)
        .with_prefix_cap(1_000)
        .with_hourly_messages(1_000)
        .with_daily_messages(10_000)
        .with_hourly_cost(100.0)
        .with_daily_cost(1_000.0)
}

/// A code that is not `code`, of the same shape.
fn wrong(code: &str) -> String {
    code.chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_and_a_verify_take_at_most_two_round_trips_each() {
    let mut bench = Bench::start().await;
    // Connecting (HELLO and the like) and loading the scripts are paid once per process:
    // a first sign-in before the count starts.
    let warm_up = Identifier::email("warm-up@example.com").unwrap();
    let (code, _) = bench.send(warm_up.clone()).await;
    bench.verify(warm_up, &code).await.0.unwrap();

    let check = |what: &str, cost: &Cost, expected: &[&[&str]]| {
        eprintln!("{what}: round trips {:?}, ran {:?}", cost.rounds, cost.ran);
        assert!(
            cost.rounds.len() <= 2,
            "{what} took {} round trips: {:?}",
            cost.rounds.len(),
            cost.rounds
        );
        assert_eq!(cost.rounds, expected, "{what}");
        // Redis agrees: it ran as many scripts as the relay saw sent.
        let scripts = expected.iter().flat_map(|round| round.iter());
        let sent = scripts.filter(|name| **name == "EVALSHA").count() as u64;
        assert_eq!(cost.ran.get("evalsha").copied(), Some(sent), "{what}");
    };
    // Round one: the per-IP counter (a script), the code record and the auto-created
    // account, read together. Round two: the code record's compare-and-set (a script).
    let first_round: &[&[&str]] = &[&["EVALSHA", "GET", "GET"], &["EVALSHA"]];

    let (code, cost) = bench.send(known()).await;
    check("send, known account", &cost, first_round);
    let (outcome, cost) = bench.verify(known(), &wrong(&code)).await;
    assert!(
        matches!(outcome, Err(GateError::InvalidCode)),
        "{outcome:?}"
    );
    check("verify, wrong code", &cost, first_round);
    let (outcome, cost) = bench.verify(known(), &code).await;
    assert_eq!(outcome.unwrap(), "known-1");
    // On a tenant that auto-creates, a first sign-in writes the account record beside the
    // compare-and-set before the directory is asked (it is asked only for an accepted
    // code); a directory account keeps its directory id, and the record is written once.
    check(
        "verify, right code, directory account's first sign-in",
        &cost,
        &[&["EVALSHA", "GET", "GET"], &["EVALSHA", "SET"]],
    );
    bench.clock.advance(Duration::from_secs(60));
    let (code, _) = bench.send(known()).await;
    let (outcome, cost) = bench.verify(known(), &code).await;
    assert_eq!(outcome.unwrap(), "known-1");
    check("verify, right code, known account", &cost, first_round);

    let (code, cost) = bench.send(newcomer()).await;
    check("send, new account", &cost, first_round);
    let (outcome, cost) = bench.verify(newcomer(), &wrong(&code)).await;
    assert!(
        matches!(outcome, Err(GateError::InvalidCode)),
        "{outcome:?}"
    );
    check("verify, wrong code, new account", &cost, first_round);
    let (outcome, cost) = bench.verify(newcomer(), &code).await;
    assert_eq!(outcome.unwrap(), "newcomer@example.com");
    // The account is created (SET NX) in the second round, beside the compare-and-set.
    check(
        "verify, right code, first sign-in (account created)",
        &cost,
        &[&["EVALSHA", "GET", "GET"], &["EVALSHA", "SET"]],
    );
    // Past the resend cooldown (not the per-IP window's end: the counter keeps counting).
    bench.clock.advance(Duration::from_secs(60));
    let (code, cost) = bench.send(newcomer()).await;
    check("send, auto-created account", &cost, first_round);
    let (outcome, cost) = bench.verify(newcomer(), &code).await;
    assert_eq!(outcome.unwrap(), "newcomer@example.com");
    check(
        "verify, right code, auto-created account",
        &cost,
        first_round,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_redis_forgot_are_loaded_again_within_the_pipelines() {
    let mut bench = Bench::start().await;
    let (code, _) = bench.send(known()).await;
    // What a restarted Redis knows: no scripts. The send's first round then meets
    // NOSCRIPT for the counter, its second for the compare-and-set.
    let flush = |port| async move {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut connection)
            .await
            .unwrap();
    };
    flush(bench.redis.port).await;
    let (outcome, cost) = bench.verify(known(), &wrong(&code)).await;
    assert!(
        matches!(outcome, Err(GateError::InvalidCode)),
        "{outcome:?}"
    );
    let loads = cost
        .rounds
        .iter()
        .flatten()
        .filter(|name| *name == "SCRIPT");
    assert!(loads.count() >= 1, "{:?}", cost.rounds);
    flush(bench.redis.port).await;
    let (outcome, _) = bench.verify(known(), &code).await;
    assert_eq!(outcome.unwrap(), "known-1", "the right code still works");
    // Loaded again, the next verify costs two round trips again.
    bench.clock.advance(Duration::from_secs(60));
    let (code, _) = bench.send(newcomer()).await;
    let (outcome, cost) = bench.verify(newcomer(), &code).await;
    assert_eq!(outcome.unwrap(), "newcomer@example.com");
    assert_eq!(cost.rounds.len(), 2, "{:?}", cost.rounds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_send_with_every_guard_rule_takes_two_round_trips() {
    let mut bench = Bench::start().await;
    let phone = || Identifier::phone("+14155552671").unwrap();
    // A first sign-in: connecting, loading the scripts, and a delivered message and a
    // verified code for the guard to count.
    let (code, _) = bench.send(phone()).await;
    bench.verify(phone(), &code).await.0.unwrap();
    bench.clock.advance(Duration::from_secs(60));

    let (code, cost) = bench.send(phone()).await;
    eprintln!(
        "SMS send: round trips {:?}, ran {:?}",
        cost.rounds, cost.ran
    );
    assert!(cost.rounds.len() <= 2, "{:?}", cost.rounds);
    // Round one: the per-IP counter, the code record and the auto-created account as for
    // an email; the first sign-in's counts (its delivered message under the prefix, the
    // country and both message budgets, its verified code: 5 hits; its cost is under one
    // step); then each count read, as the counter and its reads-only companion: the
    // prefix's sends and verified codes and the country's, this window and the last
    // (12), and the hour's and the day's messages and cost (8); and the prefix's
    // cool-down. Round two: the code record's compare-and-set.
    let mut first = vec!["EVALSHA"; 1 + 5 + 12 + 8];
    first.extend(["GET"; 3]);
    let expected: Vec<Vec<String>> = vec![
        first.into_iter().map(String::from).collect(),
        vec!["EVALSHA".into()],
    ];
    assert_eq!(cost.rounds, expected);
    assert_eq!(cost.ran.get("evalsha").copied(), Some(1 + 5 + 12 + 8 + 1));
    // A verify of an SMS code costs what an email's does: the guard only notes it.
    let (outcome, cost) = bench.verify(phone(), &code).await;
    assert_eq!(outcome.unwrap(), "+14155552671");
    assert_eq!(
        cost.rounds,
        [vec!["EVALSHA", "GET", "GET"], vec!["EVALSHA"]],
        "{:?}",
        cost.rounds
    );
}
