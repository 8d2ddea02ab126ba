//! What a WebSocket session sends next, decided without I/O: where its cursor is, whether it
//! follows the ring or catches up (from the ring or the log), when it has lagged. The session
//! (`session.rs`) does what the decisions say: reads the log, writes frames, closes.
//!
//! What must stay true (the model test below checks it against a plain list of the events):
//! frames go out in seq order with no seq twice; every frame the filter wants after the start is
//! sent, unless the session is closed; a lagged session is told to resume after the last seq it
//! was sent, so that resuming there loses nothing.

use super::close;

/// Events read from the log per catch-up step.
pub const CATCHUP_CHUNK: usize = 256;

/// What the ring shows a session, through the session's filter.
pub trait RingView {
    /// One past the index of the newest published frame.
    fn published(&self) -> u64;
    /// The seq of the newest frame pushed.
    fn last_seq(&self) -> u64;
    /// The index of the first frame after `seq`, if the ring provably holds every frame after it.
    fn position_after(&self, seq: u64) -> Option<u64>;
    /// The seq of the frame at `index` and whether the filter wants it; `None` once evicted.
    fn frame(&self, index: u64) -> Option<(u64, bool)>;
}

/// A session's position in the event history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Last seq examined (sent or filtered out).
    cursor: u64,
    /// Last seq sent: where a lagged client resumes.
    delivered: u64,
    /// Ring index of the next frame, while following the ring.
    live: Option<u64>,
    /// Frames the session may fall behind the newest before it is closed as lagged.
    max_backlog: u64,
}

/// A catch-up step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// The ring holds the rest and it is well inside the lag bound: follow the ring now
    /// ([`Delivery::next_live`]).
    Live,
    /// Offer the ring's frames `from..to` in order ([`Delivery::offer`]), stopping at the first
    /// one evicted.
    Ring { from: u64, to: u64 },
    /// Read up to [`CATCHUP_CHUNK`] events of the log after `after`, then
    /// [`Delivery::log_read`] and [`Delivery::offer`] each.
    Log { after: u64 },
}

/// A step while following the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Live {
    /// Nothing new: wait for the ring to publish more.
    Idle,
    /// Write the frame at this ring index, then [`Delivery::sent_live`]; if it is gone by then,
    /// close with [`Delivery::lagged`].
    Send { index: u64 },
    /// End the session with this close code and reason.
    Close(u16, String),
}

/// What a catch-up read from the log found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogRead {
    /// Nothing after the cursor: ask the log where it starts ([`Delivery::retained_from`]),
    /// then wait a little and step again.
    Empty,
    /// Offer each event read, in order.
    Events,
    /// The log no longer holds the event after the cursor.
    Close(u16, String),
}

impl Delivery {
    /// A session resuming after `since`: it catches up first.
    pub fn resume(since: u64, max_backlog: u64) -> Delivery {
        Delivery {
            cursor: since,
            delivered: since,
            live: None,
            max_backlog,
        }
    }

    /// A session that starts live: after `seq`, following the ring from index `next`.
    pub fn live(seq: u64, next: u64, max_backlog: u64) -> Delivery {
        Delivery {
            cursor: seq,
            delivered: seq,
            live: Some(next),
            max_backlog,
        }
    }

    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The next catch-up step. From the ring when it provably holds everything after the cursor
    /// (live once the rest is within half the lag bound, so that a resume is not taken for lag),
    /// else from the log.
    pub fn catch_up(&mut self, ring: &impl RingView) -> CatchUp {
        match ring.position_after(self.cursor) {
            Some(pos) if ring.published().saturating_sub(pos) <= self.max_backlog / 2 => {
                self.live = Some(pos);
                CatchUp::Live
            }
            Some(pos) => CatchUp::Ring {
                from: pos,
                to: pos + CATCHUP_CHUNK as u64,
            },
            None => CatchUp::Log { after: self.cursor },
        }
    }

    /// What a log read after the cursor found, from the seq of its first event.
    pub fn log_read(&self, first: Option<u64>) -> LogRead {
        let Some(first) = first else {
            return LogRead::Empty;
        };
        match self.retained_from(first) {
            Some((code, reason)) => LogRead::Close(code, reason),
            None => LogRead::Events,
        }
    }

    /// The close for a log whose oldest event is `first`, if the event after the cursor is gone.
    /// Also after an empty read: retention may have removed the events after the cursor while
    /// none came after them, and the session must not wait for the next one to find out.
    pub fn retained_from(&self, first: u64) -> Option<(u16, String)> {
        (first > self.cursor + 1).then(|| {
            (
                close::RETENTION_EXHAUSTED,
                "retention-exhausted".to_string(),
            )
        })
    }

    /// An event met while catching up: whether to send it (new to this session and `wanted` by
    /// its filter). Sending is assumed to succeed; a failed write ends the session.
    pub fn offer(&mut self, seq: u64, wanted: bool) -> bool {
        if seq <= self.cursor {
            return false;
        }
        self.cursor = seq;
        if wanted {
            self.delivered = seq;
        }
        wanted
    }

    /// The next step while following the ring: skips what is old or filtered out, and closes a
    /// session more than `max_backlog` frames behind the newest or whose next frame is gone.
    pub fn next_live(&mut self, ring: &impl RingView) -> Live {
        let Some(mut pos) = self.live else {
            return Live::Idle;
        };
        let step = loop {
            let published = ring.published();
            if pos == published {
                break Live::Idle;
            }
            if ring.last_seq() <= self.cursor {
                // Every published frame is at or below the cursor (a session that starts ahead
                // of the projection, as during the boot replay): nothing to send, and nothing it
                // could be said to lag behind.
                pos = published;
                continue;
            }
            if published - pos > self.max_backlog {
                break self.close_lagged();
            }
            let Some((seq, wanted)) = ring.frame(pos) else {
                break self.close_lagged();
            };
            if wanted && seq > self.cursor {
                break Live::Send { index: pos };
            }
            self.cursor = self.cursor.max(seq);
            pos += 1;
        };
        self.live = Some(pos);
        step
    }

    /// The frame at `index`, with `seq`, was written.
    pub fn sent_live(&mut self, index: u64, seq: u64) {
        self.cursor = seq;
        self.delivered = seq;
        self.live = Some(index + 1);
    }

    /// The close code and reason for a session that fell behind: where to resume.
    pub fn lagged(&self) -> (u16, String) {
        (
            close::LAGGED,
            format!("lagged; resume with since={}", self.delivered),
        )
    }

    fn close_lagged(&self) -> Live {
        let (code, reason) = self.lagged();
        Live::Close(code, reason)
    }
}

#[cfg(test)]
mod tests;
