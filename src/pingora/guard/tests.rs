//! The request-head and idle deadlines, on in-memory connections with paused time.

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

/// A guarded server end and the client's end of an in-memory connection that may carry
/// HTTP/2.
fn pair() -> (HeadDeadline, DuplexStream) {
    pair_for(true)
}

/// [`pair`], for a connection that may carry HTTP/2 or, with `h2` false, only HTTP/1.
fn pair_for(h2: bool) -> (HeadDeadline, DuplexStream) {
    let (client, server) = tokio::io::duplex(4096);
    let permit = Arc::new(Counter::new(limits())).admit(None).unwrap();
    (
        HeadDeadline::new(Box::new(server), limits(), permit, h2),
        client,
    )
}

async fn read(stream: &mut HeadDeadline) -> io::Result<usize> {
    let mut buf = [0u8; 64];
    stream.read(&mut buf).await
}

/// The next read fails for a passed deadline (within a minute of paused time, so that a
/// deadline that never comes fails the test instead of hanging it).
async fn cut_off(stream: &mut HeadDeadline) {
    let error = tokio::time::timeout(Duration::from_secs(60), read(stream))
        .await
        .expect("a deadline ends the read")
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
}

/// What the client got once the server end is gone.
async fn answer(server: HeadDeadline, mut client: DuplexStream) -> Vec<u8> {
    drop(server);
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    answer
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
async fn a_head_whose_every_read_finds_bytes_still_meets_the_deadline() {
    let (mut server, mut client) = pair_for(false);
    // Written before the first read, so no read ever waits, and the timer is never
    // polled: the deadline must hold all the same.
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    assert!(read(&mut server).await.unwrap() > 0);
    tokio::time::advance(Duration::from_secs(11)).await;
    client.write_all(b"X-More: 1\r\n").await.unwrap();
    let error = read(&mut server).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
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
    cut_off(&mut server).await;
    assert_eq!(start.elapsed(), Duration::from_secs(60));
    // Nothing is written to a connection that never started another request.
    assert!(answer(server, client).await.is_empty());
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
    cut_off(&mut server).await;
    assert_eq!(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn each_deadline_falls_when_its_own_phase_says_however_often_it_moved() {
    let (mut server, mut client) = pair();
    let start = Instant::now();
    // Three quick requests: the first head's deadline (10 s) passes while the third head
    // is still arriving, and must neither cut it off early nor be forgotten.
    for at in [1, 8, 9] {
        tokio::time::sleep_until(start + Duration::from_secs(at)).await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        read(&mut server).await.unwrap();
        if at != 9 {
            server.head_done();
            server.request_done();
        }
    }
    // The third head never ends: it fails 10 s after its first byte, at 19 s.
    cut_off(&mut server).await;
    assert_eq!(start.elapsed(), Duration::from_secs(19));

    // An idle deadline moved earlier than the timer is honoured at once too.
    let (mut server, mut client) = pair();
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    read(&mut server).await.unwrap();
    server.head_done();
    server.limits.keepalive_timeout = Duration::from_secs(2);
    server.request_done();
    let start = Instant::now();
    cut_off(&mut server).await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn an_http2_connection_outlives_the_head_deadline() {
    // h2 streams never hand the connection back, so no head_done or request_done comes:
    // the whole preface, in time, must take the connection out of the head deadline.
    let (mut server, mut client) = pair();
    client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert_eq!(read(&mut server).await.unwrap(), 16);
    client.write_all(b"\r\nSM\r\n\r\n").await.unwrap();
    assert_eq!(read(&mut server).await.unwrap(), 8);
    tokio::time::sleep(Duration::from_secs(120)).await;
    client.write_all(b"frame").await.unwrap();
    assert_eq!(read(&mut server).await.unwrap(), 5);
    // Nothing was written back: no HTTP/1 408 into an HTTP/2 connection.
    assert!(answer(server, client).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn half_an_h2_preface_is_cut_off_at_the_head_deadline_without_an_answer() {
    let (mut server, mut client) = pair();
    let start = Instant::now();
    client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    read(&mut server).await.unwrap();
    cut_off(&mut server).await;
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert!(answer(server, client).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_silent_connection_is_still_cut_off_and_pri_needs_its_space() {
    assert_eq!(
        h2_preface_read(0, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nframes"),
        Some(24)
    );
    assert_eq!(h2_preface_read(0, b"PRI"), Some(3));
    assert_eq!(
        h2_preface_read(3, b" * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        Some(24)
    );
    assert_eq!(h2_preface_read(0, b"PRIX * HTTP/1.1\r\n"), None);
    assert_eq!(h2_preface_read(3, b"X"), None);
    assert_eq!(h2_preface_read(0, b"GET / HTTP/1.1\r\n"), None);
    // A head that starts like anything else stays under the deadline.
    let (mut server, mut client) = pair();
    client.write_all(b"PRIX / HTTP/1.1\r\n").await.unwrap();
    read(&mut server).await.unwrap();
    cut_off(&mut server).await;
}

#[tokio::test(start_paused = true)]
async fn a_head_like_the_h2_preface_stays_under_the_deadline_where_h2_is_not_served() {
    // No h2c and no ALPN `h2`: pingora reads HTTP/1, so `PRI ` buys no time.
    let (mut server, mut client) = pair_for(false);
    let start = Instant::now();
    client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    read(&mut server).await.unwrap();
    cut_off(&mut server).await;
    assert_eq!(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn the_h2c_peek_meets_the_head_deadline() {
    // pingora's own stream, whose peek waits for the whole preface, over real TCP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    let stream: Stream = Box::new(::pingora::protocols::l4::stream::Stream::from(accepted));
    let permit = Arc::new(Counter::new(limits())).admit(None).unwrap();
    let mut server = HeadDeadline::new(stream, limits(), permit, true);
    // Less than the preface, and then nothing.
    client.write_all(b"PRI ").await.unwrap();
    let start = Instant::now();
    let mut preface = [0u8; 24];
    let error = tokio::time::timeout(Duration::from_secs(60), server.try_peek(&mut preface))
        .await
        .expect("the head deadline ends the peek")
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert!(
        start.elapsed() <= Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}
