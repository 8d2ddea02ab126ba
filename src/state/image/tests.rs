//! A restored image is the state it was taken from, continues exactly like it, and is encoded to
//! the same bytes; damaged images are refused without a panic.

use proptest::prelude::*;

use super::*;
use crate::event::decode::Decoder;
use crate::state::apply::model::{op, Op};
use crate::state::cells::Threads;
use crate::state::{apply, CELL_LINK_WINDOW};

fn encode(state: &State) -> Vec<u8> {
    postcard::to_stdvec(&Image::new(state)).expect("an image always serializes")
}

/// Restores on one thread or two (by the seed's parity): both give the same state.
fn restore(bytes: &[u8], hash_seed: u64) -> Result<State, ImageError<postcard::Error>> {
    let threads = if hash_seed % 2 == 0 {
        Threads::One
    } else {
        Threads::Two
    };
    let mut de = postcard::Deserializer::from_bytes(bytes);
    super::restore(&mut de, bytes.len(), hash_seed, threads)
}

/// Log positions far enough apart, now and then, to cross link chunks and jump past the link
/// window (a full window is `links::tests`' business: four million links per case is slow).
fn gap() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => Just(1u64),
        1 => 2u64..3000,
        1 => Just(CELL_LINK_WINDOW + 5),
    ]
}

fn apply_all(state: &mut State, events: &[(u64, String)]) {
    let mut decoder = Decoder::new();
    for (seq, json) in events {
        let ev = decoder
            .decode(json.as_bytes())
            .expect("model events decode");
        apply(state, *seq, &ev);
    }
}

fn history(ops: &[Op], gaps: &[u64]) -> Vec<(u64, String)> {
    let mut seq = 0;
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            seq += gaps.get(i).copied().unwrap_or(1);
            (seq, op.json())
        })
        .collect()
}

/// What every route reads from a state, in the order readers see it.
fn observable(state: &State) -> String {
    let mut out = String::new();
    for f in state.formations() {
        let by_name = state.formation_by_name(&f.name).map(|g| g.id);
        out += &format!("{f:?} by-name={by_name:?}\n");
    }
    for c in state.cells() {
        let chain = state.cell_event_seqs(c.id(), usize::MAX);
        out += &format!("{:?} {:?} chain={chain:?}\n", c.identity, c.record);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_restored_image_is_the_state_and_continues_like_it(
        ops in prop::collection::vec(op(), 0..120),
        gaps in prop::collection::vec(gap(), 0..120),
        at in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        let events = history(&ops, &gaps);
        let cut = at.index(events.len() + 1);
        let mut full = State::default();
        apply_all(&mut full, &events);

        let mut prefix = State::default();
        apply_all(&mut prefix, &events[..cut]);
        let bytes = encode(&prefix);
        let mut restored = restore(&bytes, seed).expect("an image restores");
        prop_assert_eq!(&restored, &prefix);
        prop_assert_eq!(encode(&restored), bytes, "the same state gives the same bytes");

        apply_all(&mut restored, &events[cut..]);
        prop_assert_eq!(&restored, &full);
        prop_assert_eq!(observable(&restored), observable(&full));
        for (id, _) in full.orphan_heads.iter() {
            prop_assert_eq!(
                restored.cell_event_seqs(id, usize::MAX),
                full.cell_event_seqs(id, usize::MAX)
            );
        }
    }

    /// Any damage is an error or some other state, never a panic.
    #[test]
    fn damaged_images_never_panic(
        ops in prop::collection::vec(op(), 1..60),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut state = State::default();
        apply_all(&mut state, &history(&ops, &[]));
        let mut bytes = encode(&state);
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        let _ = restore(&bytes, 0);
        let _ = restore(&bytes[..cut.index(bytes.len())], 0);
    }
}

#[test]
fn texts_shared_by_cells_are_stored_once_and_shared_again() {
    let mut state = State::default();
    let events: Vec<(u64, String)> = (0..100)
        .map(|i| {
            let json = format!(
                r#"{{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":{{"cellId":"cell-{i}","specId":"a-rather-long-spec-identifier","runId":"run-7","correlation":{{"formationId":"6f9619ff-8b86-d011-b42d-00cf4fc964ff"}}}}}}"#
            );
            (i + 1, json)
        })
        .collect();
    apply_all(&mut state, &events);
    let bytes = encode(&state);
    let spec = b"a-rather-long-spec-identifier";
    let stored = bytes.windows(spec.len()).filter(|w| w == spec).count();
    assert_eq!(stored, 1);
    let restored = restore(&bytes, 1).unwrap();
    assert_eq!(restored, state);
    let a = restored.cell("cell-1").unwrap();
    let b = restored.cell("cell-2").unwrap();
    assert!(arcstr::ArcStr::ptr_eq(
        &a.identity.spec_id,
        &b.identity.spec_id
    ));
    assert_eq!(
        restored
            .cells_of_formation("6f9619ff-8b86-d011-b42d-00cf4fc964ff")
            .count(),
        100
    );
}

#[test]
fn a_cell_twice_is_refused() {
    let mut state = State::default();
    let json = r#"{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":{"cellId":"twin","specId":"s"}}"#;
    apply_all(&mut state, &[(1, json.into())]);
    let other = json.replace("twin", "twix");
    apply_all(&mut state, &[(2, other)]);
    let mut bytes = encode(&state);
    let at = bytes.windows(4).position(|w| w == b"twix").unwrap();
    bytes[at..at + 4].copy_from_slice(b"twin");
    let err = restore(&bytes, 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "inconsistent image: cell \"twin\" out of order or twice"
    );
}
