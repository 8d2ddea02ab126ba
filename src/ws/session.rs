//! One WebSocket session: resume from the log when the ring cannot prove it holds the history,
//! then follow the shared ring live. Delivery is gap-free and duplicate-free: the session keeps
//! a cursor (the last seq it examined) and skips everything at or below it.
#![allow(clippy::disallowed_methods, reason = "heartbeats and write-stall deadlines of a WebSocket session")]

use std::sync::Arc;
use std::time::Duration;

use fastwebsockets::upgrade::UpgradeFut;
use fastwebsockets::{
    Frame, OpCode, Payload, Role, WebSocket, WebSocketError, WebSocketRead, WebSocketWrite,
};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use uuid::Uuid;

use super::close;
use super::writer::LazyBuf;
use super::MAX_INBOUND_BYTES;
use crate::event::decode::Decoder;
use crate::event::frame::{framed, write_frame};
use crate::event::subject::Pattern;
use crate::fanout::Frame as RingFrame;
use crate::app::Ctx;

/// A write that cannot make progress for this long means the peer stopped reading.
pub(super) const WRITE_STALL: Duration = Duration::from_secs(30);
/// Events read from the log per catch-up step.
const CATCHUP_CHUNK: usize = 256;

type Io = LazyBuf<TokioIo<Upgraded>>;
type Reader = WebSocketRead<ReadHalf<Io>>;
type Writer = WebSocketWrite<WriteHalf<Io>>;

/// Which events a session wants.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub pattern: Option<Pattern>,
    pub formation: Option<Uuid>,
}

impl Filter {
    pub fn matches(&self, subject: &str, formation: Option<Uuid>) -> bool {
        self.pattern.as_ref().is_none_or(|p| p.matches(subject))
            && self.formation.is_none_or(|f| formation == Some(f))
    }
}

enum Inbound {
    Close(u16),
    Ping(Vec<u8>),
    Pong,
    Data,
}

/// Why a session ends, and what it tells the peer.
enum End {
    Close(u16, String),
    /// The connection is gone or unusable: nothing can be sent.
    Drop,
}

async fn next_inbound(mut rd: Reader) -> (Reader, Result<Inbound, WebSocketError>) {
    let mut no_obligations = |_: Frame<'_>| async { Ok::<(), std::io::Error>(()) };
    let res = rd
        .read_frame(&mut no_obligations)
        .await
        .map(|f| match f.opcode {
            OpCode::Close => {
                let code = f
                    .payload
                    .get(..2)
                    .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                Inbound::Close(code)
            }
            OpCode::Ping => Inbound::Ping(f.payload.to_vec()),
            OpCode::Pong => Inbound::Pong,
            _ => Inbound::Data,
        });
    (rd, res)
}

struct Session {
    ctx: Arc<Ctx>,
    filter: Filter,
    wr: Writer,
    /// Last seq examined (delivered or filtered out).
    cursor: u64,
    /// Last seq delivered: where a lagged client resumes.
    delivered: u64,
    /// Ring index of the next frame, while following the ring.
    live: Option<u64>,
    decoder: Option<Box<Decoder>>,
    max_backlog: u64,
}

pub(super) async fn run(ctx: Arc<Ctx>, fut: UpgradeFut, since: Option<u64>, filter: Filter) {
    let Ok(ws) = fut.await else { return };
    let mut ws = WebSocket::after_handshake(LazyBuf::new(ws.into_inner()), Role::Server);
    ws.set_auto_close(false);
    ws.set_auto_pong(false);
    ws.set_max_message_size(MAX_INBOUND_BYTES);
    let (rd, wr) = ws.split(tokio::io::split);
    ctx.metrics.ws_connections.increment(1.0);
    let ring = ctx.ring.clone();
    let mut session = Session {
        max_backlog: (ctx.config.ws_max_backlog as u64).min(ring.capacity() / 2),
        ctx: ctx.clone(),
        filter,
        wr,
        cursor: 0,
        delivered: 0,
        live: None,
        decoder: None,
    };
    let end = session.serve(rd, since).await;
    if let End::Close(code, reason) = end {
        if code == close::LAGGED {
            ctx.metrics.ws_lagged.increment(1);
        }
        let wr = &mut session.wr;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            wr.write_frame(Frame::close(code, reason.as_bytes()))
                .await?;
            wr.flush().await
        })
        .await;
    }
    ctx.metrics.ws_connections.decrement(1.0);
}

/// Runs a delivery step, ending the session if the peer stops reading.
async fn stalls(step: impl std::future::Future<Output = Result<(), End>>) -> Option<End> {
    match tokio::time::timeout(WRITE_STALL, step).await {
        Ok(Ok(())) => None,
        Ok(Err(end)) => Some(end),
        Err(_) => Some(End::Drop),
    }
}

impl Session {
    async fn serve(&mut self, rd: Reader, since: Option<u64>) -> End {
        let ring = self.ctx.ring.clone();
        let mut heads = ring.subscribe();
        // Live only during the boot replay: the ring's head is somewhere in the history being
        // replayed, so "live" starts after the log's end as it is now, caught up from the log.
        let since = match since {
            None if !self.ctx.reader.peek(|s| s.replayed) => match self.ctx.log.bounds().await {
                Ok(b) => Some(b.last),
                Err(_) => return End::Close(close::INTERNAL_ERROR, "event log unavailable".into()),
            },
            since => since,
        };
        match since {
            Some(since) => {
                self.cursor = since;
                self.delivered = since;
                match self.ctx.log.bounds().await {
                    Ok(b) if since.saturating_add(1) < b.first => {
                        return End::Close(close::RETENTION_EXHAUSTED, "retention-exhausted".into())
                    }
                    Ok(_) => {}
                    Err(_) => return End::Close(close::INTERNAL_ERROR, "event log unavailable".into()),
                }
            }
            None => {
                // Live only: start after the newest published frame. Should a round larger
                // than the ring's byte bound have evicted it already, after the newest pushed
                // one: the session starts a little later, still without a gap.
                let published = ring.published();
                self.cursor = published
                    .checked_sub(1)
                    .and_then(|i| ring.get(i))
                    .map_or_else(|| ring.last_seq().max(ring.floor()), |f| f.seq);
                self.delivered = self.cursor;
                self.live = Some(published);
            }
        }
        let mut inbound = Box::pin(next_inbound(rd));
        let start = Instant::now();
        let (ping_every, pong_timeout) = (
            self.ctx.config.ws_ping_every,
            self.ctx.config.ws_pong_timeout,
        );
        let mut ping = interval_at(start + ping_every, ping_every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_pong = start;
        let shutdown = self.ctx.shutdown.clone();
        loop {
            let catching_up = self.live.is_none();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return End::Close(close::GOING_AWAY, "server shutting down".into()),
                (rd, res) = &mut inbound => {
                    match res {
                        Ok(Inbound::Close(code)) => {
                            // Echo the peer's code (1000 when it sent none) and end.
                            let code = if code == 1005 { 1000 } else { code };
                            return End::Close(code, String::new());
                        }
                        Ok(Inbound::Ping(payload)) => {
                            if self.write_control(Frame::pong(Payload::Owned(payload))).await.is_err() {
                                return End::Drop;
                            }
                        }
                        Ok(Inbound::Pong) => last_pong = Instant::now(),
                        Ok(Inbound::Data) => {}
                        Err(WebSocketError::FrameTooLarge) => {
                            return End::Close(close::MESSAGE_TOO_BIG, format!("message exceeds {MAX_INBOUND_BYTES} bytes"))
                        }
                        Err(WebSocketError::InvalidUTF8) => return End::Close(close::INVALID_DATA, "invalid UTF-8".into()),
                        Err(WebSocketError::UnexpectedEOF) | Err(WebSocketError::IoError(_)) => return End::Drop,
                        Err(e) => return End::Close(close::PROTOCOL_ERROR, format!("protocol error: {e}")),
                    }
                    inbound.set(next_inbound(rd));
                }
                _ = ping.tick() => {
                    if last_pong.elapsed() > pong_timeout {
                        return End::Close(close::POLICY_VIOLATION, "pong timeout".into());
                    }
                    if self.write_control(Frame::new(true, OpCode::Ping, None, Payload::Borrowed(&[]))).await.is_err() {
                        return End::Drop;
                    }
                }
                _ = std::future::ready(()), if catching_up => {
                    if let Some(end) = stalls(self.catch_up()).await {
                        return end;
                    }
                }
                changed = heads.changed(), if !catching_up => {
                    if changed.is_err() {
                        return End::Close(close::GOING_AWAY, "server shutting down".into());
                    }
                    if let Some(end) = stalls(self.drain()).await {
                        return end;
                    }
                }
            }
        }
    }

    async fn write_control(&mut self, frame: Frame<'_>) -> Result<(), WebSocketError> {
        tokio::time::timeout(WRITE_STALL, async {
            self.wr.write_frame(frame).await?;
            self.wr.flush().await
        })
        .await
        .unwrap_or(Err(WebSocketError::ConnectionClosed))
    }

    /// Delivers every new frame from the ring, coalesced into as few writes as possible. A
    /// subscriber more than `max_backlog` frames behind the newest (or whose next frame was
    /// already overwritten) is closed with 4008 and told where to resume.
    async fn drain(&mut self) -> Result<(), End> {
        let ring = self.ctx.ring.clone();
        let Some(mut pos) = self.live else {
            return Ok(());
        };
        let mut sent = 0u64;
        loop {
            let published = ring.published();
            if pos == published {
                break;
            }
            if ring.last_seq() <= self.cursor {
                // Every published frame is at or below the cursor (a session that starts ahead
                // of the projection, as during the boot replay): nothing to deliver, and nothing
                // it could be said to lag behind.
                pos = published;
                self.live = Some(pos);
                continue;
            }
            let lagged = || {
                End::Close(
                    close::LAGGED,
                    format!("lagged; resume with since={}", self.delivered),
                )
            };
            if published - pos > self.max_backlog {
                return Err(lagged());
            }
            // Most frames do not pass a filtered session's filter: decide in place, and take a
            // reference only to frames that will be written.
            let (seq, wanted) = ring
                .peek(pos, |f| {
                    (
                        f.seq,
                        f.seq > self.cursor && self.filter.matches(&f.subject, f.formation),
                    )
                })
                .ok_or_else(lagged)?;
            if wanted {
                let frame = ring.get(pos).ok_or_else(lagged)?;
                sent += self.offer(&frame).await?;
            } else {
                self.cursor = self.cursor.max(seq);
            }
            pos += 1;
            self.live = Some(pos);
        }
        self.finish_burst(sent).await
    }

    /// Writes a ring frame if it is new to this session and passes its filter; returns 1 if sent.
    async fn offer(&mut self, frame: &RingFrame) -> Result<u64, End> {
        if frame.seq <= self.cursor {
            return Ok(0);
        }
        self.cursor = frame.seq;
        if !self.filter.matches(&frame.subject, frame.formation) {
            return Ok(0);
        }
        self.wr
            .write_frame(Frame::text(Payload::Borrowed(&frame.bytes[..])))
            .await
            .map_err(|_| End::Drop)?;
        self.delivered = frame.seq;
        Ok(1)
    }

    async fn finish_burst(&mut self, sent: u64) -> Result<(), End> {
        self.wr.flush().await.map_err(|_| End::Drop)?;
        if sent > 0 {
            self.ctx.metrics.ws_frames_sent.increment(sent);
        }
        Ok(())
    }

    /// One step of history: from the ring when it still holds the frames after the cursor, else
    /// from the log. Goes live once the remaining backlog is well inside the lag bound, so a
    /// resume is never mistaken for lag.
    async fn catch_up(&mut self) -> Result<(), End> {
        let ring = self.ctx.ring.clone();
        if let Some(pos) = ring.position_after(self.cursor) {
            if ring.published().saturating_sub(pos) <= self.max_backlog / 2 {
                self.live = Some(pos);
                self.decoder = None;
                return self.drain().await;
            }
            let mut sent = 0;
            for index in pos..pos + CATCHUP_CHUNK as u64 {
                // An overwritten frame ends the step; the next one reads the log.
                let Some(frame) = ring.get(index) else { break };
                sent += self.offer(&frame).await?;
            }
            return self.finish_burst(sent).await;
        }
        let events = self
            .ctx
            .log
            .read(self.cursor, CATCHUP_CHUNK)
            .await
            .map_err(|_| End::Close(close::INTERNAL_ERROR, "event log unavailable".into()))?;
        let Some(first) = events.first() else {
            // Nothing beyond the cursor in the log yet, and the ring is still settling.
            tokio::time::sleep(Duration::from_millis(20)).await;
            return Ok(());
        };
        if first.seq > self.cursor + 1 {
            return Err(End::Close(close::RETENTION_EXHAUSTED, "retention-exhausted".into()));
        }
        let decoder = self.decoder.get_or_insert_with(Default::default);
        let mut frame = Vec::new();
        let mut sent = 0u64;
        for raw in &events {
            self.cursor = raw.seq;
            let Some(framed) = framed(decoder.decode(&raw.payload).as_ref()) else {
                continue;
            };
            if !self.filter.matches(&raw.subject, framed.formation) {
                continue;
            }
            frame.clear();
            write_frame(&mut frame, raw.seq, &raw.payload);
            self.wr
                .write_frame(Frame::text(Payload::Borrowed(&frame)))
                .await
                .map_err(|_| End::Drop)?;
            self.delivered = raw.seq;
            sent += 1;
        }
        self.finish_burst(sent).await
    }
}
