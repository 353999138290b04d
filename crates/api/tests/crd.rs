//! The generated CRD is one the API server takes: structural (every node typed, no
//! `anyOf`/`oneOf`/`allOf`/`not`), with CEL rules only on bounded strings so their estimated
//! cost stays within budget, and with the names, subresource and columns `kubectl` shows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube::CustomResourceExt;
use liveclass_api::LiveClass;
use serde_json::Value;

fn schema() -> Value {
    let crd = serde_json::to_value(LiveClass::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn walk(path: &str, node: &Value, check: &mut dyn FnMut(&str, &serde_json::Map<String, Value>)) {
    let Some(object) = node.as_object() else {
        return;
    };
    check(path, object);
    if let Some(props) = object.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(&format!("{path}.{name}"), child, check);
        }
    }
    if let Some(items) = object.get("items") {
        walk(&format!("{path}[]"), items, check);
    }
    if let Some(extra) = object.get("additionalProperties") {
        walk(&format!("{path}{{}}"), extra, check);
    }
}

#[test]
fn schema_is_structural() {
    walk("", &schema(), &mut |path, node| {
        for keyword in ["anyOf", "oneOf", "allOf", "not", "$ref"] {
            assert!(!node.contains_key(keyword), "{path} uses {keyword}");
        }
        let typed = node.contains_key("type")
            || node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
            || node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        assert!(typed, "{path} has no type");
    });
}

#[test]
fn formats_are_ones_the_api_server_knows() {
    walk("", &schema(), &mut |path, node| {
        if let Some(format) = node.get("format").and_then(Value::as_str) {
            assert!(
                ["int32", "int64", "double", "date-time"].contains(&format),
                "{path}: format {format:?} makes the API server warn"
            );
        }
    });
}

#[test]
fn cel_rules_only_on_bounded_strings_or_objects() {
    walk("", &schema(), &mut |path, node| {
        if node.contains_key("x-kubernetes-validations")
            && node.get("type") == Some(&"string".into())
        {
            assert!(
                node.contains_key("maxLength"),
                "{path}: CEL on a string without maxLength"
            );
        }
        if let Some(rules) = node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            for rule in rules {
                assert!(
                    rule["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{path}: rule without message"
                );
            }
        }
    });
}

#[test]
fn names_status_and_columns() {
    let crd = LiveClass::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("liveclasses.liveclass.dev")
    );
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["lc".to_owned()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Phase",
            "Start",
            "Expected",
            "Planned",
            "Pods",
            "Ready",
            "Connected",
            "Age"
        ]
    );
}

#[test]
fn descriptions_come_from_doc_comments() {
    let s = schema();
    let spec = &s["properties"]["spec"]["properties"];
    assert!(
        spec["expectedAttendance"]["description"]
            .as_str()
            .unwrap()
            .contains("students")
    );
    assert!(
        spec["socket"]["properties"]["headroom"]["description"]
            .as_str()
            .unwrap()
            .contains("ceil(")
    );
}

/// `kubectl explain liveclass.spec` (and `.status`) describes every field: each property of
/// the schema has a description, down to the leaves.
#[test]
fn every_field_is_described() {
    let s = schema();
    let mut missing = Vec::new();
    for root in ["spec", "status"] {
        walk(root, &s["properties"][root], &mut |path, node| {
            if node
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                missing.push(path.to_owned());
            }
        });
    }
    // Items of lists and values of maps are described by their list or map.
    missing.retain(|p| !p.ends_with("[]") && !p.ends_with("{}"));
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

/// Names that could not name the class's objects are refused at `kubectl apply`.
#[test]
fn the_name_rule_is_on_the_whole_object() {
    let rules = schema()["x-kubernetes-validations"].clone();
    let rules = rules.as_array().expect("root CEL rules");
    assert!(
        rules
            .iter()
            .any(|r| r["rule"] == liveclass_api::types::NAME_RULE),
        "{rules:?}"
    );
}
