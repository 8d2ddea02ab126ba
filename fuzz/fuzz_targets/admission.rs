//! Formation admission (normalize + validate): any bytes give a document or a rejection, never a
//! panic. An admitted document is a fixed point of admission, except that one which kept
//! `metadata` (labels, annotations) next to its flat fields is a hybrid, as the reference says.
#![no_main]

use cellos_server::admission::{admit, Rejection};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(admitted) = admit(data) {
        let again = serde_json::to_vec(&admitted.document).expect("documents serialize");
        let kept_metadata = admitted.document.get("metadata").is_some();
        match admit(&again) {
            Ok(second) => {
                assert!(!kept_metadata, "flat fields next to `metadata` were admitted");
                assert_eq!(second.document, admitted.document);
                assert_eq!(second.name, admitted.name);
            }
            Err(Rejection::BadRequest(detail)) if kept_metadata => {
                assert!(detail.starts_with("hybrid formation document"), "{detail}");
            }
            Err(e) => panic!("a normalized document is refused: {e}"),
        }
    }
});
