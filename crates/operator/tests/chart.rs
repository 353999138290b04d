//! The Helm chart (`charts/liveclass`) and `manifests/install.yaml`, installed into the local
//! simulated cluster (KWOK playing the kubelet) the way a cluster admin would:
//! - `helm install` refuses a bad value with the schema's message and creates nothing; with good
//!   values it succeeds and the operator Deployment becomes Ready;
//! - the ServiceAccount may do exactly what the operator needs (`kubectl auth can-i --as`), in
//!   both RBAC shapes (cluster-wide and one watched namespace); the optional Caddy gateway and a
//!   second, standby operator replica become Ready too;
//! - the operator, run here with that ServiceAccount's token and nothing more, reconciles an
//!   example LiveClass: owned objects applied, status written, an Event published, the Lease held;
//! - `helm uninstall` leaves no object of the release behind, and the CRD stays;
//! - `kubectl apply -f manifests/` installs the same operator, Ready.
//!
//! The static half (lint, golden files, every refused value) is `scripts/check-chart`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{ConfigMap, Secret, Service, ServiceAccount},
        events::v1::Event,
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use liveclass_api::LiveClass;
use liveclass_operator::{Config, Operator};
use liveclass_testkit::{LocalCluster, wait::until};
use tokio::sync::Mutex;

const CRD_NAME: &str = "liveclasses.liveclass.dev";
const LIMIT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(250);

/// The tests share one cluster and cluster-scoped objects (the CRD): one at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chart() -> String {
    repo().join("charts/liveclass").display().to_string()
}

/// Runs `helm` or `kubectl` from the cluster's binaries against the cluster, with Helm's own
/// state in the cluster's folder (never the user's home).
async fn tool(cluster: &LocalCluster, name: &str, args: &[&str]) -> Output {
    let binary = cluster.binary(name).unwrap();
    let state = cluster.dir().join("helm");
    let child = tokio::process::Command::new(&binary)
        .args(args)
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .env("HELM_CACHE_HOME", state.join("cache"))
        .env("HELM_CONFIG_HOME", state.join("config"))
        .env("HELM_DATA_HOME", state.join("data"))
        .current_dir(repo())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(LIMIT, child)
        .await
        .unwrap_or_else(|_| panic!("{name} {args:?} took more than {LIMIT:?}"))
        .unwrap()
}

/// Like [`tool`], and fails the test with the tool's output unless it succeeded.
async fn ok(cluster: &LocalCluster, name: &str, args: &[&str]) -> String {
    let out = tool(cluster, name, args).await;
    assert!(
        out.status.success(),
        "{name} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn deployment_ready(client: &Client, namespace: &str, name: &str, replicas: i32) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    until(
        &format!("deployment {namespace}/{name} with {replicas} Ready replica(s)"),
        LIMIT,
        POLL,
        || async {
            let d = api.get_opt(name).await.ok()??;
            let status = d.status?;
            (status.ready_replicas == Some(replicas)
                && status.updated_replicas == Some(replicas)
                && status.observed_generation == d.metadata.generation)
                .then_some(())
        },
    )
    .await
    .unwrap();
}

/// `kubectl auth can-i` as the ServiceAccount: `Some(ns)` in that namespace, `None` across all
/// namespaces (or for cluster-scoped resources).
async fn can_i(
    cluster: &LocalCluster,
    sa: &str,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    let (resource, subresource) = match resource.split_once(" --subresource=") {
        Some((r, s)) => (r, Some(s)),
        None => (resource, None),
    };
    let mut args = vec!["auth", "can-i", verb, resource, "--as", sa];
    let sub;
    if let Some(s) = subresource {
        sub = format!("--subresource={s}");
        args.push(&sub);
    }
    match namespace {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("--all-namespaces"),
    }
    let out = tool(cluster, "kubectl", &args).await;
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match (out.status.code(), answer.as_str()) {
        (Some(0), "yes") => true,
        (Some(1), "no") => false,
        _ => panic!(
            "kubectl {args:?}: {answer} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Checks each `(verb, resource, namespace)` against `want`, and reports every mismatch at once.
async fn expect_access(
    cluster: &LocalCluster,
    sa: &str,
    want: bool,
    cases: &[(&str, &str, Option<&str>)],
) {
    let mut wrong = Vec::new();
    for (verb, resource, namespace) in cases {
        if can_i(cluster, sa, verb, resource, *namespace).await != want {
            wrong.push(format!(
                "{verb} {resource} in {}",
                namespace.unwrap_or("all namespaces")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{sa} should {}be allowed to: {wrong:#?}",
        if want { "" } else { "not " }
    );
}

/// A client that authenticates with `token` only: the admin kubeconfig's server and CA, its
/// user replaced.
async fn client_with_token(cluster: &LocalCluster, token: &str) -> Client {
    let text = std::fs::read_to_string(cluster.kubeconfig_path()).unwrap();
    let mut kubeconfig: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let users = kubeconfig["users"].as_sequence_mut().unwrap();
    for user in users {
        user["user"] = serde_yaml::to_value(serde_json::json!({ "token": token })).unwrap();
    }
    let kubeconfig = Kubeconfig::from_yaml(&serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

async fn crd_exists(client: &Client) -> bool {
    Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt(CRD_NAME)
        .await
        .unwrap()
        .is_some()
}

/// Names of the objects labelled as part of helm release `release`, per kind, in `namespace`
/// and cluster-wide.
async fn release_objects(client: &Client, namespace: &str, release: &str) -> Vec<String> {
    let lp = ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"));
    let mut found = Vec::new();
    macro_rules! namespaced {
        ($($kind:ty),*) => {$(
            for o in Api::<$kind>::namespaced(client.clone(), namespace).list(&lp).await.unwrap() {
                found.push(format!("{} {}", stringify!($kind), o.name_any()));
            }
        )*};
    }
    macro_rules! cluster {
        ($($kind:ty),*) => {$(
            for o in Api::<$kind>::all(client.clone()).list(&lp).await.unwrap() {
                found.push(format!("{} {}", stringify!($kind), o.name_any()));
            }
        )*};
    }
    namespaced!(
        Deployment,
        Service,
        ServiceAccount,
        ConfigMap,
        PodDisruptionBudget,
        Role,
        RoleBinding
    );
    cluster!(ClusterRole, ClusterRoleBinding);
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_least_privilege_operator_and_clean_uninstall() {
    let _serial = SERIAL.lock().await;
    let cluster = LocalCluster::shared_with_pods().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let system = cluster.namespace("lc-chart").await.unwrap();
    let school = cluster.namespace("lc-school").await.unwrap();
    let other = cluster.namespace("lc-other").await.unwrap();
    let (ns, class_ns) = (system.name(), school.name());
    let release = "lc-helm";
    let chart = chart();

    // A wrong value: refused by the schema, with its message, and nothing is created.
    for (set, message) in [
        ("replicas=-1", "at '/replicas': minimum: got -1, want 0"),
        (
            "image.pullPolicy=Sometimes",
            "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
        ),
    ] {
        let out = tool(
            cluster,
            "helm",
            &["install", "lc-bad", &chart, "-n", ns, "--set", set],
        )
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "helm install --set {set} succeeded");
        assert!(
            stderr.contains(message),
            "helm install --set {set} failed without {message:?}:\n{stderr}"
        );
    }
    assert_eq!(
        release_objects(&admin, ns, "lc-bad").await,
        Vec::<String>::new()
    );

    // Install: the CRD from crds/, and the operator Deployment Ready.
    ok(
        cluster,
        "helm",
        &[
            "install",
            release,
            &chart,
            "-n",
            ns,
            "--wait",
            "--timeout",
            "3m",
        ],
    )
    .await;
    assert!(
        crd_exists(&admin).await,
        "helm install did not create the CRD"
    );
    let operator = format!("{release}-liveclass-operator");
    deployment_ready(&admin, ns, &operator, 1).await;

    // RBAC: what the operator does, and nothing else.
    let sa = format!("system:serviceaccount:{ns}:{operator}");
    let lease = format!("leases.coordination.k8s.io/{operator}");
    expect_access(
        cluster,
        &sa,
        true,
        &[
            ("list", "liveclasses.liveclass.dev", None),
            ("watch", "liveclasses.liveclass.dev", None),
            ("get", "liveclasses.liveclass.dev", Some(class_ns)),
            (
                "patch",
                "liveclasses.liveclass.dev --subresource=status",
                Some(class_ns),
            ),
            (
                "update",
                "liveclasses.liveclass.dev --subresource=status",
                Some(class_ns),
            ),
            (
                "update",
                "liveclasses.liveclass.dev --subresource=finalizers",
                Some(class_ns),
            ),
            ("patch", "deployments.apps", Some(class_ns)),
            ("create", "deployments.apps", Some(class_ns)),
            ("watch", "deployments.apps", None),
            ("patch", "statefulsets.apps", Some(class_ns)),
            ("delete", "statefulsets.apps", Some(class_ns)),
            ("delete", "deployments.apps", Some(class_ns)),
            ("patch", "services", Some(class_ns)),
            ("delete", "services", Some(class_ns)),
            ("patch", "poddisruptionbudgets.policy", Some(class_ns)),
            ("delete", "poddisruptionbudgets.policy", Some(class_ns)),
            ("list", "pods", Some(class_ns)),
            ("watch", "pods", None),
            ("patch", "pods", Some(class_ns)),
            ("create", "secrets", Some(class_ns)),
            (
                "patch",
                "horizontalpodautoscalers.autoscaling",
                Some(class_ns),
            ),
            (
                "delete",
                "horizontalpodautoscalers.autoscaling",
                Some(class_ns),
            ),
            ("patch", "networkpolicies.networking.k8s.io", Some(class_ns)),
            (
                "delete",
                "networkpolicies.networking.k8s.io",
                Some(class_ns),
            ),
            ("create", "events.events.k8s.io", Some(class_ns)),
            ("patch", "events.events.k8s.io", Some(class_ns)),
            ("create", "leases.coordination.k8s.io", Some(ns)),
            ("get", &lease, Some(ns)),
            ("update", &lease, Some(ns)),
        ],
    )
    .await;
    expect_access(
        cluster,
        &sa,
        false,
        &[
            ("*", "*", None),
            ("*", "*", Some(class_ns)),
            // Secrets: create only (a generated token key); never read, by default not even get.
            ("get", "secrets", Some(class_ns)),
            ("get", "secrets", None),
            ("list", "secrets", Some(class_ns)),
            ("watch", "secrets", Some(class_ns)),
            ("list", "secrets", None),
            ("update", "secrets", Some(class_ns)),
            ("patch", "secrets", Some(class_ns)),
            ("delete", "namespaces", None),
            ("create", "clusterroles.rbac.authorization.k8s.io", None),
            (
                "create",
                "rolebindings.rbac.authorization.k8s.io",
                Some(class_ns),
            ),
            ("patch", "liveclasses.liveclass.dev", Some(class_ns)),
            ("delete", "liveclasses.liveclass.dev", Some(class_ns)),
            ("patch", "configmaps", Some(class_ns)),
            ("create", "pods", Some(class_ns)),
            ("delete", "pods", Some(class_ns)),
            ("create", "events", Some(class_ns)),
            (
                "update",
                "leases.coordination.k8s.io/someone-elses",
                Some(ns),
            ),
            ("create", "leases.coordination.k8s.io", Some(other.name())),
            (
                "update",
                "customresourcedefinitions.apiextensions.k8s.io",
                None,
            ),
        ],
    )
    .await;

    // The operator, with the ServiceAccount's token and nothing else, reconciles an example.
    let token = ok(
        cluster,
        "kubectl",
        &["create", "token", &operator, "-n", ns, "--duration", "1h"],
    )
    .await;
    let as_operator = client_with_token(cluster, token.trim()).await;
    let forbidden = Api::<Secret>::namespaced(as_operator.clone(), class_ns)
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(&forbidden, Err(kube::Error::Api(s)) if s.code == 403),
        "listing Secrets as the operator should be forbidden: {forbidden:?}"
    );
    let mut config = Config::for_namespace(class_ns);
    config.namespace = None; // cluster-wide, as the chart's default ClusterRole allows
    config.leader_elect = true;
    config.lease_namespace = ns.to_owned();
    config.lease_name = operator.clone();
    config.identity = Some("chart-test".to_owned());
    let running = Operator::start(config, as_operator).await.unwrap();

    // The weekly example: recurring (it never ends here) and without a token Secret, so the
    // operator generates one with the chart's create-only permission.
    let text =
        std::fs::read_to_string(repo().join("manifests/examples/weekly-maths.yaml")).unwrap();
    let example: LiveClass = serde_yaml::from_str(&text).unwrap();
    let classes: Api<LiveClass> = Api::namespaced(admin.clone(), class_ns);
    classes
        .patch(
            "weekly-maths",
            &PatchParams::apply("chart-test").force(),
            &Patch::Apply(&example),
        )
        .await
        .unwrap();
    until(
        "weekly-maths reconciled by the operator running as the chart's ServiceAccount",
        LIMIT,
        POLL,
        || async {
            let lc = classes.get("weekly-maths").await.ok()?;
            let observed = lc.status?.observed_generation?;
            (Some(observed) == lc.metadata.generation).then_some(())
        },
    )
    .await
    .unwrap();
    let owned: Api<Deployment> = Api::namespaced(admin.clone(), class_ns);
    assert!(
        owned
            .get_opt("weekly-maths-socket")
            .await
            .unwrap()
            .is_some(),
        "no socket Deployment"
    );
    assert!(
        Api::<Secret>::namespaced(admin.clone(), class_ns)
            .get_opt("weekly-maths-token")
            .await
            .unwrap()
            .is_some(),
        "no generated token Secret"
    );
    let services: Api<Service> = Api::namespaced(admin.clone(), class_ns);
    for name in ["weekly-maths-socket", "weekly-maths-socket-headless"] {
        assert!(
            services.get_opt(name).await.unwrap().is_some(),
            "no Service {name}"
        );
    }
    let events: Api<Event> = Api::namespaced(admin.clone(), class_ns);
    until("an Event about weekly-maths", LIMIT, POLL, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("weekly-maths"))
            .then_some(())
    })
    .await
    .unwrap();
    let held = Api::<Lease>::namespaced(admin.clone(), ns)
        .get(&operator)
        .await
        .unwrap();
    assert_eq!(
        held.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("chart-test")
    );
    running.stop().await.unwrap();
    classes
        .delete("weekly-maths", &DeleteParams::background())
        .await
        .unwrap();

    // Uninstall: nothing of the release is left; the CRD stays.
    ok(
        cluster,
        "helm",
        &["uninstall", release, "-n", ns, "--wait", "--timeout", "3m"],
    )
    .await;
    let left = until("the release's objects gone", LIMIT, POLL, || async {
        release_objects(&admin, ns, release)
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(
        left.is_ok(),
        "left behind: {:?}",
        release_objects(&admin, ns, release).await
    );
    assert!(crd_exists(&admin).await, "helm uninstall removed the CRD");
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_for_one_namespace_with_gateway_grants_nothing_cluster_wide() {
    let _serial = SERIAL.lock().await;
    let cluster = LocalCluster::shared_with_pods().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let system = cluster.namespace("lc-chart").await.unwrap();
    let school = cluster.namespace("lc-school").await.unwrap();
    let other = cluster.namespace("lc-other").await.unwrap();
    let (ns, class_ns) = (system.name(), school.name());
    let release = "lc-one";
    let watch = format!("watchNamespace={class_ns}");
    ok(
        cluster,
        "helm",
        &[
            "install",
            release,
            &chart(),
            "-n",
            ns,
            "--set",
            &watch,
            "--set",
            "replicas=2",
            "--set",
            "rbac.readExternalRedisSecrets=true",
            "--set",
            "gateway.enabled=true",
            "--wait",
            "--timeout",
            "3m",
        ],
    )
    .await;
    let operator = format!("{release}-liveclass-operator");
    deployment_ready(&admin, ns, &operator, 2).await;
    // The Caddy gateway too (its Caddyfile is checked by scripts/check-chart), at the one pod a
    // Deployment without `replicas` starts with: its size is the operator's to set
    // (gateway.autoscale), and the operator's pods here are KWOK's, which run nothing.
    let gateway = format!("{release}-liveclass-gateway");
    deployment_ready(&admin, ns, &gateway, 1).await;
    let sa = format!("system:serviceaccount:{ns}:{operator}");
    expect_access(
        cluster,
        &sa,
        true,
        &[
            ("list", "liveclasses.liveclass.dev", Some(class_ns)),
            ("watch", "deployments.apps", Some(class_ns)),
            ("patch", "deployments.apps", Some(class_ns)),
            (
                "patch",
                "liveclasses.liveclass.dev --subresource=status",
                Some(class_ns),
            ),
            ("create", "events.events.k8s.io", Some(class_ns)),
            ("get", "secrets", Some(class_ns)),
            ("create", "leases.coordination.k8s.io", Some(ns)),
            (
                "patch",
                &format!("deployments.apps/{gateway} --subresource=scale"),
                Some(ns),
            ),
            // The gateway's pods, watched to hand over the students of one that goes.
            ("get", &format!("deployments.apps/{gateway}"), Some(ns)),
            ("watch", "pods", Some(ns)),
        ],
    )
    .await;
    expect_access(
        cluster,
        &sa,
        false,
        &[
            ("list", "liveclasses.liveclass.dev", None),
            (
                "patch",
                "deployments.apps/other --subresource=scale",
                Some(ns),
            ),
            ("patch", &format!("deployments.apps/{gateway}"), Some(ns)),
            ("list", "liveclasses.liveclass.dev", Some(other.name())),
            ("patch", "deployments.apps", Some(other.name())),
            ("patch", "deployments.apps", Some(ns)),
            ("get", "secrets", Some(other.name())),
            ("list", "secrets", Some(class_ns)),
        ],
    )
    .await;
    let cluster_wide = Api::<ClusterRole>::all(admin.clone())
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={release}")))
        .await
        .unwrap();
    assert!(cluster_wide.items.is_empty(), "a ClusterRole was created");
    ok(
        cluster,
        "helm",
        &["uninstall", release, "-n", ns, "--wait", "--timeout", "3m"],
    )
    .await;
    let left = until("the release's objects gone", LIMIT, POLL, || async {
        let mut left = release_objects(&admin, ns, release).await;
        let lp = ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"));
        for o in Api::<Role>::namespaced(admin.clone(), class_ns)
            .list(&lp)
            .await
            .ok()?
        {
            left.push(o.name_any());
        }
        left.is_empty().then_some(())
    })
    .await;
    assert!(left.is_ok(), "objects of {release} left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_apply_manifests_installs_a_ready_operator() {
    let _serial = SERIAL.lock().await;
    let cluster = LocalCluster::shared_with_pods().await.unwrap();
    let admin = cluster.client().await.unwrap();
    // manifests/: crd.yaml and install.yaml (examples/ is a folder, which -f does not descend).
    ok(cluster, "kubectl", &["apply", "-f", "manifests/"]).await;
    assert!(crd_exists(&admin).await);
    deployment_ready(&admin, "liveclass-system", "liveclass-operator", 1).await;
    let sa = "system:serviceaccount:liveclass-system:liveclass-operator";
    assert!(can_i(cluster, sa, "patch", "deployments.apps", Some("default")).await);
    assert!(!can_i(cluster, sa, "list", "secrets", Some("default")).await);
    // Removing it again: the namespace and the cluster-wide RBAC (the CRD stays).
    ok(
        cluster,
        "kubectl",
        &["delete", "-f", "manifests/install.yaml", "--wait=false"],
    )
    .await;
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    until("the ClusterRole gone", LIMIT, POLL, || async {
        roles
            .get_opt("liveclass-operator")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();
}
