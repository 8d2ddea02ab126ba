//! The frame subscribers receive for an event, `{"seq":N,"event":<payload>}`: which events get
//! one, the formation they can be filtered by, and its bytes. The fan-out ring (live), the
//! WebSocket catch-up from the log and the `/v1/events` page all use these two functions, so a
//! frame read from the log is byte for byte the one the ring held.

use bytes::BufMut;
use uuid::Uuid;

use super::decode::DecodeError;
use super::Event;

/// Bytes a frame adds around its payload, at most (`{"seq":`, 20 digits, `,"event":`, `}`).
pub const FRAME_OVERHEAD_MAX: usize = 7 + 20 + 9 + 1;

/// An event that gets a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framed {
    /// What `formation=` filters match: the event's formation id when it is a UUID.
    pub formation: Option<Uuid>,
}

/// Whether a payload, as decoded, gets a frame: every JSON payload does (a non-object value is
/// embedded verbatim), anything else (not JSON, too large) does not.
pub fn framed(decoded: Result<&Event<'_>, &DecodeError>) -> Option<Framed> {
    match decoded {
        Ok(ev) => Some(Framed {
            formation: ev.formation_id.and_then(|f| Uuid::parse_str(f).ok()),
        }),
        Err(DecodeError::NotObject(_)) => Some(Framed { formation: None }),
        Err(_) => None,
    }
}

/// Appends the frame of the event `seq` with `payload` to `out`.
#[inline]
pub fn write_frame<B: BufMut>(out: &mut B, seq: u64, payload: &[u8]) {
    out.put_slice(b"{\"seq\":");
    out.put_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.put_slice(b",\"event\":");
    out.put_slice(payload);
    out.put_u8(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode::Decoder;
    use proptest::prelude::*;

    fn framed_bytes(payload: &[u8]) -> Option<Framed> {
        let mut decoder = Decoder::new();
        framed(decoder.decode(payload).as_ref())
    }

    #[test]
    fn json_payloads_get_a_frame_others_do_not() {
        let event = include_str!("../../contracts/examples/events/cell-lifecycle-started.json");
        let formation = framed_bytes(event.as_bytes()).unwrap().formation;
        assert_eq!(
            formation.map(|f| f.hyphenated().to_string()).as_deref(),
            Some("6f1c2a4e-8b3d-4f7a-9c21-5e0d7b8a3f14")
        );
        assert_eq!(framed_bytes(b"[1,2]"), Some(Framed { formation: None }));
        assert_eq!(
            framed_bytes(b"{\"data\":{\"formationId\":\"x\"}}").map(|f| f.formation),
            Some(None)
        );
        assert_eq!(framed_bytes(b"{not json"), None);
    }

    #[test]
    fn the_largest_overhead_is_a_twenty_digit_seq() {
        let mut out = Vec::new();
        write_frame(&mut out, u64::MAX, b"");
        assert_eq!(out.len(), FRAME_OVERHEAD_MAX);
    }

    proptest! {
        /// A frame is JSON whose `seq` is the seq and whose `event` is the payload, verbatim.
        #[test]
        fn a_frame_wraps_the_payload_verbatim(seq in any::<u64>(), text in ".{0,40}") {
            let payload = serde_json::to_vec(&text).unwrap();
            let (mut vec, mut buf) = (Vec::new(), bytes::BytesMut::new());
            write_frame(&mut vec, seq, &payload);
            write_frame(&mut buf, seq, &payload);
            prop_assert_eq!(&vec[..], &buf[..]);
            let value: serde_json::Value = serde_json::from_slice(&vec).unwrap();
            prop_assert_eq!(value["seq"].as_u64(), Some(seq));
            prop_assert_eq!(value["event"].as_str(), Some(text.as_str()));
            let expected = format!("{{\"seq\":{seq},\"event\":{}}}", String::from_utf8(payload).unwrap());
            prop_assert_eq!(String::from_utf8(vec).unwrap(), expected);
        }
    }
}
