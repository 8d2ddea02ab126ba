//! Subject patterns: parsing never panics, and a parsed pattern matches subjects without panicking;
//! a literal pattern (no wildcards) matches exactly itself.
#![no_main]

use cellos_server::event::subject::Pattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (pattern, subject) = text.split_once('\n').unwrap_or((text, text));
    if let Ok(p) = Pattern::parse(pattern) {
        let _ = p.matches(subject);
        if !pattern.contains('*') && !pattern.contains('>') {
            assert!(p.matches(pattern));
        }
    }
});
