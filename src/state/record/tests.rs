//! `CellRecord` and `Stamp`: packing, rendering, and every field reading back as written.

use super::*;
use proptest::prelude::*;

fn round_trip(text: &str) -> Option<String> {
    Stamp::pack(text)
        .and_then(|s| s.render())
        .map(|r| FieldText(Repr::Rendered(r)).to_string())
}

#[test]
fn usual_times_pack_and_render_back_exactly() {
    for t in [
        "2026-11-23T12:15:49.355Z",
        "2026-11-23T12:15:49Z",
        "2026-11-23T12:15:49.123456789Z",
        "2026-11-23T12:15:49.1Z",
        "2026-11-23T12:15:49.000Z",
        "0000-00-00T00:00:00Z",
        "9999-12-31T23:59:60.999999999-23:59",
        "2026-11-23T12:15:49.35+01:00",
        "2026-02-30T31:63:63+31:63",
    ] {
        assert_eq!(round_trip(t).as_deref(), Some(t), "{t}");
    }
}

#[test]
fn other_shapes_are_not_packed() {
    for t in [
        "",
        "now",
        "2026-11-23t12:15:49Z",
        "2026-11-23 12:15:49Z",
        "2026-11-23T12:15:49z",
        "2026-11-23T12:15:49",
        "2026-11-23T12:15:49.Z",
        "2026-11-23T12:15:49.1234567890Z",
        "2026-16-23T12:15:49Z",
        "2026-11-32T12:15:49Z",
        "2026-11-23T32:15:49Z",
        "2026-11-23T12:64:49Z",
        "2026-11-23T12:15:49+0100",
        "2026-11-23T12:15:49+32:00",
        "2026-11-23T12:15:49Z ",
        "+2026-11-23T12:15:49Z",
        "2026-11-23T12:15:4\u{e9}Z",
    ] {
        assert_eq!(Stamp::pack(t), None, "{t}");
    }
}

#[test]
fn a_record_is_thirty_six_bytes_of_plain_data() {
    assert_eq!(std::mem::size_of::<CellRecord>(), 36);
    assert_eq!(std::mem::align_of::<CellRecord>(), 4);
}

#[test]
fn texts_that_do_not_pack_are_kept_aside_and_removed_when_replaced() {
    let mut aside = Aside::default();
    let mut rec = CellRecord::new(1);
    rec.set_text(Field::StartedAt, Some("yesterday"), 7, &mut aside);
    rec.set_text(Field::Outcome, Some("crashed"), 7, &mut aside);
    rec.set_text(
        Field::DestroyedAt,
        Some("2026-11-23T12:15:49Z"),
        7,
        &mut aside,
    );
    assert_eq!(aside.len(), 2);
    fn text(rec: &CellRecord, f: Field, aside: &Aside) -> Option<String> {
        rec.text(f, 7, aside).map(|t| t.to_string())
    }
    assert_eq!(
        text(&rec, Field::StartedAt, &aside).as_deref(),
        Some("yesterday")
    );
    assert_eq!(
        text(&rec, Field::Outcome, &aside).as_deref(),
        Some("crashed")
    );
    assert_eq!(
        text(&rec, Field::DestroyedAt, &aside).as_deref(),
        Some("2026-11-23T12:15:49Z")
    );
    rec.set_text(
        Field::StartedAt,
        Some("2026-11-23T12:15:49Z"),
        7,
        &mut aside,
    );
    rec.set_text(Field::Outcome, Some("failed"), 7, &mut aside);
    assert!(aside.is_empty(), "replaced texts leave the aside map");
    assert_eq!(
        text(&rec, Field::Outcome, &aside).as_deref(),
        Some("failed")
    );
    rec.set_text(Field::Outcome, None, 7, &mut aside);
    assert_eq!(text(&rec, Field::Outcome, &aside), None);
}

#[test]
fn exit_codes_keep_every_value_and_absence() {
    let mut rec = CellRecord::new(1);
    assert_eq!(rec.exit_code(), None);
    for code in [0, -1, i32::MIN, i32::MAX] {
        rec.set_exit_code(Some(code));
        assert_eq!(rec.exit_code(), Some(code));
    }
    rec.set_exit_code(None);
    assert_eq!(rec.exit_code(), None);
    assert_eq!(rec, CellRecord::new(1));
}

#[derive(Clone, Debug)]
enum Write {
    State(u8),
    Exit(Option<i32>),
    Text(u8, Option<String>),
    Seq(u64),
}

fn write() -> impl Strategy<Value = Write> {
    let text = prop_oneof![
        Just(None),
        Just(Some("2026-11-23T12:15:49.355Z".to_string())),
        Just(Some("failed".to_string())),
        "[0-9a-z:.T-]{0,24}".prop_map(Some),
    ];
    prop_oneof![
        (0u8..3).prop_map(Write::State),
        any::<Option<i32>>().prop_map(Write::Exit),
        ((0u8..3), text).prop_map(|(f, t)| Write::Text(f, t)),
        any::<u64>().prop_map(Write::Seq),
    ]
}

proptest! {
    /// The state, flags and times share words; any sequence of writes reads back like a
    /// plain struct of the same fields.
    #[test]
    fn writes_read_back_like_separate_fields(writes in prop::collection::vec(write(), 0..24)) {
        let fields = [Field::StartedAt, Field::DestroyedAt, Field::Outcome];
        let (mut state, mut exit, mut seq) = (CellState::Pending, None, 1);
        let mut texts: [Option<String>; 3] = Default::default();
        let mut aside = Aside::default();
        let mut rec = CellRecord::new(1);
        for w in writes {
            match w {
                Write::State(s) => {
                    state = STATES[usize::from(s)];
                    rec.set_state(state);
                }
                Write::Exit(code) => {
                    exit = code;
                    rec.set_exit_code(code);
                }
                Write::Text(f, text) => {
                    rec.set_text(fields[usize::from(f)], text.as_deref(), 3, &mut aside);
                    texts[usize::from(f)] = text;
                }
                Write::Seq(s) => {
                    prop_assert_eq!(rec.replace_last_event_seq(s), seq);
                    seq = s;
                }
            }
            prop_assert_eq!(rec.state(), state);
            prop_assert_eq!(rec.exit_code(), exit);
            prop_assert_eq!(rec.last_event_seq(), seq);
            for (field, text) in fields.iter().zip(&texts) {
                let read = rec.text(*field, 3, &aside).map(|t| t.to_string());
                prop_assert_eq!(read.as_deref(), text.as_deref());
            }
            prop_assert!(aside.len() <= 3);
        }
    }
}

proptest! {
    /// Whatever the text, a field reads back exactly as set: packed or aside.
    #[test]
    fn every_text_reads_back_as_set(
        text in prop_oneof![
            "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,10})?(Z|[+-][0-9]{2}:[0-9]{2})",
            ".{0,40}",
        ],
        field in prop_oneof![Just(Field::StartedAt), Just(Field::DestroyedAt), Just(Field::Outcome)],
        slot in 0u32..4,
    ) {
        let mut aside = Aside::default();
        let mut rec = CellRecord::new(1);
        rec.set_text(field, Some(&text), slot, &mut aside);
        let read = rec.text(field, slot, &aside).map(|t| t.to_string());
        prop_assert_eq!(read.as_deref(), Some(text.as_str()));
        if let Some(rendered) = round_trip(&text) {
            prop_assert_eq!(rendered, text);
        }
    }
}
