//! Events as the API server keeps them: a repeat adds to the first one's series.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use liveclass_operator::decide::{Note, NoteType};
use liveclass_operator::events::Publisher;

use crate::common::*;

#[tokio::test]
async fn a_repeated_event_is_one_event_with_a_count() {
    let cluster = cluster().await;
    let ns = cluster.namespace("events").await.unwrap();
    let client: Client = cluster.client().await.unwrap();
    let publisher = Publisher::new(client, "liveclass-operator", "test");
    let regarding = ObjectReference {
        api_version: Some("liveclass.dev/v1alpha1".into()),
        kind: Some("LiveClass".into()),
        namespace: Some(ns.name().to_owned()),
        name: Some("physics".into()),
        uid: Some("0b7c0a56-1d3e-4a63-9a1f-4c2d6e0f1a2b".into()),
        ..ObjectReference::default()
    };
    let capped = Note {
        type_: NoteType::Warning,
        reason: "CapacityCapped".into(),
        message: "needs 12 pods, maxReplicas is 8".into(),
    };
    for _ in 0..3 {
        publisher.publish(&capped, &regarding).await.unwrap();
    }
    let other = Note {
        message: "needs 14 pods, maxReplicas is 8".into(),
        ..capped.clone()
    };
    publisher.publish(&other, &regarding).await.unwrap();

    let events = events_with(&ns, "physics", "CapacityCapped").await;
    assert_eq!(events.len(), 2, "{events:#?}");
    let first = events
        .iter()
        .find(|e| e.note.as_deref() == Some(capped.message.as_str()))
        .unwrap();
    assert_eq!(first.series.as_ref().map(|s| s.count), Some(3));
    assert_eq!(first.type_.as_deref(), Some("Warning"));
    assert_eq!(
        first.reporting_controller.as_deref(),
        Some("liveclass-operator")
    );
    assert_eq!(first.reporting_instance.as_deref(), Some("test"));
    let second = events
        .iter()
        .find(|e| e.note.as_deref() == Some(other.message.as_str()))
        .unwrap();
    assert!(second.series.is_none());
}
