//! `bench/RESULTS.md` is rendered from the result files in `bench/results/` and from nothing
//! else, so the two cannot disagree: regenerate it with `bench/render-results`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn results_md_is_rendered_from_the_result_files() {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench");
    let rendered = liveclass_load::bench::render(&bench.join("results")).unwrap();
    let current = std::fs::read_to_string(bench.join("RESULTS.md")).unwrap();
    assert!(
        current == rendered,
        "bench/RESULTS.md is not what bench/results/ renders to: run bench/render-results"
    );
}
