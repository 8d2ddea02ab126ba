//! The checkpoint file: a versioned, checksummed envelope around the projection's image and the
//! log position and log identity it belongs to. Pure: bytes in, bytes out.
//!
//! Layout (postcard throughout, no hand-written encoding):
//!
//! ```text
//! envelope  = (magic "CELLOSCP", version: u32, checksum: u32, payload: bytes)
//! payload   = (header, image)          for version 1
//! header    = (log: LogIdentity, seq: u64, formations: u64, cells: u64)
//! image     = state::image::Image
//! ```
//!
//! `magic` and `version` come first in every version, so a reader knows a checkpoint it cannot
//! read (a newer format) from a damaged one. `checksum` is the CRC-32 of `payload`, checked
//! before anything in it is trusted. The same state at the same position always encodes to the
//! same bytes: the image is a function of the state, and nothing else (no time, no writer) is in
//! the file.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::log::LogIdentity;
use crate::state::cells::Threads;
use crate::state::image::{self, Blob, Image};
use crate::state::State;

/// First bytes of every checkpoint.
pub const MAGIC: [u8; 8] = *b"CELLOSCP";
/// The format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// What a checkpoint says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The log the projection was built from.
    pub log: LogIdentity,
    /// Every event through this seq is applied, and none after it.
    pub seq: u64,
    pub formations: u64,
    pub cells: u64,
}

#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    magic: [u8; 8],
    version: u32,
    checksum: u32,
    #[serde(borrow)]
    payload: Blob<'a>,
}

/// Why bytes are not a usable checkpoint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not a checkpoint (no CELLOSCP header)")]
    NotACheckpoint,
    #[error("checkpoint format version {0}, this build reads version {FORMAT_VERSION}")]
    UnknownVersion(u32),
    #[error("truncated or malformed checkpoint: {0}")]
    Malformed(String),
    #[error("checkpoint checksum mismatch (the file is damaged)")]
    Checksum,
    #[error("inconsistent checkpoint: {0}")]
    Invalid(String),
    /// Writing one failed (serializing into memory does not, unless memory runs out).
    #[error("encoding a checkpoint: {0}")]
    Encode(String),
}

impl FormatError {
    /// A short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            FormatError::NotACheckpoint | FormatError::Malformed(_) => "malformed",
            FormatError::UnknownVersion(_) => "unknown_version",
            FormatError::Checksum => "checksum",
            FormatError::Invalid(_) | FormatError::Encode(_) => "inconsistent",
        }
    }
}

fn malformed(e: postcard::Error) -> FormatError {
    FormatError::Malformed(e.to_string())
}

/// Room kept in front of the payload for the envelope's head: the magic (8 bytes), the version
/// and the checksum (varints, at most 5 bytes each) and the payload's length (a varint, at most
/// 10).
const HEAD_ROOM: usize = 28;

/// The envelope up to its payload's bytes: postcard writes a byte string as its length (a varint)
/// then the bytes, so this head followed by the payload is exactly the [`Envelope`]'s encoding
/// (`the_head_in_place_is_the_envelope` checks it).
#[derive(Serialize)]
struct Head {
    magic: [u8; 8],
    version: u32,
    checksum: u32,
    payload_len: usize,
}

/// The checkpoint of `state`, which holds every event of `log` through `seq`.
///
/// The payload is serialized once, into a buffer sized from the state, behind room for the head,
/// which goes in place when the checksum is known: no copy of the payload, no buffer regrown
/// (memory traffic is what a checkpoint costs the ingest thread on the other core).
pub fn encode(log: &LogIdentity, seq: u64, state: &State) -> Result<Bytes, FormatError> {
    let header = Header {
        log: log.clone(),
        seq,
        formations: state.formation_count() as u64,
        cells: state.cell_count() as u64,
    };
    let expected = 96 * state.cell_count() + 2048 * state.formation_count() + (1 << 20);
    let mut buf = Vec::with_capacity(HEAD_ROOM + expected);
    buf.resize(HEAD_ROOM, 0);
    let encoding = |e: postcard::Error| FormatError::Encode(e.to_string());
    let mut buf = postcard::to_extend(&(&header, Image::new(state)), buf).map_err(encoding)?;
    let payload = &buf[HEAD_ROOM..];
    let head = Head {
        magic: MAGIC,
        version: FORMAT_VERSION,
        checksum: crc32fast::hash(payload),
        payload_len: payload.len(),
    };
    let head = postcard::to_stdvec(&head).map_err(encoding)?;
    let start = HEAD_ROOM - head.len();
    buf[start..HEAD_ROOM].copy_from_slice(&head);
    Ok(Bytes::from(buf).slice(start..))
}

/// A checkpoint whose envelope and header were checked; its state is not restored yet (see
/// [`Opened::restore`]), so a checkpoint of the wrong log costs no more than its checksum.
pub struct Opened<'a> {
    pub header: Header,
    image: &'a [u8],
}

/// Checks magic, version and checksum, and reads the header.
pub fn open(bytes: &[u8]) -> Result<Opened<'_>, FormatError> {
    let (magic, version): ([u8; 8], u32) = postcard::take_from_bytes(bytes)
        .map(|(prefix, _)| prefix)
        .map_err(|_| FormatError::NotACheckpoint)?;
    if magic != MAGIC {
        return Err(FormatError::NotACheckpoint);
    }
    if version != FORMAT_VERSION {
        return Err(FormatError::UnknownVersion(version));
    }
    let (envelope, rest): (Envelope<'_>, _) =
        postcard::take_from_bytes(bytes).map_err(malformed)?;
    if !rest.is_empty() {
        return Err(FormatError::Malformed(format!(
            "{} bytes after the end of the checkpoint",
            rest.len()
        )));
    }
    let payload = envelope.payload.0;
    if crc32fast::hash(payload) != envelope.checksum {
        return Err(FormatError::Checksum);
    }
    open_payload(payload)
}

/// The payload inside an envelope (header, then image) with no checksum to check: what
/// [`open`] continues with, and what the fuzz target feeds directly.
pub fn open_payload(payload: &[u8]) -> Result<Opened<'_>, FormatError> {
    let (header, image): (Header, _) = postcard::take_from_bytes(payload).map_err(malformed)?;
    Ok(Opened { header, image })
}

impl Opened<'_> {
    /// Builds the state, on two threads where it can (see `Cells::from_parts`); the writer's cell
    /// lookup hashes with `hash_seed`.
    pub fn restore(&self, hash_seed: u64) -> Result<State, FormatError> {
        self.restore_with(hash_seed, Threads::Two)
    }

    /// [`Opened::restore`] on as many threads as told: the instruction-count gate counts one.
    pub fn restore_with(&self, hash_seed: u64, threads: Threads) -> Result<State, FormatError> {
        let mut de = postcard::Deserializer::from_bytes(self.image);
        let restored = image::restore(&mut de, self.image.len(), hash_seed, threads);
        let state = restored.map_err(|e| match e {
            image::ImageError::Invalid(why) => FormatError::Invalid(why),
            image::ImageError::Malformed(e) => malformed(e),
        })?;
        let rest = de.finalize().map_err(malformed)?;
        if !rest.is_empty() {
            return Err(FormatError::Malformed("bytes after the image".into()));
        }
        let (formations, cells) = (state.formation_count() as u64, state.cell_count() as u64);
        if (formations, cells) != (self.header.formations, self.header.cells) {
            return Err(FormatError::Invalid(format!(
                "the header counts {} formations and {} cells, the image holds {formations} and \
                 {cells}",
                self.header.formations, self.header.cells
            )));
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests;
