//! Round trips, and every kind of damage refused for what it is.

use super::*;
use crate::event::decode::Decoder;
use crate::state::apply;

fn log() -> LogIdentity {
    LogIdentity {
        stream: "CELLOS_EVENTS".into(),
        epoch: "1700000000000000000".into(),
    }
}

fn sample() -> State {
    let mut state = State::default();
    let mut decoder = Decoder::new();
    let events = [
        r#"{"type":"dev.cellos.events.cell.formation.v1.created","time":"2026-01-01T00:00:00Z","data":{"formationId":"6f9619ff-8b86-d011-b42d-00cf4fc964ff","formationName":"f","document":{"name":"f"}}}"#,
        r#"{"type":"dev.cellos.events.cell.lifecycle.v1.started","time":"2026-01-01T00:00:01Z","data":{"cellId":"c1","specId":"s","correlation":{"formationId":"6f9619ff-8b86-d011-b42d-00cf4fc964ff"}}}"#,
        r#"{"type":"dev.cellos.events.cell.command.v1.completed","data":{"cellId":"c1","specId":"s","exitCode":3}}"#,
    ];
    for (i, json) in events.iter().enumerate() {
        let ev = decoder.decode(json.as_bytes()).unwrap();
        apply(&mut state, i as u64 + 1, &ev);
    }
    state
}

#[test]
fn a_checkpoint_opens_and_restores_to_its_state() {
    let state = sample();
    let bytes = encode(&log(), 3, &state).unwrap();
    assert_eq!(&bytes[..8], b"CELLOSCP");
    assert_eq!(bytes, encode(&log(), 3, &state).unwrap(), "deterministic");
    let opened = open(&bytes).unwrap();
    assert_eq!(
        opened.header,
        Header {
            log: log(),
            seq: 3,
            formations: 1,
            cells: 1
        }
    );
    assert_eq!(opened.restore(42).unwrap(), state);
}

#[test]
fn the_head_in_place_is_the_envelope() {
    let state = sample();
    let bytes = encode(&log(), 3, &state).unwrap();
    let header = Header {
        log: log(),
        seq: 3,
        formations: 1,
        cells: 1,
    };
    let payload = postcard::to_stdvec(&(&header, Image::new(&state))).unwrap();
    let envelope = Envelope {
        magic: MAGIC,
        version: FORMAT_VERSION,
        checksum: crc32fast::hash(&payload),
        payload: Blob(&payload),
    };
    assert_eq!(bytes, postcard::to_stdvec(&envelope).unwrap());
}

#[test]
fn damage_is_named() {
    let bytes = encode(&log(), 3, &sample()).unwrap();
    assert_eq!(open(b"").err(), Some(FormatError::NotACheckpoint));
    assert_eq!(
        open(b"SQLite format 3\0").err(),
        Some(FormatError::NotACheckpoint)
    );

    // Every truncation is refused, and none panics.
    for len in 0..bytes.len() {
        let err = open(&bytes[..len])
            .err()
            .expect("a truncated checkpoint is refused");
        assert!(
            matches!(err, FormatError::NotACheckpoint | FormatError::Malformed(_)),
            "{len}: {err:?}"
        );
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(matches!(
        open(&longer).err(),
        Some(FormatError::Malformed(_))
    ));

    // One flipped bit in the payload: the checksum catches it.
    let mut flipped = bytes.to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x10;
    assert_eq!(open(&flipped).err(), Some(FormatError::Checksum));
}

#[test]
fn another_version_is_recognised_as_such() {
    let future = postcard::to_stdvec(&(MAGIC, 2u32, 0u32, Blob(b"whatever comes in v2"))).unwrap();
    assert_eq!(open(&future).err(), Some(FormatError::UnknownVersion(2)));
    let mut bytes = encode(&log(), 3, &sample()).unwrap().to_vec();
    bytes[8] = 7;
    assert_eq!(open(&bytes).err(), Some(FormatError::UnknownVersion(7)));
}

#[test]
fn a_header_that_does_not_match_its_image_is_refused() {
    let state = sample();
    let header = Header {
        log: log(),
        seq: 3,
        formations: 1,
        cells: 2,
    };
    let payload = postcard::to_stdvec(&(&header, Image::new(&state))).unwrap();
    let bytes = postcard::to_stdvec(&Envelope {
        magic: MAGIC,
        version: FORMAT_VERSION,
        checksum: crc32fast::hash(&payload),
        payload: Blob(&payload),
    })
    .unwrap();
    let err = open(&bytes).unwrap().restore(0).err().unwrap();
    assert!(matches!(err, FormatError::Invalid(_)), "{err:?}");
}
