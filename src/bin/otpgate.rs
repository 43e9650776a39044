//! The `otpgate` command: check a config, make keys, mint and inspect tokens.

#![forbid(unsafe_code)]

#[path = "otpgate/reload.rs"]
mod reload;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use otpgate::config::{Config, SetupWarning, SetupWarningKind};
use otpgate::identifier::Identifier;
use otpgate::otp::{Clock, SystemClock};
use otpgate::token::{SigningAlgorithm, SigningKey, Subject};

// A proxy allocates and frees buffers on every request; mimalloc does that in fewer
// cycles than the system allocator (measured by `make bench`).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "otpgate",
    version,
    about = "One-time-passcode sign-in in front of existing web apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The config file.
    #[arg(
        short,
        long,
        default_value = "config/otpgate.toml",
        env = "OTPGATE_CONFIG"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the edge proxy: the gate in front of the configured upstream app.
    Run {
        /// The config file; config/otpgate.toml when absent.
        #[arg(short, long, env = "OTPGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Without a config file, serve the embedded development defaults: codes printed
        /// to the console, a memory store, a token key made at start.
        #[arg(long)]
        dev: bool,
    },
    /// Make a running `otpgate run` read its config file again (sends it SIGHUP).
    Reload {
        /// The process id of `otpgate run`, which it logs at start.
        #[arg(long, env = "OTPGATE_PID")]
        pid: u32,
    },
    /// Check a config file and print what it sets up.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Make a token signing key (PKCS#8 PEM; for HS256 a base64url secret).
    Keygen {
        /// EdDSA, ES256, RS256 or HS256.
        #[arg(short, long, visible_alias = "alg", default_value = "EdDSA")]
        algorithm: String,
        /// Where to write it; standard output when absent.
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Mint or verify tokens with the configured key (for testing an app's integration).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Mint a token for an email or phone, as a verified code would.
    Mint {
        #[command(flatten)]
        config: ConfigArg,
        /// Email address or E.164 phone number.
        identifier: String,
        /// The tenant.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// The subject (`sub`); the identifier itself when absent.
        #[arg(long)]
        subject: Option<String>,
    },
    /// Verify a token and print its claims.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// The token.
        token: String,
    },
}

fn main() -> ExitCode {
    // First: the TLS listener and every client the gate delivers codes with take the
    // process's rustls crypto, and the first installed wins.
    otpgate::pingora::install_crypto_provider();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("otpgate: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The engine of the config at `path`, for `otpgate token`. Refused when no token key is
/// configured: a key made for this process alone would sign tokens nothing else verifies,
/// and verify none that anything else signed.
fn load_for_tokens(path: &Path) -> Result<otpgate::Gate, String> {
    let config = Config::from_file(path).map_err(|e| e.to_string())?;
    if config.token_key_is_generated() {
        // Key paths in a config file are taken from its own folder.
        let key = match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            Some(dir) => dir.join("keys/otpgate.pem"),
            None => PathBuf::from("keys/otpgate.pem"),
        };
        return Err(format!(
            "{}: no token key is configured: tokens minted now could not be verified by \
             another process; set token.private_key (make one with `otpgate keygen --out {}`, \
             which refuses to overwrite an existing file, then set token.private_key = \
             \"keys/otpgate.pem\")",
            path.display(),
            key.display()
        ));
    }
    config
        .build()
        .map(|front| front.gate().clone())
        .map_err(|e| e.to_string())
}

/// `println!` that ignores a closed standard output (`otpgate check | head`) instead of
/// panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

const DEFAULT_CONFIG_PATH: &str = "config/otpgate.toml";

/// The environment variable that picks the log format.
const LOG_FORMAT_VAR: &str = "OTPGATE_LOG_FORMAT";

/// How `otpgate run` writes its logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable lines; coloured only on a terminal.
    Text,
    /// One JSON object per line, the event's fields at its top level.
    Json,
}

impl LogFormat {
    /// The format `OTPGATE_LOG_FORMAT` asks for: `text` (the default) or `json`.
    fn from_env() -> Result<LogFormat, String> {
        match std::env::var(LOG_FORMAT_VAR) {
            Err(std::env::VarError::NotPresent) => Ok(LogFormat::Text),
            Ok(value) => match value.trim().to_ascii_lowercase().as_str() {
                "" | "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err(format!(
                    "{LOG_FORMAT_VAR}={value:?} is not a log format: use \"text\" or \"json\""
                )),
            },
            Err(std::env::VarError::NotUnicode(value)) => Err(format!(
                "{LOG_FORMAT_VAR}={value:?} is not a log format: use \"text\" or \"json\""
            )),
        }
    }
}

/// Logs to standard output, filtered by `RUST_LOG` (default `info`), in the format
/// `OTPGATE_LOG_FORMAT` names. pingora's own `log` records come through the same way.
fn init_logs() -> Result<(), String> {
    let format = LogFormat::from_env()?;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    match format {
        // Colour codes would corrupt the JSON and any file or collector reading it.
        LogFormat::Json => logs
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        // Colour only where a person reads it: a pipe or a file gets plain text.
        LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).try_init(),
    }
    .map_err(|e| format!("cannot set up logging: {e}"))
}

/// What a protect rule asks besides a session, for `otpgate check`.
fn rule_summary(rule: &otpgate::http::ProtectRule) -> String {
    let mut parts = Vec::new();
    if !rule.methods.is_empty() {
        let methods: Vec<&str> = rule.methods.iter().map(|m| m.as_str()).collect();
        parts.push(format!("methods {}", methods.join(",")));
    }
    if !rule.tenants.is_empty() {
        parts.push(format!("tenants {}", rule.tenants.join(",")));
    }
    let listed = rule.emails.len() + rule.email_domains.len() + rule.phone_countries.len();
    if listed > 0 {
        parts.push(format!("{listed} allowed identities/domains/countries"));
    }
    if let Some(age) = rule.max_session_age {
        parts.push(format!(
            "sessions up to {}",
            humantime::format_duration(age)
        ));
    }
    match parts.is_empty() {
        true => String::new(),
        false => format!(" ({})", parts.join("; ")),
    }
}

/// The configuration `otpgate run` serves: the file given, config/otpgate.toml, or with
/// `dev` the embedded development defaults. Anything else is refused, so that a gate
/// started in the wrong directory never runs on development settings unnoticed.
/// With a file, its path and text too: SIGHUP reads it again.
fn run_config(
    path: Option<PathBuf>,
    dev: bool,
) -> Result<(Config, Option<(PathBuf, String)>), String> {
    let path = path.or_else(|| {
        Path::new(DEFAULT_CONFIG_PATH)
            .exists()
            .then(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    });
    match path {
        Some(path) => {
            tracing::info!(config = %path.display(), "reading the config file");
            let (config, text) = reload::read(&path)?;
            Ok((config, Some((path, text))))
        }
        None if dev => {
            tracing::warn!(
                "no config file: serving the embedded development defaults (console delivery \
                 prints codes, memory store, a token key made at start); not for production"
            );
            let config = Config::embedded_default(Path::new(".")).map_err(|e| e.to_string())?;
            Ok((config, None))
        }
        None => Err(format!(
            "no config file: pass --config FILE (or set OTPGATE_CONFIG), run where \
             {DEFAULT_CONFIG_PATH} is, or pass --dev for the embedded development defaults"
        )),
    }
}

/// Fails at once, naming `listen`, when the address cannot be bound (in use, not local,
/// not permitted), before the set-up checks: pingora would only find out in its listener
/// thread, after the start was logged, and retry, panic and leave the process running
/// without listening.
fn check_listen(listen: SocketAddr) -> Result<(), String> {
    otpgate::pingora::check_listen(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))
}

/// The set-up warnings of `config`. Called outside any runtime, so a small one is made
/// for the store's `PING`, and dropped with the connection it made.
fn setup_warnings(config: &Config) -> Result<Vec<SetupWarning>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot check the set-up: {e}"))?;
    Ok(runtime.block_on(config.warnings()))
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Run { config, dev } => {
            init_logs()?;
            let (parsed, file) = run_config(config, dev)?;
            let settings = parsed.proxy.clone();
            check_listen(settings.listen)?;
            for warning in setup_warnings(&parsed)? {
                if warning.kind() == SetupWarningKind::ConsoleDelivery && !dev {
                    // Outside development this hands sign-in to whoever reads the log.
                    tracing::warn!(
                        "NOT FOR PRODUCTION: one-time codes are written to this log: {warning}"
                    );
                } else {
                    tracing::warn!("{warning}");
                }
            }
            let front = parsed.build().map_err(|e| e.to_string())?;
            match file {
                Some((path, text)) => {
                    let reloader = reload::ConfigReloader::new(path, text, settings.clone());
                    otpgate::pingora::serve_reloadable(front, &settings, reloader)
                }
                // The embedded defaults have no file to read again.
                None => otpgate::pingora::serve(front, &settings),
            }
            .map_err(|e| e.to_string())
        }
        Command::Reload { pid } => reload::send_hangup(pid),
        Command::Check { config } => {
            let config = config.config;
            let parsed = Config::from_file(&config).map_err(|e| e.to_string())?;
            let warnings = setup_warnings(&parsed)?;
            let proxy = parsed.proxy.clone();
            let front = parsed.build().map_err(|e| e.to_string())?;
            let gate = front.gate();
            say!("{}: ok", config.display());
            say!("  listen     {}", proxy.listen);
            say!(
                "  upstream   {}://{}{}{}",
                if proxy.upstream.tls.is_some() {
                    "https"
                } else {
                    "http"
                },
                proxy.upstream,
                match &proxy.upstream.tls {
                    Some(tls) => format!(" (certificate verified against {tls:?})"),
                    None => String::new(),
                },
                match proxy.upstream.host.parse::<std::net::IpAddr>() {
                    Ok(_) => "",
                    Err(_) => " (looked up when the proxy runs, then every upstream_dns_interval)",
                }
            );
            if let Some(pool) = &proxy.pool {
                let instances: Vec<String> = pool.instances().map(ToString::to_string).collect();
                say!(
                    "  upstreams  {} ({:?}, checked every {}{})",
                    instances.join(" "),
                    pool.balance(),
                    humantime::format_duration(pool.health_interval()),
                    pool.health_path()
                        .map(|path| format!(" with GET {path}"))
                        .unwrap_or_default()
                );
            }
            if let Some(tls) = &proxy.tls {
                let names: Vec<String> = tls
                    .certificates
                    .current()
                    .iter()
                    .map(|cert| cert.names().join(" "))
                    .collect();
                say!("  tls        {} ({})", tls.listen, names.join(", "));
            }
            if proxy.h2c {
                say!("  h2c        on {}", proxy.listen);
            }
            say!("  threads    {}", proxy.threads);
            say!("  store      {}", gate.store().describe());
            say!(
                "  token      {:?}, kid {}",
                gate.tokens().key().algorithm(),
                gate.tokens().key().kid()
            );
            // The current key verifies too; only the others are previous keys.
            for previous in gate.tokens().verifying_keys().skip(1) {
                say!(
                    "  verifies   {:?}, kid {} (previous key)",
                    previous.algorithm(),
                    previous.kid()
                );
            }
            for mount in &front.settings().endpoints {
                say!("  endpoints  {:?} at {}", mount.dialect, mount.prefix);
            }
            for rule in &front.settings().protect {
                say!("  protect    {}{}", rule.prefix, rule_summary(rule));
            }
            match &front.settings().pages {
                Some(pages) => say!(
                    "  pages      {0}/sign-in, forward-auth at {0}/check",
                    pages.prefix
                ),
                None => say!("  pages      off: browsers get 401 like API clients"),
            }
            // Warnings only: each of these runs, and someone may mean it.
            for warning in &warnings {
                let _ = writeln!(std::io::stderr(), "warning: {warning}");
            }
            Ok(())
        }
        Command::Keygen {
            algorithm,
            out,
            force,
        } => {
            let algorithm: SigningAlgorithm = algorithm
                .parse()
                .map_err(|e: otpgate::token::KeyError| e.to_string())?;
            let (key, material) = SigningKey::generate(algorithm).map_err(|e| e.to_string())?;
            match out {
                None => {
                    let _ = write!(std::io::stdout(), "{}", material.as_str());
                    if !material.ends_with('\n') {
                        say!("");
                    }
                }
                Some(path) => {
                    write_secret_file(&path, material.as_bytes(), force)?;
                    eprintln!(
                        "wrote {:?} key {} to {}",
                        algorithm,
                        key.kid(),
                        path.display()
                    );
                }
            }
            Ok(())
        }
        Command::Token { action } => match action {
            TokenAction::Mint {
                config,
                identifier,
                tenant,
                subject,
            } => {
                let gate = load_for_tokens(&config.config)?;
                let identifier = if identifier.starts_with('+') {
                    Identifier::phone(&identifier)
                } else {
                    Identifier::email(&identifier)
                }
                .map_err(|e| e.to_string())?;
                let (email, phone) = match &identifier {
                    Identifier::Email(e) => (Some(e.clone()), None),
                    Identifier::Phone(p) => (None, Some(p.clone())),
                };
                let minted = gate
                    .tokens()
                    .mint(
                        &Subject {
                            id: subject.unwrap_or_else(|| identifier.as_str().to_owned()),
                            email,
                            phone,
                            tenant,
                        },
                        SystemClock.now(),
                    )
                    .map_err(|e| e.to_string())?;
                say!("{}", minted.token);
                Ok(())
            }
            TokenAction::Verify { config, token } => {
                let gate = load_for_tokens(&config.config)?;
                let claims = gate
                    .tokens()
                    .verify(token.trim(), SystemClock.now())
                    .map_err(|e| e.to_string())?;
                say!(
                    "{}",
                    serde_json::to_string_pretty(&*claims).unwrap_or_default()
                );
                Ok(())
            }
        },
    }
}

/// Writes key material readable by its owner only.
fn write_secret_file(path: &Path, bytes: &[u8], force: bool) -> Result<(), String> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        // Never overwrite a key by accident: tokens signed by it would all die.
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            format!(
                "{} exists and is kept: tokens signed by the key in it would stop verifying; \
                 write the new key to another file",
                path.display()
            )
        }
        _ => format!("cannot write {}: {e}", path.display()),
    })?;
    file.write_all(bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
