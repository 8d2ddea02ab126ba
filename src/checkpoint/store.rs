//! Where checkpoints are kept: the [`CheckpointStore`] interface, object names, and the bounds
//! every store enforces. A store keeps whole checkpoints only: a reader never sees one half
//! written, whatever happened to the writer.

use bytes::Bytes;

use crate::log::{BoxFuture, LogIdentity};

/// Checkpoints kept: the newest and two older ones, in case the newest is unreadable.
pub const KEEP: usize = 3;
/// Largest checkpoint written or read (about 2 × 10^7 cells). Larger ones are refused when
/// written and skipped when found.
pub const MAX_CHECKPOINT_BYTES: u64 = 4 << 30;

/// A checkpoint as a store lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The log position its name says (the header inside is what counts).
    pub seq: u64,
    /// The tag of the log its name says (see [`log_tag`]).
    pub log_tag: String,
    pub name: String,
    pub size: u64,
}

/// A short tag of a log's identity, in checkpoint names: eight hex digits of a CRC-32 of the
/// stream and its epoch. A checkpoint named for another log (a stream deleted and created again,
/// a data directory whose log file was replaced) is passed over without being read, and never
/// takes the place of this log's own when old ones are removed. The header inside still decides.
pub fn log_tag(log: &LogIdentity) -> String {
    format!("{:08x}", crc32fast::hash(format!("{}\0{}", log.stream, log.epoch).as_bytes()))
}

/// `checkpoint-<seq, 20 digits>-<log tag>`: names of one log sort like seqs, and one log position
/// has one name, so two servers that checkpoint the same position write the same object (with
/// the same bytes).
pub fn name_of(seq: u64, log: &LogIdentity) -> String {
    format!("checkpoint-{seq:020}-{}", log_tag(log))
}

/// The seq and log tag in a checkpoint's name; `None` for any other name.
pub fn parse_name(name: &str) -> Option<(u64, &str)> {
    let rest = name.strip_prefix("checkpoint-")?;
    let (digits, tag) = rest.split_once('-')?;
    let hex = |t: &str| t.len() == 8 && t.bytes().all(|b| b.is_ascii_hexdigit());
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) || !hex(tag) {
        return None;
    }
    Some((digits.parse().ok()?, tag))
}

/// A listed checkpoint from its name and size, if the name is a checkpoint's.
pub fn stored(name: &str, size: u64) -> Option<Stored> {
    let (seq, tag) = parse_name(name)?;
    Some(Stored {
        seq,
        log_tag: tag.to_owned(),
        name: name.to_owned(),
        size,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("checkpoint store unavailable: {0}")]
    Unavailable(String),
    #[error("checkpoint store I/O: {0}")]
    Io(String),
    #[error("checkpoint of {size} bytes exceeds the {MAX_CHECKPOINT_BYTES}-byte limit")]
    TooLarge { size: u64 },
}

pub trait CheckpointStore: Send + Sync + 'static {
    /// Where checkpoints go, for logs.
    fn describe(&self) -> String;

    /// The checkpoints kept, newest (highest seq) first.
    fn list(&self) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>>;

    /// One checkpoint's bytes, at most [`MAX_CHECKPOINT_BYTES`].
    fn read(&self, name: &str) -> BoxFuture<'_, Result<Vec<u8>, StoreError>>;

    /// Stores a checkpoint under `name` (see [`name_of`]), all or nothing, durably once this
    /// returns.
    fn write(&self, name: &str, bytes: Bytes) -> BoxFuture<'_, Result<(), StoreError>>;

    fn remove(&self, name: &str) -> BoxFuture<'_, Result<(), StoreError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_seq_and_the_log_and_sort_like_the_seq() {
        let log = LogIdentity {
            stream: "CELLOS_EVENTS".into(),
            epoch: "1".into(),
        };
        let other = LogIdentity {
            epoch: "2".into(),
            ..log.clone()
        };
        let tag = log_tag(&log);
        assert_eq!(tag.len(), 8);
        assert_ne!(tag, log_tag(&other));
        assert_eq!(name_of(42, &log), format!("checkpoint-00000000000000000042-{tag}"));
        assert_eq!(parse_name(&name_of(42, &log)), Some((42, tag.as_str())));
        assert_eq!(parse_name(&name_of(u64::MAX, &log)).map(|p| p.0), Some(u64::MAX));
        assert!(name_of(9, &log) < name_of(10, &log));
        for bad in [
            "checkpoint-42-0000abcd",
            "checkpoint-0000000000000000004x-0000abcd",
            "checkpoint-00000000000000000042",
            "checkpoint-00000000000000000042-xyz",
            "x",
            ".partial",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}
