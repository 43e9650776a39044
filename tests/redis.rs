//! Several gate instances on one real Redis (a redis-server started on a free loopback
//! port): the store's conformance, what Redis holds, codes and sessions crossing
//! instances, and what happens when Redis goes away and comes back.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    Form, Inbox, RedisServer, RunningGate, WebhookReceiver, both_forms, capture, email_and_sms,
    get_with_token, next_message, post_json, protecting_api, send_code, send_to, sign_in,
    start_form, verify_code, verify_for, webhook_delivery_toml,
};
use otpgate::delivery::Message;
use otpgate::http::Front;
use otpgate::identifier::Identifier;
use otpgate::otp::ServerSecret;
use otpgate::store::{RedisSettings, RedisStore, SetMode, conformance};
use otpgate::token::SigningKey;
use otpgate::{Gate, GateError, RevocationFallback, SendRequest, VerifyRequest};

/// How many times Redis ran `command` (lower case), from `INFO commandstats`.
async fn calls(url: &str, command: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const TOKEN_SECRET: &[u8] = b"fedcba9876543210fedcba9876543210";

fn secret() -> ServerSecret {
    ServerSecret::new(SECRET.to_vec()).unwrap()
}

fn store(url: &str, namespace: &str, timeout: Duration) -> RedisStore {
    RedisStore::new(
        RedisSettings {
            url: url.into(),
            namespace: namespace.into(),
            timeout,
        },
        &secret(),
    )
    .unwrap()
}

/// One gate instance: its own Redis connection, the secrets every instance shares.
fn instance(
    url: &str,
    namespace: &str,
    fallback: RevocationFallback,
) -> (Gate, UnboundedReceiver<Message>) {
    let (sender, inbox) = capture();
    let gate = Gate::builder()
        .store(Arc::new(store(url, namespace, Duration::from_millis(300))))
        .secret(secret())
        .signing_key(SigningKey::from_hmac_secret(TOKEN_SECRET).unwrap())
        .senders(email_and_sms(sender))
        .revocation_fallback(fallback)
        .build()
        .unwrap();
    (gate, inbox)
}

both_forms!(redis_goes_away_and_comes_back);

fn alice() -> Identifier {
    Identifier::email("alice@example.com").unwrap()
}

fn send_alice(ip: Option<IpAddr>) -> SendRequest<'static> {
    SendRequest {
        client_ip: ip,
        ..send_to(alice())
    }
}

fn verify_alice(code: &str) -> VerifyRequest<'_> {
    verify_for(alice(), code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_passes_the_conformance_suite_alone_and_shared() {
    let server = RedisServer::start().await;
    let url = server.url();
    let fresh = AtomicUsize::new(0);
    let namespace = || format!("conformance{}", fresh.fetch_add(1, Ordering::SeqCst));
    let timeout = Duration::from_secs(2);
    conformance::run_all(|| store(&url, &namespace(), timeout)).await;
    // Two handles with their own connections on one namespace: two instances.
    conformance::run_shared(|| {
        let shared = namespace();
        (store(&url, &shared, timeout), store(&url, &shared, timeout))
    })
    .await;
}

#[tokio::test]
async fn redis_holds_no_identifier_address_or_code() {
    let server = RedisServer::start().await;
    let (gate, mut inbox) = instance(&server.url(), "private", RevocationFallback::Allow);
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    gate.send(send_alice(Some(ip))).await.unwrap();
    let code = next_message(&mut inbox).await.code.expose().to_owned();
    let subject = gate.verify(verify_alice(&code)).await.unwrap();
    let session = gate.start_session(&subject).unwrap();
    gate.refresh(&session.refresh.unwrap().token).await.unwrap();
    gate.revoke_access(&session.access.claims).await.unwrap();
    // What a second-factor login keeps while it waits: the phone number to text.
    gate.store()
        .set_value(
            "baanx-user:default:u-42",
            "+15005550006",
            Duration::from_secs(60),
            SetMode::Always,
        )
        .await
        .unwrap();
    gate.send(SendRequest {
        identifier: Identifier::phone("+14155550199").unwrap(),
        ..send_alice(Some(ip))
    })
    .await
    .unwrap();
    let pending = next_message(&mut inbox).await.code.expose().to_owned();

    let client = redis::Client::open(server.url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(keys.len() >= 6, "records, counters and values: {keys:?}");
    let mut everything = keys.join("\n").into_bytes();
    for key in &keys {
        assert!(key.starts_with("private:"), "namespaced: {key}");
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut redis)
            .await
            .unwrap();
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has a TTL ({ttl})");
        match kind.as_str() {
            "string" => {
                let value: Vec<u8> = redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                everything.extend(value);
            }
            "hash" => {
                let fields: Vec<Vec<u8>> = redis::cmd("HGETALL")
                    .arg(key)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                fields.into_iter().for_each(|f| everything.extend(f));
            }
            other => panic!("unexpected type {other} at {key}"),
        }
    }
    let haystack = String::from_utf8_lossy(&everything);
    for secret in [
        "alice",
        "example.com",
        "203.0.113.7",
        "5005550006",
        "4155550199",
        "u-42",
        code.as_str(),
        pending.as_str(),
    ] {
        assert!(!haystack.contains(secret), "{secret} is readable in Redis");
    }
    // ...and the gate still reads what it wrote.
    assert_eq!(
        gate.store()
            .get_value("baanx-user:default:u-42")
            .await
            .unwrap()
            .as_deref(),
        Some("+15005550006")
    );
}

#[tokio::test]
async fn codes_sessions_and_revocations_cross_instances() {
    let server = RedisServer::start().await;
    let (a, mut inbox_a) = instance(&server.url(), "site", RevocationFallback::Allow);
    let (b, _) = instance(&server.url(), "site", RevocationFallback::Allow);

    a.send(send_alice(None)).await.unwrap();
    let code = next_message(&mut inbox_a).await.code.expose().to_owned();
    // The cooldown is shared: B knows A just sent.
    assert!(matches!(
        b.send(send_alice(None)).await,
        Err(GateError::RateLimited { .. })
    ));
    let subject = b.verify(verify_alice(&code)).await.unwrap();
    assert_eq!(subject.email.as_deref(), Some("alice@example.com"));
    // Single use across instances.
    assert!(a.verify(verify_alice(&code)).await.is_err());

    let session = b.start_session(&subject).unwrap();
    assert!(a.authenticate(&session.access.token).await.is_ok());
    // A logout on B is seen by A within one revocation poll.
    b.revoke_access(&session.access.claims).await.unwrap();
    tokio::time::sleep(otpgate::DEFAULT_REVOCATION_POLL).await;
    assert!(matches!(
        a.authenticate(&session.access.token).await,
        Err(GateError::Unauthorized)
    ));

    // A refresh token rotates on A; its reuse on B revokes the family everywhere.
    let first = session.refresh.unwrap().token;
    let rotated = a.refresh(&first).await.unwrap().refresh.unwrap().token;
    assert!(b.refresh(&first).await.is_err(), "reuse is refused");
    assert!(
        a.refresh(&rotated).await.is_err(),
        "and the whole family with it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_1000_verifies_split_across_two_instances_wins() {
    let server = RedisServer::start().await;
    let (a, mut inbox) = instance(&server.url(), "race", RevocationFallback::Allow);
    let (b, _) = instance(&server.url(), "race", RevocationFallback::Allow);
    a.send(send_alice(None)).await.unwrap();
    let code = next_message(&mut inbox).await.code.expose().to_owned();
    let accepted = common::accepted_of_1000_split_verifies(&a, &b, &alice(), &code).await;
    assert_eq!(accepted, 1);
}

/// A token seen before costs no Redis command per request: only the revocation poll
/// reads Redis, once per interval (1 s by default) whatever the request rate; and a
/// logout on another gate is honoured within that interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_requests_read_redis_once_per_poll_and_logouts_cross_within_it() {
    let server = RedisServer::start().await;
    let (a, _) = instance(&server.url(), "poll", RevocationFallback::Deny);
    let (b, _) = instance(&server.url(), "poll", RevocationFallback::Deny);
    let session = a
        .start_session(&otpgate::token::Subject {
            id: "u-1".into(),
            email: Some("alice@example.com".into()),
            phone: None,
            tenant: "default".into(),
        })
        .unwrap();
    let token = &session.access.token;
    b.authenticate(token).await.unwrap();
    let started = Instant::now();
    let before = calls(&server.url(), "get").await;
    for _ in 0..2000 {
        b.authenticate(token).await.unwrap();
    }
    let polls = calls(&server.url(), "get").await - before;
    // At most one poll per started interval while the loop ran (plus the one under way).
    let intervals = started.elapsed().as_secs() + 2;
    assert!(
        polls <= intervals,
        "{polls} reads for 2000 requests in {:?}",
        started.elapsed()
    );

    let identity = a.authenticate(token).await.unwrap();
    a.revoke_access(&identity.claims).await.unwrap();
    tokio::time::sleep(otpgate::DEFAULT_REVOCATION_POLL).await;
    assert!(matches!(
        b.authenticate(token).await,
        Err(GateError::Unauthorized)
    ));
}

/// Kills Redis under a running gate, then brings it back. OTP endpoints fail closed with
/// a quick 503 JSON; a valid token keeps working or not as `revocation_fallback` says;
/// after the restart the same gate serves again.
async fn redis_goes_away_and_comes_back(form: Form) {
    let mut server = RedisServer::start().await;
    let (gate, mut inbox) = instance(&server.url(), "faults", RevocationFallback::Allow);
    let (strict, _) = instance(&server.url(), "faults", RevocationFallback::Deny);
    let (base, calls) = start_form(form, Front::new(gate.clone(), protecting_api())).await;
    let (strict_base, _) = start_form(form, Front::new(strict, protecting_api())).await;
    let client = reqwest::Client::new();
    let me = async |base: &str, token: &str| {
        get_with_token(&client, format!("{base}/api/me"), token)
            .await
            .status()
    };
    let token = sign_in(&client, &base, &mut inbox, "alice@example.com")
        .await
        .access_token;

    server.kill();
    for (path, body) in [
        ("/auth/otp/send", json!({"email": "bob@example.com"})),
        (
            "/auth/otp/verify",
            json!({"email": "bob@example.com", "code": "123456"}),
        ),
    ] {
        let started = Instant::now();
        let answer = post_json(&client, format!("{base}{path}"), body).await;
        let took = started.elapsed();
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(answer.headers()["retry-after"], "1");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable", "{path}");
        // Bounded by the store timeout (300 ms) and the reconnection attempt, not by TCP's.
        assert!(took < Duration::from_secs(3), "{path} took {took:?}");
    }
    assert!(
        inbox.try_recv().is_err(),
        "no code is sent while Redis is down"
    );
    // The token's signature and expiry need no store: with "allow" it passes...
    assert_eq!(me(&base, &token).await, StatusCode::OK);
    assert_eq!(calls.count(), 1);
    // ...with "deny" it waits for the revocation check: 503.
    assert_eq!(
        me(&strict_base, &token).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // A logout cannot be made while Redis is down, and neither gate says it was.
    for base in [&base, &strict_base] {
        let logout = client
            .post(format!("{base}/auth/logout"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(logout.status(), StatusCode::SERVICE_UNAVAILABLE, "{base}");
    }

    server.restart().await;
    // The same gate process reconnects by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = send_code(&client, &base, "carol@example.com")
            .await
            .status();
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "no recovery within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let code = inbox.next_code().await;
    let verified = verify_code(&client, &base, "carol@example.com", &code).await;
    assert_eq!(verified.status(), StatusCode::OK);
    // The strict gate is back too, within one revocation poll of the store's return.
    let deadline = Instant::now() + otpgate::DEFAULT_REVOCATION_POLL + Duration::from_secs(5);
    while me(&strict_base, &token).await != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "the strict gate did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_codes_survive_a_gate_restart() {
    let server = RedisServer::start().await;
    let hook = WebhookReceiver::start().await;
    let app = common::serve(common::echo_app(common::AppCalls::default())).await;
    let config = format!(
        r#"
[server]
upstream = "http://{app}"
threads = 1
[store]
backend = "redis"
redis_url = "{url}"
[otp]
secret = "{secret}"
[token]
algorithm = "HS256"
secret = "{token_secret}"
[[protect]]
prefix = "/api/"
{delivery}"#,
        url = server.url(),
        secret = std::str::from_utf8(SECRET).unwrap(),
        token_secret = std::str::from_utf8(TOKEN_SECRET).unwrap(),
        delivery = webhook_delivery_toml(&hook.url),
    );
    let client = reqwest::Client::new();
    let first = RunningGate::start(&config).await;
    let sent = send_code(&client, &first.base, "alice@example.com").await;
    assert_eq!(sent.status(), StatusCode::OK);
    let code = hook.next_code().await;
    // The gate dies (SIGKILL, no goodbye) and a new process takes over.
    drop(first);

    let second = RunningGate::start(&config).await;
    let verified = verify_code(&client, &second.base, "alice@example.com", &code).await;
    assert_eq!(verified.status(), StatusCode::OK);
    let token = verified.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = get_with_token(&client, format!("{}/api/me", second.base), &token).await;
    assert_eq!(me.status(), StatusCode::OK);
}
