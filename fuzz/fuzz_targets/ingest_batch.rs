//! CloudEvents ingestion parsing (structured and batch): never panics; every accepted event is a
//! slice of the body that decodes on its own with the id it was accepted under.
#![no_main]

use bytes::Bytes;
use cellos_server::event::decode::Decoder;
use cellos_server::http::cloudevents::parse_ingest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    for batch in [false, true] {
        if let Ok(appends) = parse_ingest(&body, batch) {
            let mut decoder = Decoder::new();
            for a in appends {
                let ev = decoder.decode(&a.payload).expect("accepted events decode");
                assert_eq!(ev.id, Some(a.dedupe_id.as_str()));
                assert!(a.subject.starts_with("cellos.events."));
            }
        }
    }
});
