//! One WebSocket client for the tests: connect with the bearer token, read frames, see closes.

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
