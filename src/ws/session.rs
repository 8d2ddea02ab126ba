//! One WebSocket session: the I/O around [`super::delivery::Delivery`], which decides what to
//! send (resume from the log when the ring cannot prove it holds the history, then follow the
//! shared ring live, gap-free and duplicate-free); here the log is read, frames are written,
//! pings answered and the session closed.

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
use super::delivery::{CatchUp, Delivery, Live, LogRead, RingView, CATCHUP_CHUNK};
use super::writer::LazyBuf;
use super::MAX_INBOUND_BYTES;
use crate::event::decode::Decoder;
use crate::event::frame::{framed, write_frame};
use crate::event::subject::Pattern;
use crate::fanout::Ring;
use crate::app::Ctx;

/// A write that cannot make progress for this long means the peer stopped reading.
pub(super) const WRITE_STALL: Duration = Duration::from_secs(30);

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
    /// What to send next.
    delivery: Delivery,
    decoder: Option<Box<Decoder>>,
}

/// The ring as this session's filter sees it.
struct Filtered<'a> {
    ring: &'a Ring,
    filter: &'a Filter,
}

impl RingView for Filtered<'_> {
    fn published(&self) -> u64 {
        self.ring.published()
    }

    fn last_seq(&self) -> u64 {
        self.ring.last_seq()
    }

    fn position_after(&self, seq: u64) -> Option<u64> {
        self.ring.position_after(seq)
    }

    fn frame(&self, index: u64) -> Option<(u64, bool)> {
        // Most frames do not pass a filtered session's filter: decide in place.
        self.ring.peek(index, |f| {
            (f.seq, self.filter.matches(&f.subject, f.formation))
        })
    }
}

pub(super) async fn run(ctx: Arc<Ctx>, fut: UpgradeFut, since: Option<u64>, filter: Filter) {
    let Ok(ws) = fut.await else { return };
    let mut ws = WebSocket::after_handshake(LazyBuf::new(ws.into_inner()), Role::Server);
    ws.set_auto_close(false);
    ws.set_auto_pong(false);
    ws.set_max_message_size(MAX_INBOUND_BYTES);
    let (rd, wr) = ws.split(tokio::io::split);
    ctx.metrics.ws_connections.increment(1.0);
    let (end, mut wr) = match start(&ctx, since).await {
        Ok(delivery) => {
            let mut session = Session {
                ctx: ctx.clone(),
                filter,
                wr,
                delivery,
                decoder: None,
            };
            let end = session.serve(rd).await;
            (end, session.wr)
        }
        Err(end) => (end, wr),
    };
    if let End::Close(code, reason) = end {
        if code == close::LAGGED {
            ctx.metrics.ws_lagged.increment(1);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            wr.write_frame(Frame::close(code, reason.as_bytes()))
                .await?;
            wr.flush().await
        })
        .await;
    }
    ctx.metrics.ws_connections.decrement(1.0);
}

/// Where the session starts: after `since`, refused if the log no longer continues from there,
/// or else live from the ring's head.
async fn start(ctx: &Ctx, since: Option<u64>) -> Result<Delivery, End> {
    let unavailable = |_| End::Close(close::INTERNAL_ERROR, "event log unavailable".into());
    let ring = &ctx.ring;
    // Live only during the boot replay: the ring's head is somewhere in the history being
    // replayed, so "live" starts after the log's end as it is now, caught up from the log.
    let since = match since {
        None if !ctx.reader.peek(|s| s.replayed) => {
            Some(ctx.log.bounds().await.map_err(unavailable)?.last)
        }
        since => since,
    };
    let max_backlog = (ctx.config.ws_max_backlog as u64).min(ring.capacity() / 2);
    let Some(since) = since else {
        let (seq, next) = ring.live_start();
        return Ok(Delivery::live(seq, next, max_backlog));
    };
    let delivery = Delivery::resume(since, max_backlog);
    let bounds = ctx.log.bounds().await.map_err(unavailable)?;
    match delivery.retained_from(bounds.first) {
        Some((code, reason)) => Err(End::Close(code, reason)),
        None => Ok(delivery),
    }
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
    async fn serve(&mut self, rd: Reader) -> End {
        let mut heads = self.ctx.ring.subscribe();
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
            let catching_up = !self.delivery.is_live();
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

    /// Delivers every new frame from the ring, coalesced into as few writes as possible; ends
    /// the session when it lags (see [`Delivery::next_live`]).
    async fn drain(&mut self) -> Result<(), End> {
        let ring = self.ctx.ring.clone();
        let mut sent = 0u64;
        loop {
            let view = Filtered {
                ring: &ring,
                filter: &self.filter,
            };
            let index = match self.delivery.next_live(&view) {
                Live::Idle => break,
                Live::Close(code, reason) => return Err(End::Close(code, reason)),
                Live::Send { index } => index,
            };
            let Some(frame) = ring.get(index) else {
                let (code, reason) = self.delivery.lagged();
                return Err(End::Close(code, reason));
            };
            self.write(&frame.bytes).await?;
            self.delivery.sent_live(index, frame.seq);
            sent += 1;
        }
        self.finish_burst(sent).await
    }

    async fn write(&mut self, frame: &[u8]) -> Result<(), End> {
        self.wr
            .write_frame(Frame::text(Payload::Borrowed(frame)))
            .await
            .map_err(|_| End::Drop)
    }

    async fn finish_burst(&mut self, sent: u64) -> Result<(), End> {
        self.wr.flush().await.map_err(|_| End::Drop)?;
        if sent > 0 {
            self.ctx.metrics.ws_frames_sent.increment(sent);
        }
        Ok(())
    }

    /// One step of history, as [`Delivery::catch_up`] decides: from the ring, or from the log.
    async fn catch_up(&mut self) -> Result<(), End> {
        let ring = self.ctx.ring.clone();
        let view = Filtered {
            ring: &ring,
            filter: &self.filter,
        };
        let (from, to) = match self.delivery.catch_up(&view) {
            CatchUp::Live => {
                self.decoder = None;
                return self.drain().await;
            }
            CatchUp::Ring { from, to } => (from, to),
            CatchUp::Log { after } => return self.catch_up_from_log(after).await,
        };
        let mut sent = 0;
        for index in from..to {
            // An evicted frame ends the step; the next one reads the log.
            let Some(frame) = ring.get(index) else { break };
            let wanted = self.filter.matches(&frame.subject, frame.formation);
            if self.delivery.offer(frame.seq, wanted) {
                self.write(&frame.bytes).await?;
                sent += 1;
            }
        }
        self.finish_burst(sent).await
    }

    async fn catch_up_from_log(&mut self, after: u64) -> Result<(), End> {
        let events = self
            .ctx
            .log
            .read(after, CATCHUP_CHUNK)
            .await
            .map_err(|_| End::Close(close::INTERNAL_ERROR, "event log unavailable".into()))?;
        match self.delivery.log_read(events.first().map(|e| e.seq)) {
            LogRead::Events => {}
            LogRead::Close(code, reason) => return Err(End::Close(code, reason)),
            LogRead::Empty => {
                let bounds = self.ctx.log.bounds().await.map_err(|_| {
                    End::Close(close::INTERNAL_ERROR, "event log unavailable".into())
                })?;
                if let Some((code, reason)) = self.delivery.retained_from(bounds.first) {
                    return Err(End::Close(code, reason));
                }
                // Nothing beyond the cursor in the log yet, and the ring is still settling.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Ok(());
            }
        }
        let mut frame = Vec::new();
        let mut sent = 0u64;
        for raw in &events {
            let decoder = self.decoder.get_or_insert_with(Default::default);
            let wanted = framed(decoder.decode(&raw.payload).as_ref())
                .is_some_and(|f| self.filter.matches(&raw.subject, f.formation));
            if self.delivery.offer(raw.seq, wanted) {
                frame.clear();
                write_frame(&mut frame, raw.seq, &raw.payload);
                self.write(&frame).await?;
                sent += 1;
            }
        }
        self.finish_burst(sent).await
    }
}
