//! Learning how long pods take to start, on a cluster of its own whose (KWOK) pods turn Ready
//! 4–6 s after they are scheduled: the class's idle pods are measured, the plan scales up
//! earlier by what `podStartup` missed, and a Warning says so.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use liveclass_api::time::from_k8s;
use liveclass_testkit::{LocalCluster, cluster::ClusterOptions};
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_slower_than_pod_startup_are_measured_and_move_the_scale_up_earlier() {
    let cluster = LocalCluster::start(ClusterOptions::with_pods(2).pod_start_delay(
        0..2,
        Duration::from_secs(4),
        Duration::from_secs(6),
    ))
    .await
    .unwrap();
    install_crd(&cluster).await;
    let ns = cluster.namespace("lc-startup").await.unwrap();
    let operator = start_operator(&ns, |_| {}).await;
    // In ten minutes; three pods idle until then, each of them a sample. podStartup is 1 s.
    let start = Utc::now() + TimeDelta::minutes(10);
    create(
        &ns,
        &live_class(
            "chemistry",
            start,
            json!({ "warmup": "1m", "socket": { "minReplicas": 3, "podStartup": "1s" } }),
        ),
    )
    .await;
    let lc = status_where(
        &ns,
        "chemistry",
        "three start-ups measured",
        Duration::from_secs(60),
        |lc| {
            lc.status
                .as_ref()
                .and_then(|s| s.pod_startup.as_ref())
                .is_some_and(|p| p.samples == 3)
        },
    )
    .await;
    let status = lc.status.unwrap();
    let observed = status.pod_startup.unwrap();
    assert_eq!(observed.scope, "Class");
    // Scheduling, then 4–6 s in KWOK; rounded up to a whole second.
    assert!(
        (4..=9).contains(&observed.observed_p95_seconds),
        "{observed:?}"
    );
    // The slowest of the three, with the margin a learned lead gets.
    let with_margin = liveclass_operator::startup::with_margin(Duration::from_secs(
        u64::try_from(observed.observed_p95_seconds).unwrap(),
    ));
    assert_eq!(
        observed.lead_seconds,
        i64::try_from(with_margin.as_secs()).unwrap()
    );
    let plan = status.plan.unwrap();
    let scale_up = plan.scale_up_time.as_ref().and_then(from_k8s).unwrap();
    let ready_by = plan.ready_by_time.as_ref().and_then(from_k8s).unwrap();
    assert_eq!(
        (ready_by - scale_up).num_seconds(),
        observed.lead_seconds,
        "the scale-up leads Ready-by by what the pods took, and the margin"
    );
    let warnings = events_with(&ns, "chemistry", "SlowPodStartup").await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let note = warnings[0].note.clone().unwrap_or_default();
    assert!(note.contains("scaling up"), "{note}");
    operator.stop().await.unwrap();
}
