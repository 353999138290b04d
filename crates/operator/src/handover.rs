//! The gentle end of a gateway pod. Caddy cuts every WebSocket it proxies when its process
//! stops, so a gateway pod that goes (a scale-down, a rollout, a node drain) would send all its
//! students back through the others in the same second. The chart gives the pod a preStop
//! that outlasts the hand-over window; when this operator sees the pod terminating it publishes
//! a hand-over naming the pod's address on every Redis it reads attendance from, and the
//! socket servers there move the connections that came through that pod over the window,
//! one at a time, each told to reconnect first (`crates/socket/src/handover.rs`). The pod is
//! already out of its Service's endpoints, so they come back through the other gateway pods.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use liveclass_protocol::bus::{HANDOVER_CHANNEL, Handover};

use crate::attendance::Attendance;
use crate::gateway::GatewaySettings;

/// How often the gateway Deployment is looked for while it does not exist yet.
const RETRY: Duration = Duration::from_secs(5);

/// The address a terminating pod's connections came from, if it is terminating and has one.
pub fn leaving_address(pod: &Pod) -> Option<IpAddr> {
    pod.metadata.deletion_timestamp.as_ref()?;
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// The label selector of the gateway's pods, from its Deployment's `matchLabels`.
pub fn pod_selector(deployment: &Deployment) -> Option<String> {
    let labels = deployment.spec.selector.match_labels.as_ref()?;
    (!labels.is_empty()).then(|| {
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// Watches the gateway's pods and hands over each one that starts terminating, until the
/// task is dropped.
pub async fn run(client: kube::Client, settings: GatewaySettings, attendance: Arc<Attendance>) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &settings.namespace);
    let selector = loop {
        match deployments.get(&settings.name).await {
            Ok(deployment) => match pod_selector(&deployment) {
                Some(selector) => break selector,
                None => {
                    tracing::warn!(gateway = %settings.name, "the gateway Deployment selects its pods by expressions only; no hand-over")
                }
            },
            Err(error) => {
                tracing::debug!(%error, gateway = %settings.name, "gateway Deployment not readable yet");
            }
        }
        tokio::time::sleep(RETRY).await;
    };
    let pods: Api<Pod> = Api::namespaced(client, &settings.namespace);
    let events = watcher(pods, watcher::Config::default().labels(&selector)).default_backoff();
    futures_util::pin_mut!(events);
    // The pods already handed over, by uid (a terminating pod is seen on every status change).
    let mut handed: HashSet<String> = HashSet::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                let Some(address) = leaving_address(&pod) else {
                    continue;
                };
                if handed.insert(pod.uid().unwrap_or_default()) {
                    hand_over(
                        &attendance,
                        &pod.name_any(),
                        address,
                        settings.handover_window,
                    )
                    .await;
                }
            }
            Ok(watcher::Event::Delete(pod)) => {
                handed.remove(&pod.uid().unwrap_or_default());
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "gateway pod watch"),
        }
    }
}

/// Tells the socket servers on every Redis the operator reaches to move the students who came
/// through `address`.
async fn hand_over(attendance: &Attendance, pod: &str, address: IpAddr, within: Duration) {
    let message = Handover {
        gateway: address,
        within_ms: u64::try_from(within.as_millis()).unwrap_or(u64::MAX),
    }
    .to_text();
    let results = attendance
        .publish_everywhere(HANDOVER_CHANNEL, &message)
        .await;
    let mut servers = 0;
    for (class, result) in &results {
        match result {
            Ok(received) => servers += received,
            Err(error) => {
                tracing::warn!(redis_of = %class, %error, gateway_pod = pod, "could not hand over a gateway pod's students");
            }
        }
    }
    tracing::info!(gateway_pod = pod, %address, redises = results.len(), servers, ?within, "handing over a terminating gateway pod's students");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn only_a_terminating_pod_with_an_address_is_handed_over() {
        let running = pod(serde_json::json!({
            "metadata": { "name": "gw-1" },
            "status": { "podIP": "10.244.0.7" },
        }));
        assert_eq!(leaving_address(&running), None);
        let leaving = pod(serde_json::json!({
            "metadata": { "name": "gw-1", "deletionTimestamp": "2026-12-03T09:00:00Z" },
            "status": { "podIP": "10.244.0.7" },
        }));
        assert_eq!(
            leaving_address(&leaving),
            Some("10.244.0.7".parse().unwrap())
        );
        let unscheduled = pod(serde_json::json!({
            "metadata": { "name": "gw-1", "deletionTimestamp": "2026-12-03T09:00:00Z" },
        }));
        assert_eq!(leaving_address(&unscheduled), None);
    }

    #[test]
    fn the_gateway_pods_are_found_by_the_deployments_match_labels() {
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "liveclass-gateway" },
            "spec": {
                "selector": { "matchLabels": {
                    "app.kubernetes.io/component": "gateway",
                    "app.kubernetes.io/name": "liveclass",
                } },
                "template": {},
            },
        }))
        .unwrap();
        assert_eq!(
            pod_selector(&deployment).as_deref(),
            Some("app.kubernetes.io/component=gateway,app.kubernetes.io/name=liveclass")
        );
    }
}
