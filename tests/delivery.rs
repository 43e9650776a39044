//! Delivery against real servers: an SMTP server (aiosmtpd) and HTTP providers
//! (wiremock, and a webhook receiver), through the outbox's retries, timeouts and
//! failover.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{
    Form, StuckSender, capture, email_and_sms, free_port, next_message, send_to, serve, start_form,
};
use otpgate::delivery::{
    DeliveryError, DeliveryStats, Message, Outbox, OutboxPolicy, Rendered, Sender, Senders,
    SmtpSecurity, SmtpSender, SmtpSettings, TwilioFrom, TwilioSender, WebhookSender,
};
use otpgate::http::Front;
use otpgate::identifier::Identifier;
use otpgate::otp::CodeFormat;
use otpgate::{Gate, GateError, Tenant};
use wiremock::matchers::{body_string, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn message(to: Identifier) -> Message {
    Message {
        to,
        code: CodeFormat::default().normalize("123456"),
        link: None,
        tenant: "default".into(),
        expires_in: Duration::from_secs(300),
        content: Rendered {
            subject: "123456 is your Downtown Hub sign-in code".into(),
            text: "Your Downtown Hub sign-in code is 123456.".into(),
            html: "<p>Your code: <strong>123456</strong></p>".into(),
            from_name: Some("Downtown Hub".into()),
        },
    }
}

fn sms() -> Message {
    message(Identifier::phone("+14155552671").unwrap())
}

fn fast_policy() -> OutboxPolicy {
    OutboxPolicy {
        attempts: 3,
        backoff: Duration::from_millis(10),
        timeout: Duration::from_millis(500),
        ..OutboxPolicy::default()
    }
}

/// Waits (at most 5 s) until the outbox has settled `n` messages, sent or failed.
async fn settled(outbox: &Outbox, n: u64) -> DeliveryStats {
    for _ in 0..500 {
        let stats = outbox.stats();
        if stats.sent + stats.failed >= n {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("outbox did not settle: {:?}", outbox.stats());
}

/// Queues `message` on an outbox that sends SMS through `primary` (and `fallback` where
/// that fails) and waits until it is settled.
async fn through_sms_outbox(
    message: Message,
    primary: Arc<dyn Sender>,
    fallback: Option<Arc<dyn Sender>>,
) -> DeliveryStats {
    let senders = Senders {
        sms: Some(primary),
        sms_fallback: fallback,
        ..Senders::default()
    };
    let outbox = Outbox::new(senders, fast_policy());
    outbox.enqueue(message).unwrap();
    settled(&outbox, 1).await
}

fn twilio(server: &MockServer) -> Arc<TwilioSender> {
    Arc::new(
        TwilioSender::new(
            &server.uri(),
            "AC0123456789",
            "auth-token",
            TwilioFrom::Number("+15005550006".into()),
            Duration::from_secs(2),
        )
        .unwrap(),
    )
}

const TWILIO_PATH: &str = "/2010-04-01/Accounts/AC0123456789/Messages.json";

#[tokio::test]
async fn twilio_gets_the_exact_messages_api_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TWILIO_PATH))
        // Basic base64("AC0123456789:auth-token")
        .and(header(
            "authorization",
            "Basic QUMwMTIzNDU2Nzg5OmF1dGgtdG9rZW4=",
        ))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string(
            "To=%2B14155552671&Body=Your+Downtown+Hub+sign-in+code+is+123456.&From=%2B15005550006",
        ))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"sid": "SM1", "status": "queued"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    twilio(&server).send(&sms()).await.unwrap();

    // With a messaging service instead of a number.
    let service = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TWILIO_PATH))
        .and(body_string("To=%2B14155552671&Body=Your+Downtown+Hub+sign-in+code+is+123456.&MessagingServiceSid=MG42"))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&service)
        .await;
    let sender = TwilioSender::new(
        &service.uri(),
        "AC0123456789",
        "auth-token",
        TwilioFrom::MessagingService("MG42".into()),
        Duration::from_secs(2),
    )
    .unwrap();
    sender.send(&sms()).await.unwrap();
}

#[tokio::test]
async fn a_provider_failing_twice_then_succeeding_delivers_exactly_one_sms() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TWILIO_PATH))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(TWILIO_PATH))
        .respond_with(ResponseTemplate::new(201))
        .with_priority(2)
        .expect(1)
        .mount(&server)
        .await;
    let stats = through_sms_outbox(sms(), twilio(&server), None).await;
    assert_eq!(
        stats,
        DeliveryStats {
            sent: 1,
            retried: 2,
            ..DeliveryStats::default()
        }
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_primary_that_is_down_fails_over_to_the_secondary() {
    // Nothing listens on the primary's port.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let primary = Arc::new(
        TwilioSender::new(
            &dead,
            "AC0123456789",
            "auth-token",
            TwilioFrom::Number("+15005550006".into()),
            Duration::from_secs(1),
        )
        .unwrap(),
    );
    let secondary = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TWILIO_PATH))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&secondary)
        .await;
    let stats = through_sms_outbox(sms(), primary, Some(twilio(&secondary))).await;
    assert_eq!(
        stats,
        DeliveryStats {
            sent: 1,
            retried: 2,
            failed_over: 1,
            ..DeliveryStats::default()
        }
    );
}

#[tokio::test]
async fn a_rejected_message_is_not_retried_and_a_slow_provider_times_out() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(serde_json::json!({"code": 21211, "message": "Invalid 'To'"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        through_sms_outbox(sms(), twilio(&server), None).await,
        DeliveryStats {
            failed: 1,
            ..DeliveryStats::default()
        }
    );

    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(3)))
        .mount(&slow)
        .await;
    // Three tries of at most 500 ms each, then given up.
    let stats = through_sms_outbox(sms(), twilio(&slow), None).await;
    assert_eq!((stats.failed, stats.retried), (1, 2));
}

#[tokio::test]
async fn a_full_outbox_answers_503_and_a_failing_provider_changes_no_answer() {
    let stuck = StuckSender::default();
    let gate = Gate::builder()
        .senders(email_and_sms(Arc::new(stuck.clone())))
        .outbox_policy(OutboxPolicy {
            capacity: 1,
            concurrency: 1,
            timeout: Duration::from_secs(60),
            ..OutboxPolicy::default()
        })
        .tenant(Tenant::new("default"))
        .build()
        .unwrap();
    let mut answers = Vec::new();
    for i in 0..8 {
        let user = Identifier::email(&format!("user{i}@example.com")).unwrap();
        let result = gate.send(send_to(user)).await;
        answers.push(result);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first sends are answered normally although their delivery never finishes...
    assert!(answers[0].is_ok());
    // ...and once the queue is full, sends are refused with 503, never dropped silently.
    let refused = answers
        .iter()
        .position(Result::is_err)
        .expect("the outbox filled up");
    assert!(refused <= 3, "refused only at send {refused}");
    match &answers[refused] {
        Err(error @ GateError::DeliveryUnavailable) => {
            assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE)
        }
        other => panic!("expected 503, got {other:?}"),
    }
    // The refusal changed nothing: no record, so no cooldown stands in the way of a retry.
    let refused_key = otpgate::store::keys::code_record(
        "default",
        &Identifier::email(&format!("user{refused}@example.com")).unwrap(),
    );
    assert_eq!(
        gate.store().peek_code_state(&refused_key).await.unwrap(),
        None
    );
    assert!(stuck.0.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn webhook_bodies_are_signed_with_the_secret() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            s.lock().unwrap().push((headers, body));
            async { StatusCode::OK }
        }),
    );
    let addr = serve(app).await;
    let sender = WebhookSender::new(format!("http://{addr}/hook").parse().unwrap())
        .signing_secret(b"webhook-secret");
    sender.send(&sms()).await.unwrap();
    let (headers, body) = seen.lock().unwrap()[0].clone();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"webhook-secret");
    let expected: String = aws_lc_rs::hmac::sign(&key, &body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        headers["x-otpgate-signature"],
        format!("sha256={expected}").as_str()
    );
    let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        payload["message"],
        "Your Downtown Hub sign-in code is 123456."
    );
    assert_eq!(payload["code"], "123456");
}

/// An SMTP server (tests/support/smtp_server.py on aiosmtpd) on a free port.
struct SmtpServer {
    child: Child,
    port: u16,
    outdir: tempfile::TempDir,
    _certs: tempfile::TempDir,
    ca_pem: Vec<u8>,
}

impl SmtpServer {
    fn start(mode: &str) -> SmtpServer {
        let certs = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(certs.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(certs.path().join("key.pem"), key.serialize_pem()).unwrap();
        let outdir = tempfile::tempdir().unwrap();
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(outdir.path())
            .arg(mode)
            .arg(certs.path().join("cert.pem"))
            .arg(certs.path().join("key.pem"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (make test installs aiosmtpd)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "READY",
            "the SMTP server did not start; is aiosmtpd installed?"
        );
        SmtpServer {
            child,
            port,
            outdir,
            _certs: certs,
            ca_pem: cert.pem().into_bytes(),
        }
    }

    async fn next_mail(&self) -> String {
        for _ in 0..500 {
            let mut mails: Vec<_> = std::fs::read_dir(self.outdir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "eml"))
                .collect();
            mails.sort();
            if let Some(first) = mails.first() {
                let text = std::fs::read_to_string(first).unwrap();
                std::fs::remove_file(first).unwrap();
                return text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no mail arrived within 5 s");
    }

    fn settings(&self, security: SmtpSecurity) -> SmtpSettings {
        SmtpSettings {
            host: "localhost".into(),
            port: Some(self.port),
            security,
            credentials: Some(("mailer".into(), "s3cret".into())),
            from: "Otpgate <no-reply@otpgate.test>".parse().unwrap(),
            timeout: Duration::from_secs(5),
            root_certificates: vec![self.ca_pem.clone()],
            pool_size: 2,
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_mail(mail: &str, tls: bool) {
    assert!(
        mail.contains("X-Envelope-From: no-reply@otpgate.test"),
        "{mail}"
    );
    assert!(mail.contains("X-Envelope-To: alice@example.com"), "{mail}");
    assert!(mail.contains("X-Authenticated: True"), "{mail}");
    assert!(
        mail.contains(&format!("X-TLS: {}", if tls { "True" } else { "False" })),
        "{mail}"
    );
    // The tenant's sender name replaces the configured display name.
    assert!(
        mail.contains("From: \"Downtown Hub\" <no-reply@otpgate.test>"),
        "{mail}"
    );
    assert!(mail.contains("To: alice@example.com"), "{mail}");
    assert!(
        mail.contains("Subject: 123456 is your Downtown Hub sign-in code"),
        "{mail}"
    );
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(mail.contains("Content-Type: text/plain"), "{mail}");
    assert!(mail.contains("Content-Type: text/html"), "{mail}");
    assert!(
        mail.contains("Your Downtown Hub sign-in code is 123456."),
        "{mail}"
    );
    assert!(mail.contains("<strong>123456</strong>"), "{mail}");
}

#[tokio::test]
async fn smtp_delivers_text_and_html_over_plain_starttls_and_tls() {
    for (mode, security, tls) in [
        ("plain", SmtpSecurity::None, false),
        ("starttls", SmtpSecurity::StartTls, true),
        ("tls", SmtpSecurity::Tls, true),
    ] {
        let server = SmtpServer::start(mode);
        let sender = SmtpSender::new(server.settings(security)).unwrap();
        sender
            .send(&message(Identifier::email("alice@example.com").unwrap()))
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_mail(&server.next_mail().await, tls);
    }
}

#[tokio::test]
async fn the_request_locale_and_the_tenant_choose_the_template() {
    use otpgate::delivery::{Template, TemplateScope, Templates};
    use otpgate::http::HttpSettings;
    let (sender, mut inbox) = capture();
    let templates = Templates::new(vec![(
        TemplateScope {
            tenant: None,
            channel: Some(otpgate::identifier::Channel::Email),
            locale: Some("fr".into()),
        },
        Template {
            subject: Some("Votre code {{ tenant_name }} : {{ code }}".into()),
            text: Some("Votre code est {{ code }} ({{ minutes }} min).".into()),
            ..Template::default()
        },
    )])
    .unwrap();
    let gate = Front::new(
        Gate::builder()
            .senders(email_and_sms(sender))
            .templates(templates)
            .tenant(Tenant {
                display_name: Some("Acme".into()),
                ..Tenant::new("default")
            })
            .build()
            .unwrap(),
        HttpSettings::default(),
    );
    let (base, _) = start_form(Form::Tower, gate).await;
    let client = reqwest::Client::new();
    let send = |email: &str, language: Option<&str>, body_locale: Option<&str>| {
        let mut body = serde_json::json!({"email": email});
        if let Some(locale) = body_locale {
            body["locale"] = locale.into();
        }
        let mut request = client.post(format!("{base}/auth/otp/send")).json(&body);
        if let Some(language) = language {
            request = request.header("accept-language", language);
        }
        request.send()
    };
    send("a@example.com", Some("fr-CA,fr;q=0.9,en;q=0.5"), None)
        .await
        .unwrap();
    let french = next_message(&mut inbox).await;
    let code = french.code.expose().to_owned();
    assert_eq!(french.content.subject, format!("Votre code Acme : {code}"));
    assert_eq!(
        french.content.text,
        format!("Votre code est {code} (5 min).")
    );
    assert!(
        french.content.html.contains(&code),
        "html falls back to the default"
    );
    assert_eq!(french.content.from_name.as_deref(), Some("Acme"));

    send("b@example.com", Some("fr"), Some("en")).await.unwrap();
    let english = next_message(&mut inbox).await;
    assert!(
        english
            .content
            .subject
            .ends_with("is your Acme sign-in code"),
        "the body's locale wins"
    );
}

/// Everything logged while it is the thread's subscriber (a current-thread runtime runs the
/// outbox's tasks on this thread too).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    /// Captures this thread's logs until the result is dropped.
    fn capture(&self) -> (tracing::subscriber::DefaultGuard, tracing::Dispatch) {
        let subscriber = |logs: Logs| {
            tracing_subscriber::fmt()
                .with_writer(logs)
                .with_ansi(false)
                .with_max_level(tracing::Level::TRACE)
                .finish()
        };
        let guard = tracing::subscriber::set_default(subscriber(self.clone()));
        // tracing caches, process-wide, whether each log line is wanted. With a single
        // subscriber registered it asks the default of whichever thread meets the line
        // first, which for the tests on other threads is none; with two registered it
        // asks both, so this thread's subscriber gets the outbox's lines.
        let second = tracing::Dispatch::new(subscriber(Logs::default()));
        tracing::callsite::rebuild_interest_cache();
        (guard, second)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// `text` names none of `spellings` (in any case) and carries every one of `keep`.
fn assert_scrubbed(text: &str, spellings: &[&str], keep: &[&str]) {
    let lower = text.to_lowercase();
    for spelling in spellings {
        assert!(
            !lower.contains(&spelling.to_lowercase()),
            "{spelling:?} in {text}"
        );
    }
    for kept in keep {
        assert!(text.contains(kept), "{kept:?} missing from {text}");
    }
}

const PHONE_SPELLINGS: &[&str] = &["4155552699", "415 555 2699", "415-555-2699", "555-2699"];

#[tokio::test]
async fn a_twilio_21211_names_no_number_in_errors_or_logs() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TWILIO_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "code": 21211,
            "message": "The 'To' number +14155552699 is not a valid phone number.",
            "more_info": "https://www.twilio.com/docs/errors/21211",
            "status": 400
        })))
        .mount(&server)
        .await;
    let to = Identifier::phone("+14155552699").unwrap();

    let error = twilio(&server)
        .send(&message(to.clone()))
        .await
        .unwrap_err();
    assert!(matches!(error, DeliveryError::Rejected(_)), "{error:?}");
    for text in [error.to_string(), format!("{error:?}")] {
        assert_scrubbed(&text, PHONE_SPELLINGS, &["21211", "400", "+1******2699"]);
    }

    // Through the outbox, which logs why a delivery was rejected.
    let stats = through_sms_outbox(message(to), twilio(&server), None).await;
    assert_eq!(stats.failed, 1);
    let logged = logs.text();
    assert!(logged.contains("delivery rejected"), "{logged}");
    assert_scrubbed(&logged, PHONE_SPELLINGS, &["21211"]);
}

#[tokio::test]
async fn an_smtp_550_names_no_address_in_errors_or_logs() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let server = SmtpServer::start("plain");
    let sender = Arc::new(SmtpSender::new(server.settings(SmtpSecurity::None)).unwrap());
    let spellings = ["hidden.person", "idden.person", "hidden%2Eperson"];
    for typed in ["hidden.person@example.com", "Hidden.Person@EXAMPLE.com"] {
        let to = Identifier::email(typed).unwrap();
        let error = sender.send(&message(to)).await.unwrap_err();
        assert!(matches!(error, DeliveryError::Rejected(_)), "{error:?}");
        for text in [error.to_string(), format!("{error:?}")] {
            assert_scrubbed(&text, &spellings, &["550", "5.1.1", "h***@example.com"]);
        }
    }

    let outbox = Outbox::new(
        Senders {
            email: Some(sender),
            ..Senders::default()
        },
        fast_policy(),
    );
    let to = Identifier::email("hidden.person@example.com").unwrap();
    outbox.enqueue(message(to)).unwrap();
    assert_eq!(settled(&outbox, 1).await.failed, 1);
    let logged = logs.text();
    assert!(logged.contains("delivery rejected"), "{logged}");
    assert_scrubbed(&logged, &spellings, &["550"]);
}

#[tokio::test]
async fn a_webhook_answer_that_echoes_the_message_is_scrubbed() {
    let app = Router::new().route(
        "/hook",
        post(|| async {
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "refused: to=hidden.person%40example.com (Hidden.Person@Example.com),\r\n\
                 code 123456 not sent",
            )
        }),
    );
    let addr = serve(app).await;
    let sender = WebhookSender::new(format!("http://{addr}/hook").parse().unwrap());
    let to = Identifier::email("hidden.person@example.com").unwrap();
    let error = sender.send(&message(to)).await.unwrap_err();
    assert!(matches!(error, DeliveryError::Rejected(_)), "{error:?}");
    for text in [error.to_string(), format!("{error:?}")] {
        assert_scrubbed(
            &text,
            &["hidden.person", "idden", "123456", "\r", "\n"],
            &["422", "refused", "[code] not sent"],
        );
    }
}
