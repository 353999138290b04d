//! The real node, for real: a kubelet with containerd and runc runs the project's images (built
//! by `scripts/images`), pods reach each other, Services and cluster DNS and nothing outside,
//! and a cluster admin's first moves — `kubectl logs`, `exec`, `port-forward` — work.
//!
//! Needs root, the node binaries (`scripts/k8s-binaries --node`), Debian's containerd, runc and
//! CNI plugins (`scripts/install-deps --real-node`) and the images in `$LIVECLASS_IMAGES_DIR`
//! (`scripts/images save DIR`), so it is `#[ignore]`d in a plain `cargo test`; `scripts/test`
//! runs it with `--ignored` after building all of that.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use liveclass_testkit::LocalCluster;
use liveclass_testkit::cluster::real_node::{NAMESPACE_ANNOTATIONS, NODE_LABEL, NODE_NAME};
use liveclass_testkit::wait;

mod gateway;

const TIMEOUT: Duration = Duration::from_secs(120);

fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// `kubectl` against the cluster; stdout, or a panic with stderr.
fn kubectl(cluster: &LocalCluster, args: &[&str]) -> String {
    let out = Command::new(cluster.binary("kubectl").unwrap())
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace whose pods all go to the real node (the admission plugins add the node selector
/// and the toleration), deleted at the end.
async fn real_node_namespace(cluster: &LocalCluster, prefix: &str) -> String {
    let name = format!("{prefix}-{:06x}", fastrand::u32(..0x100_0000));
    let annotations: BTreeMap<String, String> = NAMESPACE_ANNOTATIONS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "annotations": annotations, "labels": { "liveclass.dev/test": "true" } },
    }))
    .unwrap();
    let namespaces: Api<Namespace> = Api::all(cluster.client().await.unwrap());
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(cluster.client().await.unwrap(), &name);
    wait::until(
        "the namespace's default ServiceAccount",
        TIMEOUT,
        Duration::from_millis(100),
        || {
            let accounts = accounts.clone();
            async move { accounts.get_opt("default").await.ok().flatten() }
        },
    )
    .await
    .unwrap();
    name
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait_ready(pods: &Api<Pod>, name: &str) -> Pod {
    let what = format!("pod {name} to be Ready on the real node");
    wait::until(&what, TIMEOUT, Duration::from_millis(200), || {
        let pods = pods.clone();
        async move {
            let pod = pods.get_opt(name).await.ok().flatten()?;
            pod_ready(&pod).then_some(pod)
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
#[ignore = "needs root and the real node's binaries and images; scripts/test runs it"]
async fn the_real_node_runs_pods_and_answers_an_admin() {
    let cluster = LocalCluster::shared_with_real_node().await.unwrap();
    let client = cluster.client().await.unwrap();

    // The node: labelled and tainted so only pods that ask for it land there.
    let node = Api::<Node>::all(client.clone())
        .get(NODE_NAME)
        .await
        .unwrap();
    assert_eq!(
        node.metadata
            .labels
            .as_ref()
            .unwrap()
            .get(NODE_LABEL)
            .map(String::as_str),
        Some("true")
    );
    let taints = node
        .spec
        .as_ref()
        .unwrap()
        .taints
        .clone()
        .unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t.key == NODE_LABEL && t.effect == "NoSchedule"),
        "taints: {taints:?}"
    );

    // Redis (Debian's, from the project's image) and a socket server beside it.
    let ns = real_node_namespace(cluster, "node").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let v = version();
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{ name: redis, labels: {{ app: redis }} }}
spec:
  containers:
    - name: redis
      image: localhost/liveclass/redis:{v}
      imagePullPolicy: Never
      args: ["redis-server", "--save", "", "--appendonly", "no"]
      ports: [{{ name: redis, containerPort: 6379 }}]
      readinessProbe: {{ tcpSocket: {{ port: redis }}, periodSeconds: 1 }}
      securityContext: {{ runAsNonRoot: true, runAsUser: 999, readOnlyRootFilesystem: true }}
---
apiVersion: v1
kind: Service
metadata: {{ name: redis }}
spec:
  selector: {{ app: redis }}
  ports: [{{ port: 6379, targetPort: redis }}]
---
apiVersion: v1
kind: Secret
metadata: {{ name: token }}
stringData: {{ hs256-key: "a-test-signing-key-that-is-long-enough-0123456789" }}
---
apiVersion: v1
kind: Pod
metadata: {{ name: socket }}
spec:
  containers:
    - name: socket
      image: localhost/liveclass/socket:{v}
      imagePullPolicy: Never
      args: ["--redis-url", "redis://redis:6379", "--token-secret-file", "/var/run/secrets/liveclass/hs256-key"]
      ports: [{{ name: ws, containerPort: 8080 }}, {{ name: admin, containerPort: 9090 }}]
      readinessProbe: {{ httpGet: {{ path: /readyz, port: ws }}, periodSeconds: 1 }}
      volumeMounts: [{{ name: token, mountPath: /var/run/secrets/liveclass, readOnly: true }}]
      securityContext: {{ runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false }}
  volumes: [{{ name: token, secret: {{ secretName: token }} }}]
"#
    );
    let file = cluster.dir().join(format!("{ns}.yaml"));
    std::fs::write(&file, manifest).unwrap();
    kubectl(
        cluster,
        &["apply", "-n", &ns, "-f", &file.display().to_string()],
    );

    let redis = wait_ready(&pods, "redis").await;
    // The socket server is Ready only once it reached Redis through the Service name: cluster
    // DNS (CoreDNS) and the Service (kube-proxy) work from a pod.
    let socket = wait_ready(&pods, "socket").await;
    for pod in [&redis, &socket] {
        assert_eq!(
            pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some(NODE_NAME)
        );
        let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
        assert!(ip.starts_with("10.245.0."), "pod IP {ip}");
    }

    // kubectl logs: the socket server's own log lines, through the apiserver and the kubelet.
    let logs = kubectl(cluster, &["logs", "-n", &ns, "socket"]);
    assert!(!logs.trim().is_empty(), "no logs from the socket pod");

    // kubectl exec: Redis answers inside its pod; and the pod cannot reach outside the pod
    // network (no default route), while cluster DNS resolves Services.
    let pong = kubectl(
        cluster,
        &["exec", "-n", &ns, "redis", "--", "redis-cli", "ping"],
    );
    assert_eq!(pong.trim(), "PONG");
    let resolved = kubectl(
        cluster,
        &[
            "exec",
            "-n",
            &ns,
            "redis",
            "--",
            "getent",
            "hosts",
            &format!("redis.{ns}.svc.cluster.local"),
        ],
    );
    assert!(
        resolved.contains("10.96."),
        "redis Service resolved to: {resolved}"
    );
    let outside = Command::new(cluster.binary("kubectl").unwrap())
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args([
            "exec",
            "-n",
            &ns,
            "redis",
            "--",
            "redis-cli",
            "-h",
            "192.0.2.1",
            "-p",
            "6379",
            "ping",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&outside.stdout).to_string()
        + &String::from_utf8_lossy(&outside.stderr);
    assert!(
        said.contains("unreachable"),
        "a pod reached outside its network: {said}"
    );

    // kubectl port-forward: the socket pod's admin port on loopback.
    let mut forward = Command::new(cluster.binary("kubectl").unwrap())
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args([
            "port-forward",
            "-n",
            &ns,
            "pod/socket",
            "--address",
            "127.0.0.1",
            ":9090",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = forwarded_port(forward.stdout.take().unwrap());
    let body = http_get(port, "/healthz");
    let _ = forward.kill();
    let out = forward.wait_with_output().unwrap();
    assert!(
        body.contains("ok"),
        "GET /healthz through port-forward: {body:?}; kubectl said: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGKILL the socket server's process on the node: the kubelet restarts the container.
    let node = cluster.real_node().unwrap();
    let id = node
        .crictl_output(&[
            "ps",
            "-q",
            "--name",
            "^socket$",
            "--label",
            &format!("io.kubernetes.pod.namespace={ns}"),
        ])
        .unwrap();
    let id = id.lines().next().expect("the socket container").to_string();
    let inspect: serde_json::Value =
        serde_json::from_str(&node.crictl_output(&["inspect", &id]).unwrap()).unwrap();
    let pid = inspect["info"]["pid"]
        .as_i64()
        .expect("the container's pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait::until(
        "the killed socket container to restart and be Ready",
        TIMEOUT,
        Duration::from_millis(200),
        || {
            let pods = pods.clone();
            async move {
                let pod = pods.get_opt("socket").await.ok().flatten()?;
                let restarts = pod
                    .status
                    .as_ref()?
                    .container_statuses
                    .as_ref()?
                    .first()?
                    .restart_count;
                (restarts >= 1 && pod_ready(&pod)).then_some(())
            }
        },
    )
    .await
    .unwrap();

    // Deleting the namespace removes the pods from the node too.
    Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
    wait::until(
        "the namespace's pod sandboxes to leave the node",
        TIMEOUT,
        Duration::from_millis(500),
        || {
            let ns = ns.clone();
            async move {
                let left = node
                    .crictl_output(&["pods", "-q", "--namespace", &ns])
                    .ok()?;
                left.trim().is_empty().then_some(())
            }
        },
    )
    .await
    .unwrap();
}

/// Reads `Forwarding from 127.0.0.1:<port> -> ...` from kubectl port-forward's output, then
/// keeps reading it (kubectl prints a line per connection, and dies of SIGPIPE if nobody reads).
fn forwarded_port(out: std::process::ChildStdout) -> u16 {
    let mut lines = BufReader::new(out).lines();
    let line = lines.next().expect("port-forward printed nothing").unwrap();
    std::thread::spawn(move || for _ in lines.by_ref() {});
    line.split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward output: {line}"))
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body
}

/// `helm` against the cluster, with its caches inside the cluster's folder.
fn helm(cluster: &LocalCluster, args: &[&str]) -> String {
    let home = cluster.dir().join("helm");
    let out = Command::new(cluster.binary("helm").unwrap())
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm install <release>` of the repository's chart into `ns`: watching `ns` only (other
/// real-node tests run operators beside it), the images built here (never pulled), one operator
/// replica, small CPU requests; `sets` are more `--set` values ([`GATEWAY`] for the gateway).
fn install_chart(cluster: &LocalCluster, release: &str, ns: &str, sets: &[String]) {
    let v = version();
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../../charts/liveclass");
    let mut values = vec![
        format!("watchNamespace={ns}"),
        "image.repository=localhost/liveclass/operator".to_owned(),
        format!("image.tag={v}"),
        "image.pullPolicy=Never".to_owned(),
        "replicas=1".to_owned(),
        "resources.requests.cpu=10m".to_owned(),
    ];
    values.extend_from_slice(sets);
    let mut args = vec!["install", release, chart, "--namespace", ns];
    for value in &values {
        args.extend(["--set", value]);
    }
    helm(cluster, &args);
}

/// The chart's gateway, one pod from the image built here, looking classes up every second.
/// The end of a test that installed the chart: the namespace's LiveClasses deleted (their
/// objects with them), the release uninstalled, the namespace deleted.
async fn uninstall_chart(cluster: &LocalCluster, client: kube::Client, release: &str, ns: &str) {
    kubectl(
        cluster,
        &["delete", "-n", ns, "liveclass", "--all", "--wait=true"],
    );
    helm(
        cluster,
        &["uninstall", release, "--namespace", ns, "--wait"],
    );
    Api::<Namespace>::all(client)
        .delete(ns, &DeleteParams::default())
        .await
        .unwrap();
}

fn gateway_values() -> Vec<String> {
    let v = version();
    [
        "gateway.enabled=true".to_owned(),
        "gateway.replicas=1".to_owned(),
        "gateway.refresh=1s".to_owned(),
        "gateway.image.repository=localhost/liveclass/gateway".to_owned(),
        format!("gateway.image.tag={v}"),
        "gateway.image.pullPolicy=Never".to_owned(),
        "gateway.resources.requests.cpu=10m".to_owned(),
    ]
    .into()
}

/// Ready socket pods of the class, and whether its Redis pod is Ready.
async fn class_capacity(pods: &Api<Pod>, class: &str) -> (usize, bool) {
    use kube::api::ListParams;
    let Ok(list) = pods.list(&ListParams::default()).await else {
        return (0, false);
    };
    let mut socket = 0;
    let mut redis = false;
    for pod in &list.items {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let component = labels.get("app.kubernetes.io/name").map(String::as_str);
        let mine = pod
            .metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with(&format!("{class}-")));
        let live = pod.metadata.deletion_timestamp.is_none() && pod_ready(pod);
        match component {
            Some("liveclass-socket") if mine && live => socket += 1,
            Some("liveclass-redis") if mine && live => redis = true,
            _ => {}
        }
    }
    (socket, redis)
}

fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The mission on real pods: the chart installs the operator and the gateway from the images
/// built here; a LiveClass starting in 90 s gets its socket pods and Redis Ready before
/// `start - warmup`; a class of students (the load image, as a Job) comes in through the gateway
/// and comments, one socket process is SIGKILLed mid-class and the drain after the class moves
/// the remaining students, and nothing is lost or duplicated; deleting the LiveClass removes
/// everything it made.
#[tokio::test]
#[ignore = "needs root and the real node's binaries and images; scripts/test runs it"]
async fn a_class_runs_on_the_real_node_through_the_gateway() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Service;
    use std::time::{Instant, SystemTime};

    let students: u32 = std::env::var("LIVECLASS_REAL_NODE_STUDENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let cluster = LocalCluster::shared_with_real_node().await.unwrap();
    let client = cluster.client().await.unwrap();
    let ns = real_node_namespace(cluster, "class").await;
    let v = version();
    let class = "physics";

    // The chart, with the images built here (never pulled) and its gateway.
    let mut sets = gateway_values();
    sets.extend([
        "leaderElection.leaseDuration=6s".to_owned(),
        "leaderElection.renewInterval=2s".to_owned(),
    ]);
    install_chart(cluster, "school", &ns, &sets);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for name in ["school-liveclass-operator", "school-liveclass-gateway"] {
        let what = format!("Deployment {name} to be available on the real node");
        wait::until(&what, TIMEOUT, Duration::from_millis(500), || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get_opt(name).await.ok().flatten()?;
                (d.status?.available_replicas? >= 1).then_some(())
            }
        })
        .await
        .unwrap();
    }

    // A class starting in 90 s, warm-up 30 s: capacity is due at +60 s.
    let created = SystemTime::now();
    let start = created + Duration::from_secs(90);
    let ready_by = Instant::now() + Duration::from_secs(60);
    let class_yaml = format!(
        r#"
apiVersion: liveclass.dev/v1alpha1
kind: LiveClass
metadata: {{ name: {class} }}
spec:
  schedule: {{ start: "{start}", duration: 40s }}
  expectedAttendance: {students}
  warmup: 30s
  cooldown: 5s
  socket:
    image: localhost/liveclass/socket:{v}
    connectionsPerPod: {per_pod}
    headroom: 1.0
    minReplicas: 1
    maxReplicas: 4
    podStartup: 20s
    drainWindow: 10s
    scaleDown: {{ stepPercent: 50, interval: 15s }}
    resources: {{ requests: {{ cpu: 10m, memory: 32Mi }} }}
  redis:
    image: localhost/liveclass/redis:{v}
"#,
        start = rfc3339(start),
        // Two pods, with room for the teacher, so the reactive floor adds none.
        per_pod = students.div_ceil(2) + 100,
    );
    let file = cluster.dir().join(format!("{ns}-class.yaml"));
    std::fs::write(&file, class_yaml).unwrap();
    kubectl(
        cluster,
        &["apply", "-n", &ns, "-f", &file.display().to_string()],
    );

    // Two socket pods and Redis, Running and Ready, before start - warmup.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait::until(
        "2 socket pods and Redis Ready",
        Duration::from_secs(150),
        Duration::from_millis(250),
        || {
            let pods = pods.clone();
            async move { (class_capacity(&pods, class).await == (2, true)).then_some(()) }
        },
    )
    .await
    .unwrap();
    let lead = ready_by.saturating_duration_since(Instant::now());
    assert!(
        Instant::now() <= ready_by,
        "capacity was Ready after start - warmup"
    );
    eprintln!(
        "capacity Ready {:.1}s before start - warmup",
        lead.as_secs_f64()
    );

    // The students: the load image as a Job, through the gateway's Service, with the key of the
    // Secret the operator generated; comments flow from before the start until after the drain.
    let gateway: Service = Api::namespaced(client.clone(), &ns)
        .get("school-liveclass-gateway")
        .await
        .unwrap();
    let gateway_ip = gateway.spec.unwrap().cluster_ip.unwrap();
    // Two groups of students: half leave when the class ends, the other half stay through the
    // drain (end 40 s, cooldown 5 s, the drain step: preStop 5 s, drain window 10 s, and slack).
    // With half the class gone, observed attendance no longer holds the second pod.
    let job = |name: &str, count: u32, until: SystemTime| {
        let sending = until
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .as_secs()
            .max(30);
        let yaml = format!(
            r#"
apiVersion: batch/v1
kind: Job
metadata: {{ name: {name} }}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      enableServiceLinks: false
      containers:
        - name: load
          image: localhost/liveclass/load:{v}
          imagePullPolicy: Never
          args: ["--url", "ws://{gateway_ip}/{ns}/{class}/ws", "--students", "{count}",
                 "--class-id", "{ns}/{class}", "--secret-file", "/var/run/liveclass/token/hs256-key",
                 "--user-prefix", "{name}-", "--run-id", "{name}",
                 "--arrive-within", "40s", "--send-from-start", "--comment-rate", "1",
                 "--duration", "{sending}s", "--drain", "30s", "--max-retries", "40", "--no-progress"]
          volumeMounts: [{{ name: token, mountPath: /var/run/liveclass/token, readOnly: true }}]
          securityContext: {{ runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false }}
      volumes: [{{ name: token, secret: {{ secretName: {class}-token }} }}]
"#
        );
        let file = cluster.dir().join(format!("{ns}-{name}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        kubectl(
            cluster,
            &["apply", "-n", &ns, "-f", &file.display().to_string()],
        );
    };
    let leaving = students / 2;
    let staying = students - leaving;
    job("leaving", leaving, start + Duration::from_secs(40));
    job("staying", staying, start + Duration::from_secs(40 + 5 + 75));

    // Mid-class, SIGKILL one socket server: the kubelet restarts it, and its students come back
    // through the gateway and recover what they missed with `since`.
    let kill_at = start + Duration::from_secs(10);
    if let Ok(wait) = kill_at.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    let node = cluster.real_node().unwrap();
    let ids = node
        .crictl_output(&[
            "ps",
            "-q",
            "--name",
            "^socket$",
            "--label",
            &format!("io.kubernetes.pod.namespace={ns}"),
        ])
        .unwrap();
    let id = ids.lines().next().expect("a socket container").to_string();
    let inspect: serde_json::Value =
        serde_json::from_str(&node.crictl_output(&["inspect", &id]).unwrap()).unwrap();
    let pid = inspect["info"]["pid"]
        .as_i64()
        .expect("the container's pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eprintln!("SIGKILLed socket container {id} (pid {pid})");

    // After end + cooldown the class drains in steps: the socket Deployment goes down to one pod
    // while the students are still there.
    let socket_deployment = format!("{class}-socket");
    wait::until(
        "the drain to take the socket Deployment to 1 replica",
        Duration::from_secs(180),
        Duration::from_millis(500),
        || {
            let deployments = deployments.clone();
            let name = socket_deployment.clone();
            async move {
                let d = deployments.get_opt(&name).await.ok().flatten()?;
                (d.spec.replicas? == 1).then_some(())
            }
        },
    )
    .await
    .unwrap();
    eprintln!(
        "the operator drained to 1 socket pod {:.1}s after the start",
        SystemTime::now()
            .duration_since(start)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    );
    // The drained pod hands its students over and goes, while the class is still sending.
    wait::until(
        "the drained socket pod to be gone",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let pods = pods.clone();
            async move {
                let list = pods.list(&Default::default()).await.ok()?;
                let socket = list
                    .items
                    .iter()
                    .filter(|p| {
                        p.metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.starts_with(&format!("{class}-socket-")))
                    })
                    .count();
                (socket == 1).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let still_running = jobs
        .get("staying")
        .await
        .unwrap()
        .status
        .and_then(|s| s.active)
        .unwrap_or(0);
    eprintln!(
        "the drained pod was gone {:.1}s after the start",
        SystemTime::now()
            .duration_since(start)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    );
    assert_eq!(
        still_running, 1,
        "the staying students left before the drain was over"
    );

    // The students' verdict, per group: 0 lost, 0 duplicated (the load generator exits 1
    // otherwise), everyone connected.
    let mut frames = 0;
    for (name, count) in [("leaving", leaving), ("staying", staying)] {
        let what = format!("the {name} students' Job to finish");
        let done = wait::until(
            &what,
            Duration::from_secs(300),
            Duration::from_secs(1),
            || {
                let jobs = jobs.clone();
                async move {
                    let status = jobs.get_opt(name).await.ok().flatten()?.status?;
                    (status.succeeded.unwrap_or(0) + status.failed.unwrap_or(0) > 0)
                        .then_some(status.succeeded.unwrap_or(0) > 0)
                }
            },
        )
        .await
        .unwrap();
        let report = kubectl(cluster, &["logs", "-n", &ns, &format!("job/{name}")]);
        eprintln!(
            "the {name} students' Job ended {:.1}s after the start:\n{report}",
            SystemTime::now()
                .duration_since(start)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        );
        assert!(
            done,
            "the class was not clean for the {name} students:\n{report}"
        );
        assert!(
            report.contains(&format!("connected    {n} of {n}", n = count + 1)),
            "{report}"
        );
        assert!(report.contains("lost 0 · duplicated 0"), "{report}");
        let number = |after: &str| -> u64 {
            report
                .split(after)
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        assert!(
            number("reconnects   ") > 0,
            "none of the {name} students reconnected after the SIGKILL:\n{report}"
        );
        if name == "staying" {
            frames = number("reconnect frames ");
        }
    }
    // The drained pod told its students to move, and they did, with `since`, losing nothing.
    assert!(
        frames > 0,
        "the drain moved none of the students who stayed"
    );

    // Deleting the LiveClass removes everything it made.
    kubectl(
        cluster,
        &[
            "delete",
            "-n",
            &ns,
            "liveclass",
            class,
            "--wait=true",
            "--timeout=120s",
        ],
    );
    wait::until(
        "the class's pods to be gone",
        TIMEOUT,
        Duration::from_millis(500),
        || {
            let pods = pods.clone();
            async move {
                let list = pods.list(&Default::default()).await.ok()?;
                let left = list
                    .items
                    .iter()
                    .filter(|p| {
                        p.metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.starts_with(&format!("{class}-")))
                    })
                    .count();
                (left == 0).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let left = kubectl(
        cluster,
        &[
            "get",
            "-n",
            &ns,
            "deploy,statefulset,svc,secret,pdb",
            "-l",
            &format!("app.kubernetes.io/instance={class}"),
            "-o",
            "name",
        ],
    );
    assert!(
        left.trim().is_empty(),
        "left after deleting the LiveClass: {left}"
    );

    uninstall_chart(cluster, client, "school", &ns).await;
}

/// Issue 13 on real pods: a LiveClass with `redis.mode: Replicated` gets three Redis nodes and
/// three Sentinels from the operator the chart installs; with students commenting, the primary's
/// Redis process is SIGKILLed (the kubelet restarts it at once, faster than the Sentinels
/// notice). The Sentinels promote a replica, the operator reports the new primary and a
/// `RedisFailover` Event, the socket servers follow without restarting, the students lose and
/// duplicate nothing (a comment refused as `unavailable` during the failover is the server's
/// explicit answer, which the client may send again), and the old primary rejoins as a replica.
#[tokio::test]
#[ignore = "needs root and the real node's binaries and images; scripts/test runs it"]
async fn a_replicated_class_survives_losing_its_redis_primary_on_the_real_node() {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::{Event, Service};
    use std::time::{Instant, SystemTime};

    let students: u32 = 200;
    let cluster = LocalCluster::shared_with_real_node().await.unwrap();
    let client = cluster.client().await.unwrap();
    let ns = real_node_namespace(cluster, "replicated").await;
    let v = version();
    let class = "chemistry";
    install_chart(cluster, "lab", &ns, &[]);

    // A class on now, for a few minutes, with a Replicated Redis.
    let start = SystemTime::now() + Duration::from_secs(30);
    let class_yaml = format!(
        r#"
apiVersion: liveclass.dev/v1alpha1
kind: LiveClass
metadata: {{ name: {class} }}
spec:
  schedule: {{ start: "{start}", duration: 4m }}
  expectedAttendance: {students}
  warmup: 10s
  cooldown: 5s
  socket:
    image: localhost/liveclass/socket:{v}
    connectionsPerPod: 1000
    minReplicas: 2
    maxReplicas: 2
    podStartup: 20s
    resources: {{ requests: {{ cpu: 10m, memory: 32Mi }} }}
  redis:
    image: localhost/liveclass/redis:{v}
    mode: Replicated
"#,
        start = rfc3339(start),
    );
    let file = cluster.dir().join(format!("{ns}-class.yaml"));
    std::fs::write(&file, class_yaml).unwrap();
    kubectl(
        cluster,
        &["apply", "-n", &ns, "-f", &file.display().to_string()],
    );

    // Ready as the operator judges it: every node in sync, a Sentinel quorum, a primary named.
    let kubeconfig = cluster.kubeconfig_path().to_path_buf();
    let kubectl_bin = cluster.binary("kubectl").unwrap();
    let redis_state = move |ns: String| {
        let (kubeconfig, kubectl_bin) = (kubeconfig.clone(), kubectl_bin.clone());
        async move {
            let out = tokio::process::Command::new(kubectl_bin)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["get", "liveclass", class, "-n", &ns, "-o", "json"])
                .output()
                .await
                .ok()?;
            let lc: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let status = &lc["status"];
            let ready = status["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "RedisReady" && c["status"] == "True");
            Some((ready, status["redisPrimary"].as_str().map(str::to_owned)))
        }
    };
    // What the pods and the class say, for a failure message.
    let diagnose = || {
        let mut out = kubectl(cluster, &["get", "pods", "-n", &ns, "-o", "wide"]);
        out += &kubectl(
            cluster,
            &[
                "get",
                "liveclass",
                class,
                "-n",
                &ns,
                "-o",
                "jsonpath={.status}",
            ],
        );
        for pod in [
            format!("{class}-redis-0"),
            format!("{class}-redis-1"),
            format!("{class}-sentinel-0"),
        ] {
            let out_pod = Command::new(cluster.binary("kubectl").unwrap())
                .arg("--kubeconfig")
                .arg(cluster.kubeconfig_path())
                .args(["logs", "-n", &ns, &pod, "--tail", "30"])
                .output()
                .unwrap();
            out += &format!(
                "\n--- {pod} ---\n{}{}",
                String::from_utf8_lossy(&out_pod.stdout),
                String::from_utf8_lossy(&out_pod.stderr)
            );
        }
        out
    };
    let first = wait::until(
        "RedisReady with a primary named",
        Duration::from_secs(240),
        Duration::from_millis(500),
        || {
            let state = redis_state(ns.clone());
            async move {
                match state.await? {
                    (true, Some(primary)) => Some(primary),
                    _ => None,
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", diagnose()));
    eprintln!("Replicated Redis Ready; the Sentinels name {first}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait::until(
        "2 socket pods Ready",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let pods = pods.clone();
            async move { (class_capacity(&pods, class).await.0 == 2).then_some(()) }
        },
    )
    .await
    .unwrap();

    // The students, straight to the class's socket Service.
    let socket: Service = Api::namespaced(client.clone(), &ns)
        .get(&format!("{class}-socket"))
        .await
        .unwrap();
    let socket_ip = socket.spec.unwrap().cluster_ip.unwrap();
    let yaml = format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{ name: students }}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      enableServiceLinks: false
      containers:
        - name: load
          image: localhost/liveclass/load:{v}
          imagePullPolicy: Never
          args: ["--url", "ws://{socket_ip}:8080/ws", "--students", "{students}",
                 "--class-id", "{ns}/{class}", "--secret-file", "/var/run/liveclass/token/hs256-key",
                 "--run-id", "replicated", "--arrive-within", "10s", "--comment-rate", "2",
                 "--duration", "60s", "--drain", "30s", "--max-retries", "40",
                 "--expect-refusal", "unavailable", "--no-progress"]
          volumeMounts: [{{ name: token, mountPath: /var/run/liveclass/token, readOnly: true }}]
          securityContext: {{ runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false }}
      volumes: [{{ name: token, secret: {{ secretName: {class}-token }} }}]
"#
    );
    let file = cluster.dir().join(format!("{ns}-students.yaml"));
    std::fs::write(&file, yaml).unwrap();
    kubectl(
        cluster,
        &["apply", "-n", &ns, "-f", &file.display().to_string()],
    );
    // The operator reads the attendance without the class's password: the two figures are all
    // that Redis lets it read (docs/operator.md, "The class's Redis").
    let attendance = wait::until(
        "the operator to see the students in the class's Redis",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let kubeconfig = cluster.kubeconfig_path().to_path_buf();
            let kubectl_bin = cluster.binary("kubectl").unwrap();
            let ns = ns.clone();
            async move {
                let out = tokio::process::Command::new(kubectl_bin)
                    .arg("--kubeconfig")
                    .arg(kubeconfig)
                    .args(["get", "liveclass", class, "-n", &ns, "-o", "json"])
                    .output()
                    .await
                    .ok()?;
                let lc: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                let connected = lc["status"]["connectedStudents"].as_u64()?;
                (connected >= u64::from(students)).then_some(connected)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", diagnose()));
    eprintln!("the operator sees {attendance} connected");
    tokio::time::sleep(Duration::from_secs(5)).await;

    // SIGKILL the primary's Redis process; the kubelet restarts the container at once.
    let primary_pod = first.split('.').next().unwrap().to_owned();
    let node = cluster.real_node().unwrap();
    let ids = node
        .crictl_output(&[
            "ps",
            "-q",
            "--name",
            "^redis$",
            "--label",
            &format!("io.kubernetes.pod.namespace={ns}"),
            "--label",
            &format!("io.kubernetes.pod.name={primary_pod}"),
        ])
        .unwrap();
    let id = ids
        .lines()
        .next()
        .expect("the primary's container")
        .to_string();
    let inspect: serde_json::Value =
        serde_json::from_str(&node.crictl_output(&["inspect", &id]).unwrap()).unwrap();
    let pid = inspect["info"]["pid"]
        .as_i64()
        .expect("the container's pid");
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eprintln!("SIGKILLed the primary {primary_pod} (container {id}, pid {pid})");

    // The Sentinels promote a replica; the operator says so in status and in an Event.
    let promoted = wait::until(
        "the operator to report a new primary",
        Duration::from_secs(90),
        Duration::from_millis(250),
        || {
            let state = redis_state(ns.clone());
            let first = first.clone();
            async move { state.await?.1.filter(|p| *p != first) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", diagnose()));
    eprintln!(
        "the operator reported {promoted} as the primary {:.1}s after the kill",
        killed.elapsed().as_secs_f64()
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    wait::until(
        "a RedisFailover Event",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let events = events.clone();
            async move {
                let list = events.list(&Default::default()).await.ok()?;
                list.items
                    .iter()
                    .find(|e| e.reason.as_deref() == Some("RedisFailover"))
                    .map(|e| eprintln!("Event: {}", e.message.clone().unwrap_or_default()))
            }
        },
    )
    .await
    .unwrap();

    // The students' verdict: everyone connected, 0 lost, 0 duplicated.
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let done = wait::until(
        "the students' Job to finish",
        Duration::from_secs(300),
        Duration::from_secs(1),
        || {
            let jobs = jobs.clone();
            async move {
                let status = jobs.get_opt("students").await.ok().flatten()?.status?;
                (status.succeeded.unwrap_or(0) + status.failed.unwrap_or(0) > 0)
                    .then_some(status.succeeded.unwrap_or(0) > 0)
            }
        },
    )
    .await
    .unwrap();
    let report = kubectl(cluster, &["logs", "-n", &ns, "job/students"]);
    eprintln!("the students' report:\n{report}");
    assert!(
        done,
        "the class was not clean through the failover:\n{report}"
    );
    assert!(
        report.contains(&format!("connected    {n} of {n}", n = students + 1)),
        "{report}"
    );
    assert!(report.contains("lost 0 · duplicated 0"), "{report}");

    // The socket servers followed the failover without a restart.
    let list = pods.list(&Default::default()).await.unwrap();
    for pod in list.items.iter().filter(|p| {
        p.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with(&format!("{class}-socket-")))
    }) {
        let restarts: i32 = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).sum())
            .unwrap_or(0);
        assert_eq!(
            restarts,
            0,
            "socket pod {} restarted",
            pod.metadata.name.as_deref().unwrap_or("?")
        );
    }

    // The old primary is back as a replica of the new one, and Redis is Ready again.
    wait::until(
        "RedisReady again, with the old primary as a replica",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let state = redis_state(ns.clone());
            async move { state.await?.0.then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", diagnose()));
    let info = kubectl(
        cluster,
        &[
            "exec",
            "-n",
            &ns,
            &primary_pod,
            "-c",
            "redis",
            "--",
            "redis-cli",
            "INFO",
            "replication",
        ],
    );
    assert!(info.contains("role:slave"), "{info}");
    assert!(info.contains("master_link_status:up"), "{info}");
    let log = kubectl(
        cluster,
        &[
            "logs",
            "-n",
            &ns,
            &primary_pod,
            "-c",
            "redis",
            "--previous=false",
        ],
    );
    assert!(log.contains("waiting for a failover"), "{log}");

    kubectl(
        cluster,
        &[
            "delete",
            "-n",
            &ns,
            "liveclass",
            class,
            "--wait=true",
            "--timeout=120s",
        ],
    );
    uninstall_chart(cluster, client, "lab", &ns).await;
}
