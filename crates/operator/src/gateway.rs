//! The gateway's size, from the classes that are on or about to be: one gateway (the chart's
//! Caddy Deployment) carries every student of every class, so its replicas follow the sum of
//! the classes' planned capacity, which the planner raises ahead of each bell, and so the
//! gateway is raised ahead of the bell with them.
//!
//! Raised at once; lowered one pod at a time, and only after the need has stayed lower for a
//! while (the HPA's stabilization window): each pod that goes moves its students to the others
//! (`handover.rs`), and fewer steps mean fewer moves.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use liveclass_api::{LiveClass, Phase};

use crate::MANAGER;

/// What the operator sizes, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    pub namespace: String,
    pub name: String,
    /// Students one gateway pod carries (Caddy holds ~95 KiB a proxied socket).
    pub connections_per_pod: u32,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// How long the need must stay lower before one pod is taken away.
    pub scale_down_after: Duration,
    /// Whether the operator sets the replicas at all.
    pub sizing: bool,
    /// Over how long a terminating pod's students are moved (zero: not at all).
    pub handover_window: Duration,
}

impl GatewaySettings {
    /// `--gateway-deployment <namespace>/<name>`.
    pub fn parse_target(target: &str) -> Result<(String, String), String> {
        match target.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok((ns.to_owned(), name.to_owned()))
            }
            _ => Err(format!(
                "{target:?} is not <namespace>/<deployment> (e.g. liveclass-system/liveclass-gateway)"
            )),
        }
    }
}

/// Students the gateway must carry now: each class warming up, live or cooling down, at the
/// capacity its socket pods are planned for (headroom and the reactive floor included).
pub fn needed_connections<'a>(classes: impl IntoIterator<Item = &'a LiveClass>) -> u64 {
    classes
        .into_iter()
        .filter_map(|lc| {
            let status = lc.status.as_ref()?;
            let active = matches!(
                status.phase,
                Some(Phase::WarmingUp | Phase::Live | Phase::CoolingDown)
            );
            active.then(|| {
                u64::from(status.planned_replicas.unwrap_or(0))
                    * u64::from(lc.spec.socket.connections_per_pod)
            })
        })
        .sum()
}

/// Gateway pods for `connections`, within the settings' bounds.
pub fn wanted_replicas(connections: u64, settings: &GatewaySettings) -> u32 {
    let per_pod = u64::from(settings.connections_per_pod.max(1));
    let pods = u32::try_from(connections.div_ceil(per_pod)).unwrap_or(u32::MAX);
    pods.clamp(
        settings.min_replicas,
        settings.max_replicas.max(settings.min_replicas),
    )
}

/// The replicas to set, remembered between rounds: up at once, down by one after the need
/// has been lower for `scale_down_after` (the window starts again after each step).
#[derive(Debug, Default)]
pub struct Sizer {
    current: Option<u32>,
    lower_since: Option<Instant>,
}

impl Sizer {
    /// From what runs now (after an operator restart, the gateway is not lowered at once).
    pub fn starting_at(replicas: u32) -> Self {
        Self {
            current: Some(replicas),
            lower_since: None,
        }
    }

    pub fn next(&mut self, wanted: u32, scale_down_after: Duration, now: Instant) -> u32 {
        let current = *self.current.get_or_insert(wanted);
        let next = if wanted >= current {
            self.lower_since = None;
            wanted
        } else {
            let since = *self.lower_since.get_or_insert(now);
            if now.duration_since(since) >= scale_down_after {
                self.lower_since = None;
                current - 1
            } else {
                current
            }
        };
        self.current = Some(next);
        next
    }
}

/// How often the gateway's size is worked out.
const INTERVAL: Duration = Duration::from_secs(5);

/// Keeps the gateway Deployment's replicas to the classes' need until the task is dropped.
pub async fn run(client: kube::Client, classes: Store<LiveClass>, settings: GatewaySettings) {
    let api: Api<Deployment> = Api::namespaced(client, &settings.namespace);
    let running = api
        .get_scale(&settings.name)
        .await
        .ok()
        .and_then(|scale| scale.spec?.replicas)
        .and_then(|r| u32::try_from(r).ok());
    let mut sizer = running.map_or_else(Sizer::default, Sizer::starting_at);
    let mut applied = running;
    let params = PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let state = classes.state();
        let needed = needed_connections(state.iter().map(AsRef::as_ref));
        let replicas = sizer.next(
            wanted_replicas(needed, &settings),
            settings.scale_down_after,
            Instant::now(),
        );
        if applied == Some(replicas) {
            continue;
        }
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        match api
            .patch_scale(&settings.name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(replicas, needed, gateway = %settings.name, "gateway sized");
                applied = Some(replicas);
            }
            Err(error) => {
                tracing::warn!(%error, gateway = %settings.name, "sizing the gateway failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GatewaySettings {
        GatewaySettings {
            namespace: "liveclass-system".into(),
            name: "liveclass-gateway".into(),
            connections_per_pod: 4000,
            min_replicas: 2,
            max_replicas: 8,
            scale_down_after: Duration::from_secs(300),
            sizing: true,
            handover_window: Duration::from_secs(20),
        }
    }

    fn class(phase: Phase, planned: u32, per_pod: u32) -> LiveClass {
        let mut lc: LiveClass = serde_json::from_value(serde_json::json!({
            "apiVersion": "liveclass.dev/v1alpha1",
            "kind": "LiveClass",
            "metadata": { "name": "c", "namespace": "school" },
            "spec": {
                "schedule": { "start": "2026-12-01T09:00:00Z", "duration": "1h" },
                "expectedAttendance": 100,
                "socket": { "image": "socket", "connectionsPerPod": per_pod },
            },
        }))
        .unwrap();
        lc.status = Some(liveclass_api::LiveClassStatus {
            phase: Some(phase),
            planned_replicas: Some(planned),
            ..Default::default()
        });
        lc
    }

    #[test]
    fn only_classes_on_or_about_to_be_count() {
        let classes = [
            class(Phase::Scheduled, 1, 1000),
            class(Phase::WarmingUp, 5, 1000),
            class(Phase::Live, 3, 2000),
            class(Phase::CoolingDown, 2, 500),
            class(Phase::Ended, 4, 1000),
        ];
        assert_eq!(needed_connections(&classes), 5000 + 6000 + 1000);
    }

    #[test]
    fn replicas_cover_the_need_within_bounds() {
        let s = settings();
        assert_eq!(wanted_replicas(0, &s), 2);
        assert_eq!(wanted_replicas(8000, &s), 2);
        assert_eq!(wanted_replicas(8001, &s), 3);
        assert_eq!(wanted_replicas(1_000_000, &s), 8);
    }

    #[test]
    fn up_at_once_down_one_pod_at_a_time_after_the_window() {
        let mut sizer = Sizer::default();
        let window = Duration::from_secs(300);
        let t0 = Instant::now();
        assert_eq!(sizer.next(2, window, t0), 2);
        assert_eq!(sizer.next(6, window, t0 + Duration::from_secs(5)), 6);
        // The need falls to 2: nothing for five minutes, then one pod per window.
        let low = t0 + Duration::from_secs(10);
        assert_eq!(sizer.next(2, window, low), 6);
        assert_eq!(sizer.next(2, window, low + Duration::from_secs(299)), 6);
        assert_eq!(sizer.next(2, window, low + Duration::from_secs(300)), 5);
        // The next window starts with the next lower reading after a step.
        assert_eq!(sizer.next(2, window, low + Duration::from_secs(305)), 5);
        assert_eq!(sizer.next(2, window, low + Duration::from_secs(604)), 5);
        assert_eq!(sizer.next(2, window, low + Duration::from_secs(605)), 4);
        // A need back up in between cancels the wait.
        assert_eq!(sizer.next(5, window, low + Duration::from_secs(610)), 5);
        assert_eq!(sizer.next(4, window, low + Duration::from_secs(615)), 5);
        assert_eq!(sizer.next(4, window, low + Duration::from_secs(914)), 5);
        assert_eq!(sizer.next(4, window, low + Duration::from_secs(915)), 4);
    }

    #[test]
    fn the_target_is_namespace_slash_name() {
        assert_eq!(
            GatewaySettings::parse_target("liveclass-system/lc-gateway"),
            Ok(("liveclass-system".into(), "lc-gateway".into()))
        );
        assert!(GatewaySettings::parse_target("lc-gateway").is_err());
        assert!(GatewaySettings::parse_target("a/b/c").is_err());
    }
}
