//! One gateway for every class, on the real node: classes come and go while students stay
//! connected through the same Caddy pod, which never restarts.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::ListParams;
use liveclass_testkit::client::ClientError;
use liveclass_testkit::{LocalCluster, TestClient, TokenMinter, wait};
use serde_json::{Value, json};

use crate::{
    class_capacity, gateway_values, install_chart, kubectl, real_node_namespace, rfc3339,
    uninstall_chart, version,
};

const STUDENTS: usize = 10;
const T: Duration = Duration::from_secs(10);

/// A LiveClass on now (its warm-up already begun), one socket pod, a Redis of its own.
fn class_yaml(name: &str) -> String {
    let v = version();
    let start = rfc3339(SystemTime::now() + Duration::from_secs(20));
    format!(
        r#"
apiVersion: liveclass.dev/v1alpha1
kind: LiveClass
metadata: {{ name: {name} }}
spec:
  schedule: {{ start: "{start}", duration: 10m }}
  expectedAttendance: {STUDENTS}
  warmup: 60s
  cooldown: 5s
  socket:
    image: localhost/liveclass/socket:{v}
    connectionsPerPod: 100
    minReplicas: 1
    maxReplicas: 1
    podStartup: 20s
    resources: {{ requests: {{ cpu: 10m, memory: 32Mi }} }}
  redis:
    image: localhost/liveclass/redis:{v}
"#
    )
}

/// The key of the token Secret the operator generated for `class`.
async fn minter(secrets: &Api<Secret>, class: &str) -> TokenMinter {
    let name = format!("{class}-token");
    let secret = wait::until(
        &format!("the Secret {name}"),
        T,
        Duration::from_millis(200),
        || {
            let secrets = secrets.clone();
            let name = name.clone();
            async move { secrets.get_opt(&name).await.ok().flatten() }
        },
    )
    .await
    .unwrap();
    let key = &secret.data.unwrap()["hs256-key"].0;
    TokenMinter::new(String::from_utf8(key.clone()).unwrap().trim())
}

/// A class's people, connected through the gateway.
struct Room {
    teacher: TestClient,
    students: Vec<TestClient>,
}

impl Room {
    /// Everyone gets the teacher's next comment: nobody was disconnected.
    async fn all_still_here(&mut self, text: &str) {
        self.teacher
            .send_json(&json!({"t":"comment","text":text}))
            .await
            .unwrap();
        for (i, student) in self.students.iter_mut().enumerate() {
            let comment = student.recv_type("comment", T).await.unwrap_or_else(|e| {
                panic!("student {i} did not get {text:?} (its socket closed?): {e:?}")
            });
            assert_eq!(comment["text"], text);
        }
    }
}

/// What the gateway answers on `path`, status and JSON body. A plain GET takes the same route
/// an upgrade does and reads the whole body: to an upgrade, Caddy writes a refusal's head and
/// body apart (it flushes every write), and tungstenite may report the head alone.
fn answer(gateway: std::net::SocketAddr, path: &str) -> Result<(u16, Value), String> {
    let (status, body) =
        liveclass_testkit::http::http_get(gateway, path).map_err(|e| format!("GET {path}: {e}"))?;
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

/// The status an upgrade is refused with (the body: see [`answer`]).
async fn refused_upgrade(url: &str, token: &str) -> Option<u16> {
    match tokio::time::timeout(T, TestClient::connect(url, token, None)).await {
        Ok(Err(ClientError::Refused { status, .. })) => Some(status),
        _ => None,
    }
}

/// Everyone of `class` connected through `base`; returns when the first one got in, timed from
/// when the class's capacity was Ready.
async fn join(base: &str, ns: &str, class: &str, minter: &TokenMinter) -> (Room, Duration) {
    let url = format!("{base}/{ns}/{class}/ws");
    let claim = format!("{ns}/{class}");
    let ready = Instant::now();
    let teacher = wait::until(
        &format!("{url} to take the teacher"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let (url, token) = (url.clone(), minter.teacher("teacher", &claim));
            async move {
                let mut client = TestClient::connect(&url, &token, None).await.ok()?;
                client.recv_type("hello", T).await.ok()?;
                Some(client)
            }
        },
    )
    .await
    .unwrap();
    let reachable = ready.elapsed();
    let mut students = Vec::new();
    for i in 0..STUDENTS {
        let token = minter.student(&format!("{class}-{i}"), &claim);
        let mut student = TestClient::connect(&url, &token, None).await.unwrap();
        student.recv_type("hello", T).await.unwrap();
        students.push(student);
    }
    (Room { teacher, students }, reachable)
}

/// The gateway pod: its uid and its container's restart count.
async fn gateway_pod(pods: &Api<Pod>) -> (String, String, i32) {
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=gateway"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1, "one gateway pod");
    let pod = &list.items[0];
    let status = pod.status.clone().unwrap();
    let restarts = status
        .container_statuses
        .unwrap_or_default()
        .iter()
        .map(|c| c.restart_count)
        .sum();
    (
        pod.metadata.uid.clone().unwrap(),
        status.pod_ip.unwrap(),
        restarts,
    )
}

async fn wait_capacity(pods: &Api<Pod>, class: &str) {
    wait::until(
        &format!("{class}'s socket pod and Redis Ready"),
        Duration::from_secs(150),
        Duration::from_millis(250),
        || async move { (class_capacity(pods, class).await == (1, true)).then_some(()) },
    )
    .await
    .unwrap();
}

fn apply_class(cluster: &LocalCluster, ns: &str, class: &str) {
    let file = cluster.dir().join(format!("{ns}-{class}.yaml"));
    std::fs::write(&file, class_yaml(class)).unwrap();
    kubectl(
        cluster,
        &["apply", "-n", ns, "-f", &file.display().to_string()],
    );
}

/// Issue 14's "what must be shown" on routing: two classes through one gateway, a third created
/// (reachable within seconds, no socket closed, the gateway not restarted), one deleted (its
/// route answers 404 class_not_live, JSON), an unknown class and the socket pods' `/metrics`
/// refused.
#[tokio::test]
#[ignore = "needs root and the real node's binaries and images; scripts/test runs it"]
async fn one_gateway_routes_every_class_without_a_restart_on_the_real_node() {
    let cluster = LocalCluster::shared_with_real_node().await.unwrap();
    let client = cluster.client().await.unwrap();
    let ns = real_node_namespace(cluster, "gateway").await;
    // No class is named anywhere in the chart's values.
    install_chart(cluster, "hall", &ns, &gateway_values());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait::until(
        "the gateway to be available",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let deployments = deployments.clone();
            async move {
                let d = deployments
                    .get_opt("hall-liveclass-gateway")
                    .await
                    .ok()
                    .flatten()?;
                (d.status?.available_replicas? >= 1).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let (gateway_uid, gateway_ip, restarts) = gateway_pod(&pods).await;
    assert_eq!(restarts, 0);
    let base = format!("ws://{gateway_ip}:8080");

    // Two classes, their students in through the one gateway.
    for class in ["algebra", "biology"] {
        apply_class(cluster, &ns, class);
    }
    let mut rooms = Vec::new();
    for class in ["algebra", "biology"] {
        wait_capacity(&pods, class).await;
        let minter = minter(&secrets, class).await;
        let (room, reachable) = join(&base, &ns, class, &minter).await;
        eprintln!(
            "{class}: reachable through the gateway {:.1}s after its capacity was Ready",
            reachable.as_secs_f64()
        );
        rooms.push(room);
    }
    for room in &mut rooms {
        room.all_still_here("before the third class").await;
    }

    // A third class: reachable within seconds of its pod being Ready; nobody else notices.
    let created = Instant::now();
    apply_class(cluster, &ns, "chemistry");
    wait_capacity(&pods, "chemistry").await;
    let minter_c = minter(&secrets, "chemistry").await;
    let (mut chemistry, reachable) = join(&base, &ns, "chemistry", &minter_c).await;
    eprintln!(
        "chemistry: reachable {:.1}s after its capacity was Ready ({:.1}s after kubectl apply)",
        reachable.as_secs_f64(),
        created.elapsed().as_secs_f64()
    );
    assert!(
        reachable < Duration::from_secs(5),
        "the new class took {reachable:?} to be reachable after its pod was Ready"
    );
    for room in &mut rooms {
        room.all_still_here("after the third class").await;
    }
    chemistry.all_still_here("chemistry is on").await;

    // Delete one: its route answers 404 class_not_live, as JSON, once its pods are gone.
    let deleted = Instant::now();
    kubectl(
        cluster,
        &["delete", "-n", &ns, "liveclass", "biology", "--wait=true"],
    );
    let biology_token = minter_c.student("late", &format!("{ns}/biology"));
    let gateway_http = std::net::SocketAddr::new(gateway_ip.parse().unwrap(), 8080);
    let biology_path = format!("/{ns}/biology/ws?token={biology_token}");
    let last = std::sync::Mutex::new(String::new());
    let found = wait::until(
        "the deleted class's route to answer 404",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || {
            let (path, last) = (biology_path.clone(), &last);
            async move {
                let got = answer(gateway_http, &path);
                *last.lock().unwrap() = format!("{got:?}");
                got.ok().filter(|(status, _)| *status == 404)
            }
        },
    )
    .await;
    let Ok((_, body)) = found else {
        let gateway_log = kubectl(
            cluster,
            &[
                "logs",
                "-n",
                &ns,
                "deployment/hall-liveclass-gateway",
                "--tail",
                "40",
            ],
        );
        let objects = kubectl(
            cluster,
            &[
                "get",
                "-n",
                &ns,
                "pods,services,endpointslices,liveclasses",
                "-o",
                "wide",
            ],
        );
        panic!(
            "the deleted class's route never answered 404; last answer: {}\n{objects}\n{gateway_log}",
            last.lock().unwrap()
        );
    };
    eprintln!(
        "biology: 404 {:.1}s after kubectl delete",
        deleted.elapsed().as_secs_f64()
    );
    assert_eq!(body["error"], "class_not_live", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("{ns}/biology"))),
        "{body}"
    );

    // The upgrade itself is refused with that status.
    assert_eq!(
        refused_upgrade(&format!("{base}/{ns}/biology/ws"), &biology_token).await,
        Some(404)
    );

    // An unknown class: 404 at once, not a hang for lb_try_duration.
    let asked = Instant::now();
    let (status, body) = answer(gateway_http, &format!("/{ns}/nothing/ws?token=x")).unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("class_not_live")),
        "{body}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    // Another namespace than the one this release watches is not routed at all.
    let (status, body) = answer(gateway_http, "/kube-system/algebra/ws?token=x").unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );

    // The socket pods' /metrics exists on their admin port, and the gateway does not reach it.
    for path in [
        "/metrics".to_owned(),
        format!("/{ns}/algebra/metrics"),
        format!("/{ns}/algebra/ws/../metrics"),
        format!("/{ns}/algebra/readyz"),
    ] {
        let (status, body) = liveclass_testkit::http::http_get(gateway_http, &path).unwrap();
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(
            (status, body["error"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }
    let socket_pod = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=liveclass-socket"))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("algebra-"))
        })
        .unwrap();
    let admin = std::net::SocketAddr::new(
        socket_pod.status.unwrap().pod_ip.unwrap().parse().unwrap(),
        9090,
    );
    let (status, metrics) = liveclass_testkit::http::http_get(admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("liveclass_"), "{metrics}");

    // Through all of it: the same gateway pod, never restarted, and algebra never disconnected.
    rooms.swap_remove(1); // biology's sockets closed with their pods
    rooms[0].all_still_here("at the end").await;
    chemistry.all_still_here("at the end").await;
    let (uid, _, restarts) = gateway_pod(&pods).await;
    assert_eq!(
        (uid, restarts),
        (gateway_uid, 0),
        "the gateway pod was replaced or restarted"
    );

    drop((rooms, chemistry));
    uninstall_chart(cluster, client, "hall", &ns).await;
}

/// HTTPS from a Kubernetes TLS Secret, the kind cert-manager writes: the chart's gateway with
/// `gateway.tls.secretName`, a certificate made here for the gateway Service's DNS name, and
/// students (the load image, as a Job trusting the CA with `--ca-file`) over `wss://` by that
/// name: every one connected, nothing lost.
#[tokio::test]
#[ignore = "needs root and the real node's binaries and images; scripts/test runs it"]
async fn the_gateway_serves_wss_from_a_tls_secret_on_the_real_node() {
    use k8s_openapi::api::batch::v1::Job;

    let cluster = LocalCluster::shared_with_real_node().await.unwrap();
    let client = cluster.client().await.unwrap();
    let ns = real_node_namespace(cluster, "wss").await;
    let v = version();
    let gateway = "secure-liveclass-gateway";
    let host = format!("{gateway}.{ns}.svc");
    let dir = cluster.dir().join(format!("{ns}-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let certificate =
        liveclass_testkit::tls::local_certificate(&dir, &[&host, &format!("{host}.cluster.local")])
            .unwrap();
    kubectl(
        cluster,
        &[
            "create",
            "secret",
            "tls",
            "gateway-tls",
            "-n",
            &ns,
            "--cert",
            &certificate.cert.display().to_string(),
            "--key",
            &certificate.key.display().to_string(),
        ],
    );
    kubectl(
        cluster,
        &[
            "create",
            "configmap",
            "school-ca",
            "-n",
            &ns,
            &format!("--from-file=ca.pem={}", certificate.ca.display()),
        ],
    );
    let mut sets = gateway_values();
    sets.extend([
        "gateway.tls.secretName=gateway-tls".to_owned(),
        "gateway.service.port=443".to_owned(),
    ]);
    install_chart(cluster, "secure", &ns, &sets);
    let class = "geometry";
    apply_class(cluster, &ns, class);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_capacity(&pods, class).await;

    let students = STUDENTS * 2;
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
          args: ["--url", "wss://{host}/{ns}/{class}/ws", "--ca-file", "/var/run/school-ca/ca.pem",
                 "--students", "{students}", "--class-id", "{ns}/{class}",
                 "--secret-file", "/var/run/liveclass/token/hs256-key", "--run-id", "wss",
                 "--arrive-within", "5s", "--comment-rate", "1", "--duration", "15s",
                 "--drain", "15s", "--max-retries", "40", "--no-progress"]
          volumeMounts:
            - {{ name: token, mountPath: /var/run/liveclass/token, readOnly: true }}
            - {{ name: ca, mountPath: /var/run/school-ca, readOnly: true }}
          securityContext: {{ runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false }}
      volumes:
        - {{ name: token, secret: {{ secretName: {class}-token }} }}
        - {{ name: ca, configMap: {{ name: school-ca }} }}
"#
    );
    let file = cluster.dir().join(format!("{ns}-students.yaml"));
    std::fs::write(&file, yaml).unwrap();
    kubectl(
        cluster,
        &["apply", "-n", &ns, "-f", &file.display().to_string()],
    );
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let done = wait::until(
        "the students' Job to finish",
        Duration::from_secs(180),
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
    eprintln!("the students' report over wss://:\n{report}");
    assert!(done, "the class over wss:// was not clean:\n{report}");
    assert!(
        report.contains(&format!("connected    {n} of {n}", n = students + 1)),
        "{report}"
    );
    assert!(report.contains("lost 0 · duplicated 0"), "{report}");

    uninstall_chart(cluster, client, "secure", &ns).await;
}

/// The Ready gateway pods: name and address, once there are `n`.
async fn gateway_pods(pods: &Api<Pod>, n: usize) -> Vec<(String, String)> {
    wait::until(
        &format!("{n} gateway pods Ready"),
        Duration::from_secs(120),
        Duration::from_millis(500),
        || async move {
            let list = pods
                .list(&ListParams::default().labels("app.kubernetes.io/component=gateway"))
                .await
                .ok()?;
            let ready: Vec<(String, String)> = list
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && crate::pod_ready(p))
                .filter_map(|p| Some((p.metadata.name?, p.status?.pod_ip?)))
                .collect();
            (ready.len() == n).then_some(ready)
        },
    )
    .await
    .unwrap()
}

/// Issue 14's gentle drain: a gateway pod deleted (as a scale-down, a rollout or a node drain
/// does) hands its students over — the operator sees it terminating, the socket server tells
/// the students who came through it to reconnect one at a time over `gateway.handoverSeconds`
/// (each `reconnect`, then 1001) while the pod's preStop holds Caddy up; nobody's socket is
/// cut by Caddy, and those on the other gateway pod notice nothing.
#[tokio::test]
#[ignore = "needs root and the real node's binaries and images; scripts/test runs it"]
async fn a_gateway_pod_that_goes_hands_its_students_over_one_by_one_on_the_real_node() {
    let cluster = LocalCluster::shared_with_real_node().await.unwrap();
    let client = cluster.client().await.unwrap();
    let ns = real_node_namespace(cluster, "handover").await;
    let window = Duration::from_secs(6);
    let mut sets = gateway_values();
    sets.extend([
        "gateway.autoscale.enabled=false".to_owned(),
        "gateway.replicas=2".to_owned(),
        format!("gateway.handoverSeconds={}", window.as_secs()),
    ]);
    install_chart(cluster, "relay", &ns, &sets);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let class = "history";
    apply_class(cluster, &ns, class);
    wait_capacity(&pods, class).await;
    let gateways = gateway_pods(&pods, 2).await;
    let (leaving, leaving_ip) = gateways[0].clone();
    let staying_ip = gateways[1].1.clone();
    let minter = minter(&secrets, class).await;
    let claim = format!("{ns}/{class}");

    // The teacher and some students through the gateway pod that stays, the rest through the
    // one that will go.
    let (mut room, _) = join(&format!("ws://{staying_ip}:8080"), &ns, class, &minter).await;
    let leaving_url = format!("ws://{leaving_ip}:8080/{ns}/{class}/ws");
    let mut moving = Vec::new();
    for i in 0..STUDENTS {
        let token = minter.student(&format!("moving-{i}"), &claim);
        let mut student = TestClient::connect(&leaving_url, &token, None)
            .await
            .unwrap();
        student.recv_type("hello", T).await.unwrap();
        moving.push(student);
    }
    room.all_still_here("before the gateway pod goes").await;

    let deleted = Instant::now();
    kubectl(
        cluster,
        &["delete", "pod", "-n", &ns, &leaving, "--wait=false"],
    );
    let readers: Vec<_> = moving
        .into_iter()
        .map(|mut student| {
            tokio::spawn(async move {
                let reconnect = student
                    .recv_type("reconnect", window + Duration::from_secs(10))
                    .await;
                let at = deleted.elapsed();
                let close = student.recv(Duration::from_secs(3)).await;
                (reconnect.map(|_| at), close)
            })
        })
        .collect();
    let mut moments = Vec::new();
    for reader in readers {
        let (reconnect, close) = reader.await.unwrap();
        let at = reconnect.unwrap_or_else(|e| {
            let logs = |what: &str| {
                kubectl(
                    cluster,
                    &["logs", "-n", &ns, what, "--tail", "30", "--all-containers"],
                )
            };
            panic!(
                "a student of the leaving gateway pod got no reconnect: {e:?}\noperator:\n{}\nsocket:\n{}",
                logs("deployment/relay-liveclass-operator"),
                logs(&format!("deployment/{class}-socket")),
            )
        });
        assert!(
            matches!(
                &close,
                Ok(liveclass_testkit::client::Received::Close(Some((1001, _))))
            ),
            "after reconnect, expected the server's 1001: {close:?}"
        );
        moments.push(at);
    }
    moments.sort_unstable();
    let spread = moments[moments.len() - 1] - moments[0];
    eprintln!(
        "hand-over: {} students told to reconnect from {:.1}s to {:.1}s after the delete (window {window:?})",
        moments.len(),
        moments[0].as_secs_f64(),
        moments[moments.len() - 1].as_secs_f64()
    );
    assert!(
        spread >= window / 2,
        "the hand-over came all at once: {moments:?}"
    );
    assert!(
        moments[moments.len() - 1] < window + Duration::from_secs(5),
        "moved only after the pod's preStop: {moments:?}"
    );
    // They come back through the gateway pod that stays, with their place.
    let token = minter.student("moving-0", &claim);
    let mut back = TestClient::connect(
        &format!("ws://{staying_ip}:8080/{ns}/{class}/ws"),
        &token,
        None,
    )
    .await
    .unwrap();
    back.recv_type("hello", T).await.unwrap();
    room.students.push(back);
    // Those on the other pod noticed nothing.
    room.all_still_here("after the hand-over").await;

    drop(room);
    uninstall_chart(cluster, client, "relay", &ns).await;
}
