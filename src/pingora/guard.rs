//! Bounds on the proxy's client connections, which pingora itself leaves open.
//!
//! pingora times each read of a request head, never the head as a whole, and accepts as
//! many connections as the process has descriptors: a client sending one header line
//! every few seconds holds its connection for ever, and a few hundred such clients starve
//! everyone else. [`GuardedApp`] wraps the proxy (an [`HttpServerApp`]) and
//!
//! - caps connections in total and per client address, answering `503` past a cap;
//! - gives each request head a total deadline ([`ConnectionLimits::header_timeout`]) from
//!   the connection's start, or on a kept-alive connection from the next request's first
//!   byte, and each kept-alive connection an idle deadline
//!   ([`ConnectionLimits::keepalive_timeout`]) until that byte.
//!
//! Where a request ends is seen here, when pingora hands the connection back for the next
//! request (after any unread body is drained). Where a request head ends is the proxy's
//! to say: a [`ProxyHttp`](::pingora::proxy::ProxyHttp) calls
//! [`OtpFilter::early_request_filter`] from its hook of the same name ([`OtpProxy`] does);
//! without it the head deadline also cuts off the body.
//!
//! [`OtpProxy`]: super::OtpProxy

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use ::pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use ::pingora::protocols::http::ServerSession;
use ::pingora::protocols::http::v2::server::H2Options;
use ::pingora::protocols::raw_connect::ProxyDigest;
use ::pingora::protocols::tls::{SslDigest, TlsRef};
use ::pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use ::pingora::proxy::Session;
use ::pingora::server::ShutdownWatch;
use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::OtpFilter;
use super::ProxySettings;

/// Bounds on the proxy's client connections (`[server]` in the config file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client has to send a whole request head: from the connection's start,
    /// or on a kept-alive connection from the request's first byte.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request's first byte.
    pub keepalive_timeout: Duration,
    /// Client connections open at once, in all. Lowered at start to what the process's
    /// open-file limit allows.
    pub max_connections: usize,
    /// Client connections open at once from one address (IPv6: one /64).
    pub max_connections_per_ip: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_connections_per_ip: 256,
        }
    }
}

impl From<&ProxySettings> for ConnectionLimits {
    fn from(settings: &ProxySettings) -> Self {
        ConnectionLimits {
            header_timeout: settings.header_timeout,
            keepalive_timeout: settings.keepalive_timeout,
            max_connections: settings.max_connections,
            max_connections_per_ip: settings.max_connections_per_ip,
        }
    }
}

/// Descriptors kept for everything but client connections: listeners, the runtime, log
/// files, the store's and delivery's connections.
const RESERVED_DESCRIPTORS: usize = 64;

/// How long the answer to a connection over a cap may take to write: a client that does
/// not read it must not hold the descriptor that the cap is there to save.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_millis(500);

/// A complete `Connection: close` answer with a JSON error body.
fn closing_answer(status: &str, error: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({"error": error, "message": message}).to_string();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn too_many_connections() -> Vec<u8> {
    closing_answer(
        "503 Service Unavailable",
        "too_many_connections",
        "too many connections, try again later",
    )
}

fn head_timed_out() -> Vec<u8> {
    closing_answer(
        "408 Request Timeout",
        "request_timeout",
        "the request head took too long to arrive",
    )
}

/// The most client connections that `open_files` descriptors carry: each proxied request
/// holds a client and an upstream descriptor.
fn connections_for_descriptors(open_files: u64) -> usize {
    let open_files = usize::try_from(open_files).unwrap_or(usize::MAX);
    (open_files.saturating_sub(RESERVED_DESCRIPTORS) / 2).max(1)
}

/// The soft open-file limit, from `/proc/self/limits` (Linux); `None` when unlimited or
/// unknown.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_file_limit(&limits)
}

fn parse_open_file_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    // "Max open files            1024                 524288               files"
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl ConnectionLimits {
    /// These limits with `max_connections` lowered to what the process's open-file limit
    /// carries, with a warning when it is lowered.
    pub fn fitted_to_open_file_limit(self) -> ConnectionLimits {
        match open_file_limit() {
            Some(open_files) => self.fitted_to(open_files),
            None => self,
        }
    }

    fn fitted_to(mut self, open_files: u64) -> ConnectionLimits {
        let carried = connections_for_descriptors(open_files);
        if carried < self.max_connections {
            // Past the descriptor limit accept() fails and every client, health checks
            // included, waits; a cap below it refuses the excess with a clear answer.
            tracing::warn!(
                max_connections = self.max_connections,
                lowered_to = carried,
                open_file_limit = open_files,
                "server.max_connections lowered to fit the open-file limit (raise it with `ulimit -n` or LimitNOFILE)"
            );
            self.max_connections = carried;
        }
        self
    }
}

/// The counts behind the caps.
#[derive(Debug)]
struct Counter {
    limits: ConnectionLimits,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// Which cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Total,
    PerIp,
}

/// The address a per-client cap counts against.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            // One host or site gets a whole /64: counting its addresses one by one would
            // give it 2^64 caps.
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

impl Counter {
    fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Permit, Refusal> {
        let key = ip.map(client_key);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.limits.max_connections {
            return Err(Refusal::Total);
        }
        if let Some(key) = key {
            let count = open.by_ip.entry(key).or_insert(0);
            if *count >= self.limits.max_connections_per_ip {
                return Err(Refusal::PerIp);
            }
            *count += 1;
        }
        open.total += 1;
        Ok(Permit {
            counter: self.clone(),
            key,
        })
    }
}

/// One admitted connection; gives its place back when dropped, with the connection.
#[derive(Debug)]
struct Permit {
    counter: Arc<Counter>,
    key: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self
            .counter
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(key) = self.key
            && let Some(count) = open.by_ip.get_mut(&key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Forgotten at zero, so the map holds only addresses with open connections.
                open.by_ip.remove(&key);
            }
        }
    }
}

/// An HTTP app (pingora's [`HttpProxy`](::pingora::proxy::HttpProxy)) behind the
/// connection caps, with the request-head and idle deadlines on every connection.
///
/// ```no_run
/// # fn serve(proxy: otpgate::pingora::OtpProxy) {
/// use otpgate::pingora::{ConnectionLimits, GuardedApp};
///
/// let conf = std::sync::Arc::new(pingora::server::configuration::ServerConf::default());
/// let app = GuardedApp::new(
///     pingora::proxy::http_proxy(&conf, proxy),
///     ConnectionLimits::default().fitted_to_open_file_limit(),
/// );
/// let mut service = pingora::services::listening::Service::new("proxy".into(), app);
/// service.add_tcp("127.0.0.1:8080");
/// # }
/// ```
pub struct GuardedApp<A> {
    inner: Arc<Rearm<A>>,
    counter: Arc<Counter>,
}

impl<A> fmt::Debug for GuardedApp<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedApp")
            .field("limits", &self.counter.limits)
            .finish_non_exhaustive()
    }
}

impl<A> GuardedApp<A> {
    /// `inner` behind `limits`, taken as given (see
    /// [`ConnectionLimits::fitted_to_open_file_limit`]).
    pub fn new(inner: A, limits: ConnectionLimits) -> GuardedApp<A> {
        GuardedApp {
            inner: Arc::new(Rearm {
                app: Arc::new(inner),
            }),
            counter: Arc::new(Counter {
                limits,
                open: Mutex::default(),
            }),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.counter.limits
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if stream.as_any().is::<HeadDeadline>() {
            // A connection handed back for another round is admitted and guarded already.
            return self.inner.process_new(stream, shutdown).await;
        }
        let peer = stream
            .get_socket_digest()
            .and_then(|digest| digest.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        match self.counter.admit(peer) {
            Ok(permit) => {
                let guarded = HeadDeadline::new(stream, self.counter.limits, permit);
                self.inner.process_new(Box::new(guarded), shutdown).await
            }
            Err(refusal) => {
                tracing::debug!(?refusal, "connection refused: too many connections");
                refuse(stream).await;
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.app.http_cleanup().await;
    }
}

/// Passes every call on to the app, and starts the idle deadline when a finished
/// request's connection comes back for the next one. (`ProxyHttp::logging` would be too
/// early: pingora drains an unread request body after it, and that body would pass for the
/// next request's head.)
struct Rearm<A> {
    app: Arc<A>,
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for Rearm<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let reused = self.app.process_new_http(session, shutdown).await?;
        let (stream, settings) = reused.consume();
        if let Some(deadline) = stream.as_any().downcast_ref::<HeadDeadline>() {
            deadline.request_done();
        }
        Some(ReusedHttpStream::new(stream, settings))
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.app.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.app.server_options()
    }

    async fn http_cleanup(&self) {
        self.app.http_cleanup().await;
    }

    async fn process_custom_session(
        self: Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.app
            .clone()
            .process_custom_session(stream, shutdown)
            .await
    }
}

/// Answers a connection over a cap, briefly, and closes it.
async fn refuse(mut stream: Stream) {
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        if stream.write_all(&too_many_connections()).await.is_ok() {
            let _ = stream.flush().await;
            Shutdown::shutdown(&mut *stream).await;
        }
    })
    .await;
}

/// What the proxy last said about the connection; read by the stream at its next read.
const SIGNAL_NONE: u8 = 0;
const SIGNAL_HEAD_DONE: u8 = 1;
const SIGNAL_REQUEST_DONE: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading a request head, under `header_timeout`; `received`: any byte of it yet.
    Head { received: bool },
    /// Head read: the request's body and answer are pingora's to time.
    Open,
    /// Between requests, under `keepalive_timeout` until the next request's first byte.
    Idle,
}

/// A client connection under the request-head and idle deadlines. An expired deadline
/// fails the read, and pingora closes the connection.
pub struct HeadDeadline {
    inner: Stream,
    limits: ConnectionLimits,
    phase: Phase,
    // Boxed so that the stream is Unpin, as pingora's streams must be.
    deadline: Pin<Box<Sleep>>,
    // Set through a shared reference: the proxy finds the stream by downcasting.
    signal: AtomicU8,
    _permit: Permit,
}

impl fmt::Debug for HeadDeadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadDeadline")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .field("deadline", &self.deadline.deadline())
            .finish_non_exhaustive()
    }
}

impl HeadDeadline {
    fn new(inner: Stream, limits: ConnectionLimits, permit: Permit) -> HeadDeadline {
        HeadDeadline {
            inner,
            limits,
            phase: Phase::Head { received: false },
            // From the accept: a client that connects and sends nothing gets no longer.
            deadline: Box::pin(tokio::time::sleep(limits.header_timeout)),
            signal: AtomicU8::new(SIGNAL_NONE),
            _permit: permit,
        }
    }

    /// The request head is read: the deadline stops until the request is done.
    fn head_done(&self) {
        self.signal.store(SIGNAL_HEAD_DONE, Ordering::Release);
    }

    /// The request is done and its body drained: the connection may idle until the next.
    fn request_done(&self) {
        self.signal.store(SIGNAL_REQUEST_DONE, Ordering::Release);
    }

    fn take_signal(&mut self) {
        match self.signal.swap(SIGNAL_NONE, Ordering::AcqRel) {
            SIGNAL_HEAD_DONE => self.phase = Phase::Open,
            SIGNAL_REQUEST_DONE => {
                self.phase = Phase::Idle;
                self.rearm(self.limits.keepalive_timeout);
            }
            _ => {}
        }
    }

    fn rearm(&mut self, after: Duration) {
        self.deadline.as_mut().reset(Instant::now() + after);
    }

    /// The read error for an expired deadline; a client that had started a head is told
    /// why, if the answer fits the socket at once.
    fn expired(&mut self, cx: &mut Context<'_>) -> io::Error {
        if self.phase == (Phase::Head { received: true }) {
            // Best effort and never waited for: the deadline must close the connection.
            let _ = Pin::new(&mut self.inner).poll_write(cx, &head_timed_out());
        }
        let what = match self.phase {
            Phase::Idle => "idle keep-alive connection timed out",
            _ => "request head deadline passed",
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.take_signal();
        if this.phase != Phase::Open && this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(this.expired(cx)));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            match this.phase {
                Phase::Idle => {
                    // The next request's first byte: its head gets header_timeout from here.
                    this.phase = Phase::Head { received: true };
                    let after = this.limits.header_timeout;
                    this.rearm(after);
                }
                Phase::Head { .. } => this.phase = Phase::Head { received: true },
                Phase::Open => {}
            }
        }
        read
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await;
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// The connection's deadlines, if it is served by [`GuardedApp`] over HTTP/1.
fn deadline_of(session: &Session) -> Option<&HeadDeadline> {
    session
        .as_downstream()
        .stream()
        .and_then(|stream| stream.as_any().downcast_ref::<HeadDeadline>())
}

impl OtpFilter {
    /// Call from `ProxyHttp::early_request_filter`: the request head is read, so its
    /// deadline stops, and pingora's keep-alive wait becomes
    /// [`ConnectionLimits::keepalive_timeout`]. Does nothing outside [`GuardedApp`].
    pub fn early_request_filter(&self, session: &mut Session) {
        let Some(deadline) = deadline_of(session) else {
            return;
        };
        deadline.head_done();
        let keepalive = deadline.limits.keepalive_timeout;
        // Only where pingora would keep the connection: None (client asked to close, or
        // shutting down) must stay None.
        if session.get_keepalive().is_some_and(|secs| secs > 0) {
            let secs = keepalive.as_secs() + u64::from(keepalive.subsec_nanos() > 0);
            session.set_keepalive(Some(secs.max(1)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, DuplexStream};

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: 3,
            max_connections_per_ip: 2,
        }
    }

    fn counter(limits: ConnectionLimits) -> Arc<Counter> {
        Arc::new(Counter {
            limits,
            open: Mutex::default(),
        })
    }

    /// A guarded server end and the client's end of an in-memory connection.
    fn pair() -> (HeadDeadline, DuplexStream) {
        let (client, server) = tokio::io::duplex(4096);
        let permit = counter(limits()).admit(None).unwrap();
        (
            HeadDeadline::new(Box::new(server), limits(), permit),
            client,
        )
    }

    async fn read(stream: &mut HeadDeadline) -> io::Result<usize> {
        let mut buf = [0u8; 64];
        stream.read(&mut buf).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_sent_slowly_fails_at_the_total_deadline() {
        let (mut server, mut client) = pair();
        let start = Instant::now();
        let reader = tokio::spawn(async move {
            loop {
                if let Err(e) = read(&mut server).await {
                    return e;
                }
            }
        });
        // One byte every 3 s: each read succeeds, but the head as a whole is too slow.
        for _ in 0..5 {
            if client.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let error = reader.await.unwrap();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() <= Duration::from_secs(15));
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.ok();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_head_is_not_timed_and_an_idle_connection_is() {
        let (mut server, mut client) = pair();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(read(&mut server).await.unwrap() > 0);
        server.head_done();

        // Body and answer take longer than the head deadline: not the guard's to stop.
        tokio::time::sleep(Duration::from_secs(30)).await;
        client.write_all(b"body").await.unwrap();
        assert_eq!(read(&mut server).await.unwrap(), 4);

        // Done: idle until keepalive_timeout, then the read fails.
        server.request_done();
        let start = Instant::now();
        let error = read(&mut server).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        // Nothing is written to a connection that never started another request.
        drop(server);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_head_is_timed_from_its_first_byte() {
        let (mut server, mut client) = pair();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        read(&mut server).await.unwrap();
        server.head_done();
        server.request_done();

        // Idle for 50 s (under keepalive_timeout), then the next head starts.
        tokio::time::sleep(Duration::from_secs(50)).await;
        client.write_all(b"GET").await.unwrap();
        read(&mut server).await.unwrap();
        let start = Instant::now();
        let error = read(&mut server).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[test]
    fn caps_count_in_total_and_per_address() {
        let counter = counter(limits());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = counter.admit(Some(a)).unwrap();
        let _second = counter.admit(Some(a)).unwrap();
        assert_eq!(counter.admit(Some(a)).unwrap_err(), Refusal::PerIp);
        let _third = counter.admit(Some(b)).unwrap();
        assert_eq!(counter.admit(Some(b)).unwrap_err(), Refusal::Total);
        drop(first);
        let _again = counter.admit(Some(a)).unwrap();
        assert_eq!(counter.admit(None).unwrap_err(), Refusal::Total);
    }

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() {
        let counter = counter(limits());
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let two: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let _a = counter.admit(Some(one)).unwrap();
        let _b = counter.admit(Some(two)).unwrap();
        assert_eq!(counter.admit(Some(one)).unwrap_err(), Refusal::PerIp);
        assert_eq!(
            client_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        let limits = ConnectionLimits::default();
        assert_eq!(limits.fitted_to(256).max_connections, 96);
        assert_eq!(limits.fitted_to(1 << 20).max_connections, 4096);
        assert_eq!(limits.fitted_to(10).max_connections, 1);
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max open files            1024                 524288               files\n";
        assert_eq!(parse_open_file_limit(text), Some(1024));
        assert_eq!(
            parse_open_file_limit("Max open files  unlimited  unlimited  files\n"),
            None
        );
    }
}
