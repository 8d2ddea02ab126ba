//! Where checkpoints are kept: the [`CheckpointStore`] interface, object names, and the bounds
//! every store enforces. A store keeps whole checkpoints only: a reader never sees one half
//! written, whatever happened to the writer.

use bytes::Bytes;

use crate::log::BoxFuture;

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
    pub name: String,
    pub size: u64,
}

/// `checkpoint-<seq, 20 digits>`: names sort like seqs, and one log position has one name, so
/// two servers that checkpoint the same position write the same object (with the same bytes).
pub fn name_of(seq: u64) -> String {
    format!("checkpoint-{seq:020}")
}

/// The seq in a checkpoint's name; `None` for any other name.
pub fn seq_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("checkpoint-")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
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

    /// Stores the checkpoint at `seq` under [`name_of`]`(seq)`, all or nothing, durably once this
    /// returns.
    fn write(&self, seq: u64, bytes: Bytes) -> BoxFuture<'_, Result<(), StoreError>>;

    fn remove(&self, name: &str) -> BoxFuture<'_, Result<(), StoreError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_seq_and_sort_like_it() {
        assert_eq!(name_of(42), "checkpoint-00000000000000000042");
        assert_eq!(seq_of(&name_of(42)), Some(42));
        assert_eq!(seq_of(&name_of(u64::MAX)), Some(u64::MAX));
        assert!(name_of(9) < name_of(10));
        for other in ["checkpoint-42", "checkpoint-0000000000000000004x", "x", ".tmp"] {
            assert_eq!(seq_of(other), None, "{other}");
        }
    }
}
