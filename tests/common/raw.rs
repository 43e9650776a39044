//! Raw HTTP/1.1 over a TCP connection: a request sent exactly as written (no client
//! library normalizes its target, its headers or their order), and the answer read back
//! off the wire.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// An answer as read off the wire: its status, its headers (names in lower case, in the
/// order sent) and its body with the framing undone.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    /// The first value of the header `name`, whatever its case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(have, _)| have.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Writes `request` to `port` on the loopback, from the loopback address `source`, and
/// reads until the server closes the connection. A reset after some bytes keeps those
/// bytes. `Err`: no connection, or the request could not be sent. Panics when no close
/// comes within `within`: a guard against a hang, not a timed assertion.
pub async fn exchange(
    source: Ipv4Addr,
    port: u16,
    request: &[u8],
    within: Duration,
) -> std::io::Result<Vec<u8>> {
    let exchange = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind((source, 0).into())?;
        let mut stream = socket.connect((Ipv4Addr::LOCALHOST, port).into()).await?;
        stream.write_all(request).await?;
        let mut received = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
        }
        Ok(received)
    };
    tokio::time::timeout(within, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer from port {port} within {within:?}"))
}

/// The answer at the start of `raw`, once it is complete. `closed`: nothing more will
/// come, so a body without framing ends here; `to_head`: the answer to a HEAD, which has
/// no body whatever its headers say.
pub fn parse_reply(raw: &[u8], closed: bool, to_head: bool) -> Option<RawReply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let header = |name: &str| {
        headers
            .iter()
            .find(|(have, _)| have == name)
            .map(|(_, value)| value.as_str())
    };
    let body = if to_head {
        Vec::new()
    } else if header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(length) = header("content-length") {
        let length: usize = length.parse().ok()?;
        rest.get(..length)?.to_vec()
    } else if closed || status == 303 || status == 304 || status == 204 {
        // Without framing the body runs to the close; these statuses carry none.
        rest.to_vec()
    } else {
        return None;
    };
    Some(RawReply {
        status,
        headers,
        body,
    })
}

/// A chunked body, once its last chunk has arrived.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}
