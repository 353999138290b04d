//! A server frame, as a client (the load generator, the test kit, a Rust client) reads it, from
//! arbitrary bytes: parsing never panics, and an accepted frame round-trips; `comment_id`, the
//! hot path's reader of a comment's id, never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveclass_protocol::{ServerFrame, server::comment_id};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = comment_id(text);
    if let Ok(frame) = ServerFrame::parse(text) {
        let again = frame.to_text();
        assert_eq!(ServerFrame::parse(&again).ok(), Some(frame));
    }
});
