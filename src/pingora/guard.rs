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

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
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
use super::limits::{ConnectionLimits, Counter, Permit};

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
            counter: Arc::new(Counter::new(limits)),
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
                // HTTP/2 is served on a TLS connection whose ALPN chose it, or on a plain one
                // with h2c on, where pingora first peeks for the whole preface. Anywhere else a
                // head that starts like the preface is an HTTP/1 head, under the deadline.
                let h2 = match stream.get_ssl_digest() {
                    Some(_) => matches!(stream.selected_alpn_proto(), Some(ALPN::H2)),
                    None => (self.inner.server_options()).is_some_and(|o| o.h2c && !o.force_custom),
                };
                let guarded = HeadDeadline::new(stream, self.counter.limits, permit, h2);
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
    // Whether the connection may carry HTTP/2 (see `GuardedApp::process_new`): only then
    // does the preface take it out of the head deadline.
    h2: bool,
    // How many bytes of the HTTP/2 preface the connection's first reads matched.
    preface: usize,
    // When the current phase's deadline falls.
    due: Instant,
    // Never later than `due`, but may be earlier: moving a tokio timer costs a trip through
    // its wheel, twice a request on a kept-alive connection, so a deadline that moves later
    // only moves `due`, and the timer, when it fires early, is set again to `due`.
    // Boxed so that the stream is Unpin, as pingora's streams must be.
    timer: Pin<Box<Sleep>>,
    // Set through a shared reference: the proxy finds the stream by downcasting.
    signal: AtomicU8,
    _permit: Permit,
}

impl fmt::Debug for HeadDeadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadDeadline")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .field("due", &self.due)
            .finish_non_exhaustive()
    }
}

impl HeadDeadline {
    fn new(inner: Stream, limits: ConnectionLimits, permit: Permit, h2: bool) -> HeadDeadline {
        // From the accept: a client that connects and sends nothing gets no longer.
        let due = Instant::now() + limits.header_timeout;
        HeadDeadline {
            inner,
            limits,
            phase: Phase::Head { received: false },
            h2,
            preface: 0,
            due,
            timer: Box::pin(tokio::time::sleep_until(due)),
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
        self.due = Instant::now() + after;
        // A timer set later than `due` would let the deadline pass unseen: set it now.
        if self.due < self.timer.deadline() {
            self.timer.as_mut().reset(self.due);
        }
    }

    /// Whether `due` has passed; if not, the timer wakes `cx` no later than `due`.
    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            if self.timer.deadline() >= self.due {
                return true;
            }
            // It fired for a deadline since moved later: wait on for the real one.
            let due = self.due;
            self.timer.as_mut().reset(due);
        }
        false
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
        if this.phase == Phase::Open {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        // Only a read that waits needs the timer to wake it: one that got something reads
        // the clock, which costs no trip through the timer and does not depend on it (a
        // timer never polled, or fired for a deadline since moved later, has not fired for
        // `due`, and a client whose every read finds bytes would never wait).
        let passed = match read {
            Poll::Pending => this.deadline_passed(cx),
            Poll::Ready(_) => Instant::now() >= this.due,
        };
        if passed {
            return Poll::Ready(Err(this.expired(cx)));
        }
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            match this.phase {
                Phase::Idle => {
                    // The next request's first byte: its head gets header_timeout from here.
                    this.phase = Phase::Head { received: true };
                    let after = this.limits.header_timeout;
                    this.rearm(after);
                }
                // The HTTP/2 client preface, with prior knowledge (h2c) or after ALPN `h2`:
                // pingora serves the connection's streams without ever handing it back, so
                // neither signal comes. Once the whole preface arrived in time, the
                // connection's idleness is pingora's `h2_idle_timeout`; until then the head
                // deadline runs, and nothing is written on expiry (no HTTP/1 408 into h2).
                Phase::Head { received: false } if this.h2 => {
                    match h2_preface_read(this.preface, &buf.filled()[before..]) {
                        Some(read) if read == H2_PREFACE.len() => this.phase = Phase::Open,
                        Some(read) => this.preface = read,
                        None => this.phase = Phase::Head { received: true },
                    }
                }
                Phase::Head { .. } => this.phase = Phase::Head { received: true },
                // An open connection's reads returned above, untimed.
                Phase::Open => {}
            }
        }
        read
    }
}

/// The HTTP/2 connection preface (RFC 9113, 3.4), which no HTTP/1 request starts with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How much of the preface has been read once `next` follows the `read` bytes that matched
/// it so far; `None` when `next` departs from it.
fn h2_preface_read(read: usize, next: &[u8]) -> Option<usize> {
    let rest = &H2_PREFACE[read..];
    let n = rest.len().min(next.len());
    (next[..n] == rest[..n]).then_some(read + n)
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
        // pingora peeks for the h2c preface before it reads anything, waiting for all of it:
        // a client that sends less, or nothing, must still meet the head deadline.
        self.take_signal();
        if self.phase == Phase::Open {
            return self.inner.try_peek(buf).await;
        }
        let due = self.due;
        match tokio::time::timeout_at(due, self.inner.try_peek(buf)).await {
            Ok(peeked) => peeked,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head deadline passed",
            )),
        }
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
mod tests;
