//! The query of `GET /ws`, from arbitrary bytes: `HandshakeParams::parse` never panics, refuses
//! with a 4xx, and what it accepts round-trips through `to_query`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveclass_protocol::HandshakeParams;

fuzz_target!(|data: &[u8]| {
    let query = String::from_utf8_lossy(data);
    match HandshakeParams::parse(Some(&query)) {
        Ok(params) => {
            assert_eq!(HandshakeParams::parse(Some(&params.to_query())), Ok(params));
        }
        Err(refusal) => {
            assert!((400..500).contains(&refusal.status()));
            assert!(!refusal.retryable());
        }
    }
});
