//! Every file in `manifests/examples` says what it claims: the valid ones deserialize and pass
//! [`validate_class`], the invalid ones are refused here too and name a message the API server gives.
//! (That the API server itself refuses them is checked against a real one in the operator's
//! `tests/crd_apply.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{fs, path::PathBuf};

use liveclass_api::{LiveClass, crd_yaml, validate_class};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../manifests/examples")
}

fn yaml_files(dir: PathBuf) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The substring after `# expect: ` on the first line.
fn expected_message(text: &str) -> Option<&str> {
    text.lines()
        .next()?
        .strip_prefix("# expect: ")
        .map(str::trim)
}

#[test]
fn valid_examples_deserialize_and_validate() {
    let files = yaml_files(examples_dir());
    assert!(
        files.len() >= 2,
        "expected the one-off and the weekly example"
    );
    for path in files {
        let text = fs::read_to_string(&path).unwrap();
        let class: LiveClass =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            class.metadata.name.as_deref().map(|n| !n.is_empty()),
            Some(true)
        );
        if let Err(errors) = validate_class(&class) {
            panic!(
                "{}: {}",
                path.display(),
                liveclass_api::validate::describe(&errors)
            );
        }
    }
}

/// Phrases of the API server's own schema checks (ranges, required fields, enums).
const SCHEMA_PHRASES: [&str; 4] = [
    "in body should be greater than or equal to",
    "in body should be less than or equal to",
    ": Required value",
    ": Unsupported value: ",
];

#[test]
fn invalid_examples_are_refused_and_say_what_the_api_server_says() {
    let crd = crd_yaml().unwrap();
    let files = yaml_files(examples_dir().join("invalid"));
    assert!(files.len() >= 10);
    for path in files {
        let name = path.display();
        let text = fs::read_to_string(&path).unwrap();
        let expect = expected_message(&text)
            .unwrap_or_else(|| panic!("{name}: first line must be `# expect: <message>`"));
        // A CEL message must be one the CRD carries; anything else must be the server's phrase.
        assert!(
            crd.contains(expect) || SCHEMA_PHRASES.iter().any(|p| expect.contains(p)),
            "{name}: {expect:?} is neither a message of the CRD nor an API server phrase"
        );
        // What the API server refuses, the operator's own checks refuse as well.
        match serde_yaml::from_str::<LiveClass>(&text) {
            Err(_) => {} // missing required fields, unknown enum values
            Ok(class) => assert!(
                validate_class(&class).is_err(),
                "{name}: validate() accepts what the API server refuses"
            ),
        }
    }
}
