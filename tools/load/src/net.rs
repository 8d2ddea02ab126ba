//! Minimal clients: keep-alive HTTP/1.1 requests and the client side of a WebSocket handshake.

use anyhow::{bail, Context, Result};
use fastwebsockets::{Role, WebSocket};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 connection.
pub struct Http {
    stream: BufReader<TcpStream>,
    host: String,
    token: String,
}

impl Http {
    pub async fn connect(addr: &str, token: &str) -> Result<Http> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        tcp.set_nodelay(true)?;
        Ok(Http {
            stream: BufReader::new(tcp),
            host: addr.to_owned(),
            token: token.to_owned(),
        })
    }

    /// Sends a request and returns (status, body).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
            self.host,
            self.token,
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                bail!("connection closed in headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse()?;
                }
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

/// Opens `/ws/events?<query>` and completes the handshake by hand; frames are then read with
/// fastwebsockets.
pub async fn websocket(addr: &str, token: &str, query: &str) -> Result<WebSocket<TcpStream>> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    tcp.set_nodelay(true)?;
    let req = format!(
        "GET /ws/events{query} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await?;
    // Read the response head byte by byte: nothing after it may be consumed here.
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await? == 0 {
            bail!("connection closed during the handshake");
        }
        head.push(byte[0]);
        if head.len() > 8192 {
            bail!("handshake response too large");
        }
    }
    let text = String::from_utf8_lossy(&head);
    if !text.starts_with("HTTP/1.1 101") {
        bail!("upgrade refused: {}", text.lines().next().unwrap_or(""));
    }
    let mut ws = WebSocket::after_handshake(tcp, Role::Client);
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    Ok(ws)
}
