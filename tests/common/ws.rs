//! One WebSocket client for the tests: connect with the bearer token, read frames, see closes;
//! and, for tests that must speak what a client library will not (garbage frames, never
//! answering pings, exact refusal bytes), the raw upgrade request and a parser of raw frames.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TOKEN;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Upper bound on every wait for a connection or a message.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A socket on `/ws/events<query>` with the test token; panics if the upgrade fails.
pub(crate) async fn connect(addr: SocketAddr, query: &str) -> Ws {
    try_connect(addr, query, Some(TOKEN))
        .await
        .expect("upgrade")
}

/// A socket on `/ws/events<query>`, with `token` as the bearer when given.
pub(crate) async fn try_connect(
    addr: SocketAddr,
    query: &str,
    token: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{addr}/ws/events{query}")
        .into_client_request()
        .unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("connect timed out")
        .map(|(ws, _)| ws)
}

/// What the next message was.
#[derive(Debug)]
pub(crate) enum Got {
    Frame(u64, Value, String),
    Closed(Option<(u16, String)>),
}

/// The next text frame or the close, skipping pings and pongs; panics after [`WAIT`].
pub(crate) async fn next(ws: &mut Ws) -> Got {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no message within the wait");
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("frames are JSON");
                let seq = v["seq"].as_u64().expect("frame has a seq");
                return Got::Frame(seq, v["event"].clone(), t.to_string());
            }
            Some(Ok(Message::Close(c))) => {
                return Got::Closed(c.map(|c| (u16::from(c.code), c.reason.to_string())))
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Got::Closed(None),
        }
    }
}

/// The next `n` frames; panics on a close before them.
pub(crate) async fn frames(ws: &mut Ws, n: usize) -> Vec<(u64, Value)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match next(ws).await {
            Got::Frame(seq, ev, _) => out.push((seq, ev)),
            Got::Closed(c) => panic!("closed after {} frames: {c:?}", out.len()),
        }
    }
    out
}

/// The HTTP status of an upgrade the server refused (from [`try_connect`]'s error).
pub(crate) fn refused_status(e: tokio_tungstenite::tungstenite::Error) -> u16 {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => r.status().as_u16(),
        other => panic!("not an HTTP refusal: {other}"),
    }
}

/// The raw request upgrading `/ws/events<query>`, for a socket written by hand. `headers` are
/// extra header lines, each ending in `\r\n` (an `authorization` line, or none).
pub(crate) fn raw_upgrade(query: &str, host: &str, headers: &str) -> String {
    format!(
        "GET /ws/events{query} HTTP/1.1\r\nhost: {host}\r\n{headers}connection: upgrade\r\n\
         upgrade: websocket\r\nsec-websocket-version: 13\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// Splits what a server wrote on a raw upgraded socket into its response head and its frames:
/// (first byte, payload) each. Server frames are unmasked; the frames these tests read (pings,
/// closes) have payloads under 126 bytes.
pub(crate) fn raw_frames(got: &[u8]) -> (String, Vec<(u8, Vec<u8>)>) {
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(got)))
        + 4;
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let mut rest = &got[head_end..];
    let mut frames = Vec::new();
    while rest.len() >= 2 {
        let len = (rest[1] & 0x7f) as usize;
        let end = (2 + len).min(rest.len());
        frames.push((rest[0], rest[2..end].to_vec()));
        rest = &rest[end..];
    }
    (head, frames)
}

/// The code of a close frame's payload, if it carries one.
pub(crate) fn close_code(payload: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]))
}
