//! Leader election: only the Lease holder reconciles, a killed leader hands over within the
//! lease duration, and a standby trusts what it sees change, never a holder's clock.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use k8s_openapi::{
    api::coordination::v1::Lease,
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, api::PostParams};
use liveclass_operator::Config;
use liveclass_testkit::wait;
use serde_json::json;

use crate::common::*;

fn elect(id: &'static str, lease_duration: Duration) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        c.leader_elect = true;
        c.identity = Some(id.to_owned());
        c.lease_duration = lease_duration;
        c.lease_renew = Duration::from_secs(1);
    }
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("liveclass-operator")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_writes_and_a_killed_leader_hands_over() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-lease").await.unwrap();
    let lease_duration = Duration::from_secs(4);
    let elect = |id: &'static str| {
        move |c: &mut Config| {
            c.leader_elect = true;
            c.identity = Some(id.to_owned());
            c.lease_duration = lease_duration;
            c.lease_renew = Duration::from_secs(1);
        }
    };
    let a = start_operator(&ns, elect("operator-a")).await;
    let leases: Api<Lease> = ns.api();
    let holder = |leases: Api<Lease>| async move {
        leases
            .get_opt("liveclass-operator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    };
    wait::until(
        "a to lead",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let leases = leases.clone();
            async move { (holder(leases).await.as_deref() == Some("operator-a")).then_some(()) }
        },
    )
    .await
    .unwrap();
    let b = start_operator(&ns, elect("operator-b")).await;

    create(
        &ns,
        &live_class("chem", Utc::now() - TimeDelta::seconds(5), json!({})),
    )
    .await;
    deployment_where(
        &ns,
        "chem-socket",
        "2 replicas",
        Duration::from_secs(20),
        |d| replicas(d) == Some(2),
    )
    .await;
    let a_metrics = a.metrics.clone();
    wait::until(
        "a's reconcile to finish",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let m = a_metrics.clone();
            async move { (m.reconciles() > 0).then_some(()) }
        },
    )
    .await
    .unwrap();
    assert_eq!(b.metrics.reconciles(), 0, "the standby reconciled");
    assert!(!b.metrics.leading());

    // Kill the leader without releasing the Lease; b takes over within the lease time.
    let killed = Instant::now();
    a.kill();
    wait::until(
        "b to lead",
        lease_duration * 3,
        Duration::from_millis(50),
        || {
            let leases = leases.clone();
            async move { (holder(leases).await.as_deref() == Some("operator-b")).then_some(()) }
        },
    )
    .await
    .unwrap();
    let handover = killed.elapsed();
    assert!(
        handover <= lease_duration + Duration::from_secs(2),
        "handover took {handover:?}"
    );
    eprintln!("leader handover after kill: {handover:?}");

    patch_spec(&ns, "chem", json!({ "expectedAttendance": 300 })).await;
    deployment_where(
        &ns,
        "chem-socket",
        "3 replicas from b",
        Duration::from_secs(10),
        |d| replicas(d) == Some(3),
    )
    .await;
    assert!(b.metrics.reconciles() > 0 || b.metrics.leading());
    b.stop().await.unwrap();
    // A clean stop releases the Lease.
    assert_eq!(holder(leases.clone()).await, None);
}

/// A holder whose clock is an hour behind (its `renewTime` always looks stale) but who keeps
/// renewing keeps the Lease: a standby goes by the record changing, not by the holder's clock.
/// When that holder stops renewing, the standby takes over within the lease duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_goes_by_the_lease_changing_not_by_the_holders_clock() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lc-skew").await.unwrap();
    let leases: Api<Lease> = ns.api();
    let skewed = || {
        Timestamp::now()
            .checked_sub(SignedDuration::from_hours(1))
            .unwrap()
    };
    leases
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": { "name": "liveclass-operator" },
                "spec": {
                    "holderIdentity": "ghost",
                    "leaseDurationSeconds": 3,
                    "renewTime": MicroTime(skewed()),
                    "acquireTime": MicroTime(skewed()),
                },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let lease_duration = Duration::from_secs(3);
    let standby = start_operator(&ns, elect("operator-b", lease_duration)).await;
    // The ghost renews every second, for 3 lease durations, with its skewed clock.
    let renewing_until = Instant::now() + lease_duration * 3;
    while Instant::now() < renewing_until {
        let mut lease = leases.get("liveclass-operator").await.unwrap();
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(MicroTime(skewed()));
        }
        leases
            .replace("liveclass-operator", &PostParams::default(), &lease)
            .await
            .unwrap();
        assert_eq!(
            holder(&leases).await.as_deref(),
            Some("ghost"),
            "the standby took a live Lease"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(!standby.metrics.leading());
    // The ghost dies: taken over within the lease duration (plus a renew interval).
    let died = Instant::now();
    wait::until(
        "the standby to take over",
        lease_duration * 3,
        Duration::from_millis(50),
        || {
            let leases = leases.clone();
            async move { (holder(&leases).await.as_deref() == Some("operator-b")).then_some(()) }
        },
    )
    .await
    .unwrap();
    let took = died.elapsed();
    eprintln!("took over {took:?} after the holder stopped renewing");
    assert!(took <= lease_duration + Duration::from_secs(2), "{took:?}");
    // It reconciles now.
    create(
        &ns,
        &live_class("skew", Utc::now() + TimeDelta::days(1), json!({})),
    )
    .await;
    deployment_where(
        &ns,
        "skew-socket",
        "a Deployment",
        Duration::from_secs(20),
        |_| true,
    )
    .await;
    standby.stop().await.unwrap();
}
