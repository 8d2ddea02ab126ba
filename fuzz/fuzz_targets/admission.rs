//! Formation admission (normalize + validate): any bytes give a document or a rejection, never a
//! panic; an admitted document always passes admission again (it is a fixed point).
#![no_main]

use cellos_server::admission::admit;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(admitted) = admit(data) {
        let again = serde_json::to_vec(&admitted.document).expect("documents serialize");
        let second = admit(&again).expect("a normalized document is admitted again");
        assert_eq!(second.document, admitted.document);
        assert_eq!(second.name, admitted.name);
    }
});
