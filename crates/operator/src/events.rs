//! Kubernetes Events about classes (`events.k8s.io/v1`), a repeat counted into the first
//! one's series instead of written again.
//!
//! Why not kube-runtime's `Recorder`: to find repeats it keeps every Event it sent for six
//! minutes, each as the whole Event and its object reference inline in one hash table, about
//! 4 KiB an entry; when 1,000 classes start together that table and its copy while it grows
//! were 9 MiB of the operator's 44 MiB heap peak (heaptrack). A repeat needs only the first
//! Event's name, its count and when it was last seen, so that is what this keeps, under a hash
//! of what makes two Events the same.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::decide::{Note, NoteType};

/// How long a sent Event is remembered as the one a repeat adds to (kube-runtime's and
/// client-go's figure).
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// What the operator was doing when it noticed: its one action.
const ACTION: &str = "Reconcile";

/// What is remembered of a sent Event, for its repeats.
#[derive(Debug, Clone)]
struct Sent {
    name: String,
    count: i32,
    last: Timestamp,
}

/// Publishes Events as one controller instance.
pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
    sent: Mutex<HashMap<u64, Sent>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("controller", &self.controller)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.to_owned(),
            instance: instance.to_owned(),
            sent: Mutex::default(),
        }
    }

    /// Creates the Event, or, when the same one was sent within [`SERIES_WINDOW`], adds to its
    /// series (one PATCH). Events live in the namespace of the object they are about.
    pub async fn publish(
        &self,
        note: &Note,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = key(note, regarding);
        let repeat = self.sent.lock().ok().and_then(|mut sent| {
            sent.retain(|_, s| s.last + SERIES_WINDOW > now);
            sent.get(&key).cloned()
        });
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<KubeEvent> = Api::namespaced(self.client.clone(), namespace);
        let sent = match repeat {
            Some(previous) => {
                let count = previous.count + 1;
                let patch = serde_json::json!({
                    "series": { "count": count, "lastObservedTime": MicroTime(now) },
                });
                api.patch(
                    &previous.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
                Sent {
                    count,
                    last: now,
                    ..previous
                }
            }
            None => {
                let created = api
                    .create(
                        &PostParams::default(),
                        &self.new_event(note, regarding, now),
                    )
                    .await?;
                Sent {
                    name: created.metadata.name.unwrap_or_default(),
                    count: 1,
                    last: now,
                }
            }
        };
        if let Ok(mut remembered) = self.sent.lock() {
            remembered.insert(key, sent);
        }
        Ok(())
    }

    fn new_event(&self, note: &Note, regarding: &ObjectReference, now: Timestamp) -> KubeEvent {
        KubeEvent {
            metadata: ObjectMeta {
                // As client-go names them: the object's name and the time, unique enough.
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            action: Some(ACTION.to_owned()),
            reason: Some(note.reason.clone()),
            note: Some(note.message.clone()),
            type_: Some(
                match note.type_ {
                    NoteType::Normal => "Normal",
                    NoteType::Warning => "Warning",
                }
                .to_owned(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..KubeEvent::default()
        }
    }
}

/// What makes two Events the same one: the object (by uid too, so a class deleted and made
/// again starts afresh), the type, the reason and the note.
fn key(note: &Note, regarding: &ObjectReference) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    note.hash(&mut hasher);
    (
        &regarding.api_version,
        &regarding.kind,
        &regarding.namespace,
        &regarding.name,
        &regarding.uid,
    )
        .hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(uid: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("liveclass.dev/v1alpha1".into()),
            kind: Some("LiveClass".into()),
            namespace: Some("school".into()),
            name: Some("physics".into()),
            uid: Some(uid.into()),
            ..ObjectReference::default()
        }
    }

    fn event(reason: &str, message: &str) -> Note {
        Note {
            type_: NoteType::Normal,
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn the_same_event_about_the_same_object_has_one_key() {
        let live = event("Live", "the class is live");
        assert_eq!(
            key(&live, &reference("a")),
            key(&live.clone(), &reference("a"))
        );
        // Another object (a class made again has another uid), reason or note: another Event.
        assert_ne!(key(&live, &reference("a")), key(&live, &reference("b")));
        assert_ne!(
            key(&live, &reference("a")),
            key(&event("Late", "the class is live"), &reference("a"))
        );
        assert_ne!(
            key(&live, &reference("a")),
            key(&event("Live", "another note"), &reference("a"))
        );
    }
}
