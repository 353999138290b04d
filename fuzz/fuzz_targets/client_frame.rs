//! A client's text frame, from arbitrary bytes: `ClientFrame::parse` never panics, refuses with
//! one of the documented error codes, and whatever it accepts survives a round trip unchanged
//! (so the server and every client agree on what a frame means).
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveclass_protocol::{ClientFrame, FrameError};

fuzz_target!(|data: &[u8]| {
    // A WebSocket text frame is UTF-8 by the time it reaches the parser; axum refuses the rest.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientFrame::parse(text) {
        Ok(frame) => {
            assert!(["comment", "react", "dm", "ping"].contains(&frame.kind()));
            assert_eq!(ClientFrame::parse(&frame.to_text()), Ok(frame));
        }
        Err(FrameError::UnknownType(echo)) => assert!(echo.chars().count() <= 32),
        Err(error) => assert!(!error.code().is_empty()),
    }
});
