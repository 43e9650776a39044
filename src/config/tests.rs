//! The config file, read as users write it: every mistake named by key and line.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.toml", Path::new("."))
}

#[test]
fn the_embedded_default_parses() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::embedded_default(dir.path()).unwrap();
    #[cfg(feature = "proxy")]
    {
        assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.proxy.upstream.addr.to_string(), "127.0.0.1:3000");
    }
    config.build().unwrap();
}

#[test]
fn an_empty_file_is_a_development_gate() {
    let gate = parse("").unwrap().build().unwrap();
    assert_eq!(gate.gate().policy().max_attempts, 5);
}

#[test]
fn unknown_keys_name_the_key_and_line() {
    let error = parse("[otp]\nlength = 6\nmax_atempts = 3\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("max_atempts"), "{error}");
    assert!(error.contains("line 3"), "{error}");
}

#[test]
fn bad_values_name_the_key_and_line() {
    let error = parse("[otp]\n\nlength = 12\n").unwrap_err().to_string();
    assert!(error.contains("test.toml:3: `otp.length`"), "{error}");
    let error = parse("[otp]\nttl = \"five minutes\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("line 2") && error.contains("invalid duration"),
        "{error}"
    );
    let error = parse("[otp]\nsends_per_ip = \"30 per 5m\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("line 2") && error.contains("invalid rate"),
        "{error}"
    );
    let error = parse("[otp]\nfailure_budget = 1000\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains(":2: `otp.failure_budget`"), "{error}");
    let error = parse("[token]\nalgorithm = \"none\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains(":2: `token.algorithm`"), "{error}");
    let error = parse("[token]\nprivate_key = \"missing.pem\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(":2: `token.private_key`") && error.contains("otpgate keygen"),
        "{error}"
    );
    let error = parse("[delivery.email]\nkind = \"webhook\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("delivery.email.url"), "{error}");
    let error = parse("[identity]\nsubject_header = \"bad header\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains(":2: `identity.subject_header`"), "{error}");
    let error = parse("[[endpoints]]\ndialect = \"soap\"\nprefix = \"/x\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains(":2: `endpoints.dialect`"), "{error}");
}

#[test]
fn providers_templates_and_outbox_settings_parse() {
    let text = r#"
[delivery]
attempts = 4
retry_backoff = "100ms"
timeout = "3s"

[delivery.email]
kind = "smtp"
host = "smtp.example.com"
port = 587
security = "starttls"
username = "mailer"
password = "secret"
from = "Acme <no-reply@acme.example>"

[delivery.email.fallback]
kind = "webhook"
url = "http://127.0.0.1:9000/mail"

[delivery.sms]
kind = "twilio"
account_sid = "AC123"
auth_token = "token"
messaging_service_sid = "MG456"

[[templates]]
channel = "email"
locale = "FR"
subject = "Votre code : {{ code }}"

[[templates]]
tenant = "default"
from_name = "Acme"
"#;
    parse(text).unwrap().build().unwrap();
}

#[cfg(feature = "redis")]
const SHARED: &str = "[otp]\nsecret = \"0123456789abcdef0123456789abcdef\"\n[token]\nalgorithm = \"HS256\"\nsecret = \"fedcba9876543210fedcba9876543210\"\n";

#[cfg(feature = "redis")]
#[test]
fn a_redis_store_needs_what_instances_share() {
    for (text, key) in [
        (
            "[store]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n".to_owned(),
            "otp.secret",
        ),
        (
            "[store]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n[otp]\nsecret = \"0123456789abcdef0123456789abcdef\"\n".to_owned(),
            "token.private_key",
        ),
        (format!("[store]\nbackend = \"redis\"\n{SHARED}"), "store.redis_url"),
        (
            format!("[store]\nbackend = \"redis\"\nredis_url = \"http://x\"\n{SHARED}"),
            "store.redis_url",
        ),
        (
            format!("[store]\nbackend = \"redis\"\nredis_url = \"rediss://x#insecure\"\n{SHARED}"),
            "store.redis_url",
        ),
        (
            format!("[store]\nbackend = \"redis\"\nredis_url = \"redis://x\"\nnamespace = \"a b\"\n{SHARED}"),
            "store.namespace",
        ),
    ] {
        let error = parse(&text).map(|_| ()).unwrap_err().to_string();
        assert!(error.contains(&format!("`{key}`")), "{key}: {error}");
        assert!(error.contains("test.toml:"), "names the line: {error}");
    }
    assert!(
        parse("[store]\nrevocation_fallback = \"sometimes\"\n").is_err(),
        "an unknown fallback is refused"
    );
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_redis_store_is_configured_without_connecting() {
    // Port 9 (discard) has no Redis: loading must not connect, and the first use fails
    // with a 503-class error within the configured timeout.
    let text = format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:9\"\ntimeout = \"200ms\"\nrevocation_fallback = \"deny\"\n{SHARED}"
    );
    let gate = parse(&text).unwrap().build().unwrap();
    let error = gate
        .gate()
        .send(crate::SendRequest {
            tenant: None,
            identifier: crate::identifier::Identifier::email("a@example.com").unwrap(),
            client_ip: None,
            locale: None,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), "temporarily_unavailable");
}

#[test]
fn provider_mistakes_name_the_key() {
    for (text, key) in [
        (
            "[delivery.email]\nkind = \"smtp\"\nfrom = \"a@b.example\"\n",
            "delivery.email.host",
        ),
        (
            "[delivery.email]\nkind = \"smtp\"\nhost = \"h\"\nfrom = \"not an address\"\n",
            "delivery.email.from",
        ),
        (
            "[delivery.email]\nkind = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.example\"\nusername = \"u\"\n",
            "delivery.email.username",
        ),
        (
            "[delivery.sms]\nkind = \"twilio\"\nauth_token = \"t\"\nfrom = \"+15005550006\"\n",
            "delivery.sms.account_sid",
        ),
        (
            "[delivery.sms]\nkind = \"twilio\"\naccount_sid = \"a\"\nauth_token = \"t\"\n",
            "delivery.sms.from",
        ),
        (
            "[delivery.sms]\nkind = \"console\"\n[delivery.sms.fallback]\nkind = \"webhook\"\n",
            "delivery.sms.fallback.url",
        ),
        ("[delivery]\nattempts = 0\n", "delivery.attempts"),
        ("[[templates]]\nsubject = \"{{ code \"\n", "templates"),
    ] {
        let error = parse(text).map(|_| ()).unwrap_err().to_string();
        assert!(error.contains(&format!("`{key}`")), "{key}: {error}");
    }
    let error = parse("[delivery.email]\nkind = \"carrier-pigeon\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("carrier-pigeon") && error.contains("line 2"),
        "{error}"
    );
}

#[test]
fn tenants_need_a_sender_for_each_channel() {
    let text = "[delivery.email]\nkind = \"console\"\n[[tenants]]\nid = \"default\"\nchannels = [\"sms\"]\n";
    let error = parse(text).unwrap_err().to_string();
    assert!(
        error.contains("test.toml:5: `tenants.channels`") && error.contains("sms"),
        "{error}"
    );
}

#[cfg(feature = "proxy")]
#[test]
fn connection_bounds_default() {
    use std::time::Duration;
    let proxy = parse("").unwrap().proxy;
    assert_eq!(proxy.header_timeout, Duration::from_secs(10));
    assert_eq!(proxy.keepalive_timeout, Duration::from_secs(60));
    assert_eq!(
        (proxy.max_connections, proxy.max_connections_per_ip),
        (4096, 256)
    );
    assert_eq!(
        proxy.upstream_timeouts,
        crate::pingora::UpstreamTimeouts::default()
    );
    let proxy = parse(
        "[server]\nheader_timeout = \"2s\"\nkeepalive_timeout = \"5m\"\n\
         max_connections = 100\nmax_connections_per_ip = 100\n\
         upstream_connect_timeout = \"2s\"\nupstream_read_timeout = \"1m\"\n",
    )
    .unwrap()
    .proxy;
    assert_eq!(
        proxy.upstream_timeouts,
        crate::pingora::UpstreamTimeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(60),
        }
    );
    assert_eq!(proxy.header_timeout, Duration::from_secs(2));
    assert_eq!(proxy.keepalive_timeout, Duration::from_secs(300));
    assert_eq!(
        (proxy.max_connections, proxy.max_connections_per_ip),
        (100, 100)
    );
}

#[test]
fn connection_bounds_refuse_zero_or_absurd_values() {
    for (text, key) in [
        ("header_timeout = \"0s\"", "server.header_timeout"),
        ("header_timeout = \"1h\"", "server.header_timeout"),
        ("keepalive_timeout = \"100ms\"", "server.keepalive_timeout"),
        ("keepalive_timeout = \"2days\"", "server.keepalive_timeout"),
        (
            "upstream_connect_timeout = \"0s\"",
            "server.upstream_connect_timeout",
        ),
        (
            "upstream_read_timeout = \"1h\"",
            "server.upstream_read_timeout",
        ),
        ("max_connections = 0", "server.max_connections"),
        ("max_connections = 100000000", "server.max_connections"),
        (
            "max_connections_per_ip = 0",
            "server.max_connections_per_ip",
        ),
        (
            "max_connections = 10\nmax_connections_per_ip = 11",
            "server.max_connections_per_ip",
        ),
    ] {
        let error = parse(&format!("[server]\n\n{text}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("`{key}`: must be between")),
            "{error}"
        );
        assert!(
            error.contains("test.toml:3:") || error.contains("test.toml:4:"),
            "{error}"
        );
    }
}

#[test]
fn secrets_come_from_the_environment() {
    assert_eq!(
        schema::expand_env("a${X}b${Y}", |n| Some(n.to_lowercase())).unwrap(),
        "axby"
    );
    assert!(
        schema::expand_env("${MISSING}", |_| None)
            .unwrap_err()
            .contains("MISSING")
    );
    assert!(schema::expand_env("${oops", |_| None).is_err());
    let error = parse("[otp]\nsecret = \"${OTPGATE_TEST_SURELY_UNSET}\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("OTPGATE_TEST_SURELY_UNSET") && error.contains("line 2"),
        "{error}"
    );
}

#[test]
fn the_policy_is_judged_by_the_engine_rules_at_the_offending_line() {
    for (text, expected) in [
        (
            "[otp]\nttl = \"5m\"\nmax_attempts = 0\n",
            "test.toml:3: `otp.max_attempts`",
        ),
        ("[otp]\n\nttl = \"0s\"\n", "test.toml:3: `otp.ttl`: must be"),
        (
            "[otp]\nfailure_budget = 0\n",
            "test.toml:2: `otp.failure_budget`",
        ),
        (
            "[otp]\nfailure_budget = 101\n",
            "test.toml:2: `otp.failure_budget`: must be at most 100",
        ),
    ] {
        let error = parse(text).unwrap_err().to_string();
        assert!(error.contains(expected), "{expected}: {error}");
    }
}

#[test]
fn tenant_mistakes_name_the_key_and_line() {
    for (text, expected) in [
        (
            "[[tenants]]\nid = \"default\"\n[[tenants]]\nid = \"default\"\n",
            "test.toml:4: `tenants.id`: tenant `default` is defined twice (first at line 2)",
        ),
        (
            "[[tenants]]\nid = \"shop\"\n",
            "test.toml:2: `tenants.id`: no tenant has the id `default`",
        ),
        (
            "[server]\ndefault_tenant = \"main\"\n[[tenants]]\nid = \"shop\"\n",
            "test.toml:2: `server.default_tenant`: no tenant has the id `main`",
        ),
        (
            "[[tenants]]\nid = \"default\"\nchannels = []\n",
            "test.toml:3: `tenants.channels`: a tenant needs at least one channel",
        ),
        (
            "[delivery.sms]\nkind = \"console\"\n[[tenants]]\nid = \"default\"\nchannels = [\"sms\", \"email\"]\n",
            "test.toml:5: `tenants.channels`: tenant `default` offers email",
        ),
        (
            "\n[delivery.email]\nkind = \"console\"\n",
            "test.toml:2: `delivery`: only email delivery is configured",
        ),
    ] {
        let error = parse(text).unwrap_err().to_string();
        assert!(error.contains(expected), "{expected}: {error}");
    }
    let text = "[delivery.email]\nkind = \"console\"\n[[tenants]]\nid = \"default\"\n";
    let error = parse(text).unwrap_err().to_string();
    assert!(
        error.contains("`tenants.channels`") && error.contains("test.toml:"),
        "channels left to their default point at the tenant: {error}"
    );
    let text = "[delivery.email]\nkind = \"console\"\n[[tenants]]\nid = \"default\"\nchannels = [\"email\"]\n";
    parse(text).unwrap().build().unwrap();
}

#[cfg(not(feature = "redis"))]
#[test]
fn a_redis_store_is_refused_by_a_build_without_it() {
    let error = parse("[store]\n\nbackend = \"redis\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("test.toml:3: `store.backend`") && error.contains("\"redis\" feature"),
        "{error}"
    );
}

#[test]
fn an_upstream_with_a_path_query_or_credentials_is_refused() {
    for (upstream, says) in [
        ("http://app:3000/api", "the path `/api` is not supported"),
        ("http://app:3000/api/", "the path `/api/` is not supported"),
        (
            "http://app:3000/?v=1",
            "a query or fragment is not supported",
        ),
        (
            "http://app:3000#top",
            "a query or fragment is not supported",
        ),
        (
            "http://user:pw@app:3000",
            "a user name or password is not supported",
        ),
    ] {
        let error = parse(&format!("[server]\n\nupstream = \"{upstream}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("test.toml:3: `server.upstream`"), "{error}");
        assert!(error.contains(says), "{error}");
        if says.contains("path") {
            assert!(
                error.contains("forwards each request's own path unchanged"),
                "{error}"
            );
            assert!(error.contains("http://app:3000"), "{error}");
        }
    }
    // A trailing slash is no path.
    parse("[server]\nupstream = \"http://app:3000/\"\n").unwrap();
}

#[cfg(feature = "proxy")]
#[test]
fn an_upstream_host_name_is_not_looked_up_while_reading_the_file() {
    let config = parse("[server]\nupstream = \"http://nonexistent.invalid:3000\"\n").unwrap();
    let upstream = &config.proxy.upstream;
    assert_eq!(
        (upstream.host.as_str(), upstream.port),
        ("nonexistent.invalid", 3000)
    );
    assert_eq!(upstream.current(), None);
    assert_eq!(
        upstream.dns_interval(),
        Some(crate::pingora::Upstream::DEFAULT_DNS_INTERVAL)
    );
    let config = parse(
        "[server]\nupstream = \"http://app.internal:3000\"\nupstream_dns_interval = \"5m\"\n",
    )
    .unwrap();
    assert_eq!(
        config.proxy.upstream.dns_interval(),
        Some(std::time::Duration::from_secs(300))
    );
    let config = parse("[server]\nupstream = \"http://[::1]:3000\"\n").unwrap();
    assert_eq!(
        config.proxy.upstream.current(),
        Some("[::1]:3000".parse().unwrap())
    );
}

#[test]
fn the_upstream_dns_interval_is_bounded() {
    for interval in ["0s", "500ms", "2h"] {
        let error = parse(&format!(
            "[server]\nupstream = \"http://app:3000\"\nupstream_dns_interval = \"{interval}\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            error
                .contains("test.toml:3: `server.upstream_dns_interval`: must be between 1s and 1h"),
            "{error}"
        );
    }
    for interval in ["1s", "1h"] {
        parse(&format!(
            "[server]\nupstream = \"http://app:3000\"\nupstream_dns_interval = \"{interval}\"\n"
        ))
        .unwrap();
    }
}

#[tokio::test]
async fn an_empty_file_is_warned_about_as_a_development_gate() {
    let config = parse("").unwrap();
    let kinds: Vec<_> = config.warnings().await.iter().map(|w| w.kind()).collect();
    assert_eq!(
        kinds,
        [
            SetupWarningKind::GeneratedKey,
            SetupWarningKind::NothingProtected,
            SetupWarningKind::ConsoleDelivery,
        ]
    );
}

#[tokio::test]
async fn warnings_name_the_key_and_line() {
    let config = parse(
        "[token]\nalgorithm = \"HS256\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
         [[protect]]\nprefix = \"/app/\"\n\
         [delivery.email]\nkind = \"console\"\n\
         [delivery.sms]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n\
         fallback = { kind = \"console\" }\n",
    )
    .unwrap();
    let warnings: Vec<String> = config
        .warnings()
        .await
        .iter()
        .map(|w| w.to_string())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(warnings[0].starts_with("test.toml:6: `delivery.email`: kind = \"console\""));
    assert!(warnings[1].starts_with("test.toml:8: `delivery.sms.fallback`: kind = \"console\""));
}

#[test]
fn relative_paths_are_taken_from_the_config_files_folder() {
    use crate::token::{SigningAlgorithm, SigningKey};
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(etc.join("keys")).unwrap();
    let (key, pem) = SigningKey::generate(SigningAlgorithm::EdDSA).unwrap();
    std::fs::write(etc.join("keys/gate.pem"), pem.as_bytes()).unwrap();
    std::fs::write(
        etc.join("users.toml"),
        "[[users]]\nid = \"1001\"\nemail = \"jane@example.com\"\ntenant = \"default\"\n",
    )
    .unwrap();
    let text = "[token]\nprivate_key = \"keys/gate.pem\"\n\
                [directory]\nkind = \"static\"\nfile = \"users.toml\"\n";
    let path = etc.join("gate.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::from_file(&path).unwrap();
    assert!(!config.token_key_is_generated());
    let front = config.build().unwrap();
    assert_eq!(front.gate().tokens().key().kid(), key.kid());

    // The same text taken from another folder does not find the key, and says where it
    // looked and how to make one there.
    let error = Config::parse(text, "gate.toml", dir.path())
        .err()
        .unwrap()
        .to_string();
    let looked = dir.path().join("keys/gate.pem").display().to_string();
    assert!(
        error.contains("gate.toml:2: `token.private_key`")
            && error.contains(&format!("cannot read {looked}"))
            && error.contains(&format!("otpgate keygen --algorithm EdDSA --out {looked}")),
        "{error}"
    );
}

#[test]
fn a_key_path_that_exists_but_cannot_be_read_gets_no_keygen_hint() {
    let dir = tempfile::tempdir().unwrap();
    // A folder where the key should be: there is something there, so no new key is
    // suggested for that path.
    std::fs::create_dir_all(dir.path().join("keys/gate.pem")).unwrap();
    let error = Config::parse(
        "[token]\nprivate_key = \"keys/gate.pem\"\n",
        "gate.toml",
        dir.path(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        error.contains("gate.toml:2: `token.private_key`") && error.contains("cannot read"),
        "{error}"
    );
    assert!(!error.contains("keygen"), "{error}");
}

#[test]
fn a_config_without_a_token_key_says_so() {
    assert!(parse("").unwrap().token_key_is_generated());
    let hs256 =
        parse("[token]\nalgorithm = \"HS256\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n");
    assert!(!hs256.unwrap().token_key_is_generated());
}

#[test]
fn the_verified_token_cache_is_sized_or_turned_off() {
    let entries = |text: &str| {
        let gate = parse(text).unwrap().build().unwrap();
        gate.gate().tokens().settings().cache_entries
    };
    assert_eq!(entries(""), 100_000);
    assert_eq!(entries("[token]\ncache_entries = 500\n"), 500);
    assert_eq!(entries("[token]\ncache_entries = 0\n"), 0);
    for bad in ["-1", "10000001"] {
        let error = parse(&format!("[token]\n\ncache_entries = {bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("test.toml:3: `token.cache_entries`: "),
            "{error}"
        );
        assert!(error.contains("0 (no cache)"), "{error}");
    }
}
