//! [`LocalCluster`]: a real Kubernetes control plane on loopback, for tests and the demo.
//!
//! Two flavours:
//! - **API only** — etcd + kube-apiserver. Starts in seconds; enough for CRDs, CEL validation,
//!   server-side apply and anything else that is the API server's job.
//! - **With pods** — adds kube-controller-manager, kube-scheduler and KWOK playing the kubelet
//!   for N fake nodes, so a Deployment really becomes Running, Ready pods, scaling is followed and
//!   owner references really garbage-collect. No container runs: KWOK only writes pod status.
//! - **With a real node** — adds, beside the fake nodes, a kubelet with containerd, runc, the CNI
//!   bridge, kube-proxy and CoreDNS, on which pods that tolerate its taint run for real; see
//!   [`real_node`].
//!
//! The binaries are upstream's, built from source by `scripts/k8s-binaries` into a cache (or taken
//! from `LIVECLASS_K8S_BIN`, or `KUBEBUILDER_ASSETS`, the envtest convention); see
//! [`Binaries`].
//!
//! # Why the processes are driven here, not through `kwokctl --runtime=binary`
//! kwokctl can run the same binaries, but it is made for a long-lived cluster owned by a person:
//! it starts its components as detached daemons, keeps state under `~/.kwok`, picks its own
//! ports, generates its own PKI and stops them only on `kwokctl delete cluster`. A test needs the
//! opposite: free ports chosen at run time (many test binaries run at once), everything inside
//! one temporary directory, the logs at hand for the error message when a start fails, and above
//! all processes whose life is tied to the test process, so a panic, a failed assertion or a
//! `SIGKILL`ed test binary leaves nothing behind. Driving etcd, the apiserver, the controller
//! manager, the scheduler and the `kwok` controller ourselves costs a page of flags (all in this
//! file, and reused by `scripts/cluster` through the `liveclass-cluster` binary, so they exist
//! once) and saves building and trusting one more tool.
//!
//! # How children die with us, without `unsafe`
//! `prctl(PR_SET_PDEATHSIG)` needs `unsafe` (forbidden in this workspace) and fires when the
//! spawning *thread* exits, which a tokio worker thread may do at any time. Statics (one cluster
//! per test binary) are never dropped, so `Drop` alone is not enough either. Instead every server
//! is started through a tiny bash supervisor ([`SUPERVISE`]) whose standard input is a pipe whose
//! only write end is held by this process (Rust opens it close-on-exec, so no other child
//! inherits it). The supervisor starts the server in the background and waits for whichever comes
//! first: the server exiting (it then exits with the server's status, so a crash is seen), or EOF
//! on the pipe. EOF comes when the owner drops the [`LocalCluster`] — or when the kernel closes
//! the pipe because the test process died, however it died. The supervisor then sends `SIGTERM`
//! and, after a grace period, `SIGKILL`. Each supervisor runs in its own process group (so a
//! terminal's Ctrl-C reaches the test process, which then closes the pipes, rather than killing
//! servers half-way), and `Drop` kills that group outright if a supervisor does not finish in time.
//! A temporary cluster directory is removed the same way by a janitor process once the servers
//! have exited, so even a static cluster's files do not outlive the test binary.

use std::fmt;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::OnceCell;

pub mod real_node;
pub use real_node::{RealNode, RealNodeOptions};

/// Fake nodes in the shared cluster with pods.
pub const DEFAULT_NODES: usize = 3;

/// The environment variable naming a folder of Kubernetes binaries to use before the cache.
pub const BIN_ENV: &str = "LIVECLASS_K8S_BIN";

/// Set to keep a temporary cluster's folder (logs, data) after teardown, for debugging.
pub const KEEP_ENV: &str = "LIVECLASS_KEEP_CLUSTER_DIR";

/// The annotation KWOK manages nodes by (KWOK's own convention).
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// KWOK's node and pod lifecycle ("stages"): nodes Ready at once with a Lease heartbeat, pods
/// Running and Ready at once, deleted pods removed.
const KWOK_STAGES: &str = include_str!("kwok-stages.yaml");

const SUPERVISE_FILE: &str = "supervise.sh";
const JANITOR_FILE: &str = "janitor.sh";

/// The bash supervisor every server runs under; see the module docs. Arguments: the pid file,
/// then the server and its arguments. Standard input: the lifeline pipe.
pub const SUPERVISE: &str = r#"
pid_file=$1; shift
exec 3<&0 </dev/null                  # keep the lifeline on fd 3; the server gets no stdin
"$@" 3<&- &                           # the server, in our process group
server=$!
echo "$server" >"$pid_file.tmp" && mv -f "$pid_file.tmp" "$pid_file"
( read -r _ <&3 ) &                   # returns on EOF: our owner dropped us or died
lifeline=$!
exec 3<&-
wait -n -p finished "$server" "$lifeline"
status=$?
if [[ "${finished:-}" == "$server" ]]; then
  kill "$lifeline" 2>/dev/null
  echo "liveclass-supervise: ${1##*/} exited with status $status" >&2
  exit "$status"
fi
kill -TERM "$server" 2>/dev/null
sleep "${LIVECLASS_STOP_GRACE:-5}" &
grace=$!
wait -n -p finished "$server" "$grace"
if [[ "${finished:-}" == "$grace" ]]; then
  echo "liveclass-supervise: ${1##*/} ignored SIGTERM; killing it" >&2
  kill -KILL "$server" 2>/dev/null
  wait "$server"
else
  kill "$grace" 2>/dev/null
fi
exit 0
"#;

/// Removes a temporary cluster folder once its owner is gone and its servers have exited.
/// Arguments: the folder. Standard input: the lifeline pipe.
const JANITOR: &str = r#"
dir=$1
read -r _ || true
for _ in $(seq 1200); do
  alive=0
  for f in "$dir"/pids/*.pid; do
    [[ -e "$f" ]] || continue
    [[ -d "/proc/$(<"$f")" ]] && alive=1
  done
  ((alive)) || break
  sleep 0.1
done
# Never into a mount point (a real node's volumes), should one be left.
rm -rf --one-file-system "$dir"
"#;

/// Errors starting or using a [`LocalCluster`]. `Debug` prints the same text as `Display`, so a
/// test's `.unwrap()` shows the log tail and what to do rather than a struct dump.
#[derive(thiserror::Error)]
pub enum ClusterError {
    #[error(
        "the Kubernetes binary `{name}` was not found (looked in: {searched}). Build the pinned \
         binaries with `scripts/k8s-binaries` (once; they are cached), or point {BIN_ENV} or \
         KUBEBUILDER_ASSETS at a folder that has them"
    )]
    MissingBinary { name: String, searched: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Certificates(#[from] rcgen::Error),
    #[error(
        "{name} exited during startup ({status}); last lines of {log} (set {KEEP_ENV}=1 to keep it):\n{tail}"
    )]
    Exited {
        name: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "timed out after {seconds}s waiting for {what}; last lines of {log} (set {KEEP_ENV}=1 to keep it):\n{tail}"
    )]
    Timeout {
        what: String,
        seconds: u64,
        log: PathBuf,
        tail: String,
    },
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Other(String),
}

impl fmt::Debug for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Add kube-controller-manager, kube-scheduler and KWOK with `nodes` fake nodes.
    pub pods: bool,
    /// Fake nodes (only with `pods`).
    pub nodes: usize,
    /// Keep the cluster's files (kubeconfig, certificates, logs, pid files, etcd data) in this
    /// folder, which is wiped first and kept after teardown. `None`: a temporary folder removed
    /// at teardown (unless `LIVECLASS_KEEP_CLUSTER_DIR` is set).
    pub state_dir: Option<PathBuf>,
    /// How long each component may take to become ready.
    pub startup_timeout: Duration,
    /// Add a real node (kubelet, containerd, kube-proxy, CoreDNS); needs `pods`.
    pub real_node: Option<RealNodeOptions>,
    /// How long KWOK takes to make a pod Ready on some fake nodes (default: at once).
    pub pod_start_delays: Vec<PodStartDelay>,
    /// What each fake node offers the scheduler.
    pub node_capacity: NodeCapacity,
}

/// A fake node's allocatable CPU, memory and pod slots.
///
/// The default is room for anything a test creates. It is also a cluster whose scheduler
/// cannot tell its nodes apart: a pod's requests move no node's score, and kube-scheduler
/// v1.37 breaks ties between equal scores by node order rather than at random when no
/// extender is configured (kubernetes/kubernetes#141024), so every pod lands on `kwok-node-0`
/// until it holds about a hundred. Where placement matters (some nodes slower than others),
/// give the nodes a real node's capacity and the pods their requests: the LeastAllocated
/// score then prefers the emptier node, as on a real cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCapacity {
    /// A Kubernetes quantity: `"32"`, `"1000"`.
    pub cpu: String,
    /// A Kubernetes quantity: `"128Gi"`.
    pub memory: String,
    pub pods: u32,
}

impl Default for NodeCapacity {
    fn default() -> Self {
        Self {
            cpu: "1000".to_owned(),
            memory: "4Ti".to_owned(),
            pods: 1000,
        }
    }
}

/// On the fake nodes `kwok-node-<i>` for `i` in `nodes`, a pod turns Ready a time drawn
/// uniformly from `[min, max]` after it is scheduled (KWOK's stage delay and jitter), as a
/// kubelet pulling an image and starting a container would.
#[derive(Debug, Clone)]
pub struct PodStartDelay {
    pub nodes: std::ops::Range<usize>,
    pub min: Duration,
    pub max: Duration,
}

impl ClusterOptions {
    /// etcd and kube-apiserver only.
    pub fn api_only() -> Self {
        Self {
            pods: false,
            nodes: 0,
            state_dir: None,
            startup_timeout: Duration::from_secs(120),
            real_node: None,
            pod_start_delays: Vec::new(),
            node_capacity: NodeCapacity::default(),
        }
    }

    /// The full simulated cluster with `nodes` fake nodes.
    pub fn with_pods(nodes: usize) -> Self {
        Self {
            pods: true,
            nodes,
            ..Self::api_only()
        }
    }

    /// Add a real node beside the fake ones (see [`real_node`]); implies pods.
    pub fn real_node(mut self, options: RealNodeOptions) -> Self {
        self.pods = true;
        self.real_node = Some(options);
        self
    }

    /// Pods on the fake nodes in `nodes` turn Ready between `min` and `max` after scheduling.
    pub fn pod_start_delay(
        mut self,
        nodes: std::ops::Range<usize>,
        min: Duration,
        max: Duration,
    ) -> Self {
        self.pod_start_delays
            .push(PodStartDelay { nodes, min, max });
        self
    }

    /// Each fake node offers `capacity` (see [`NodeCapacity`]).
    pub fn node_capacity(mut self, capacity: NodeCapacity) -> Self {
        self.node_capacity = capacity;
        self
    }

    /// How long each component may take to become ready.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Keep the cluster's files in `dir` (see [`ClusterOptions::state_dir`]).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }
}

/// Where the Kubernetes binaries are looked up, in order: `$LIVECLASS_K8S_BIN`,
/// `$KUBEBUILDER_ASSETS`, then the cache folder that `scripts/k8s-binaries --print-dir` names
/// (the script owns the pinned versions and the cache layout, so they are written down once).
#[derive(Debug, Clone)]
pub struct Binaries {
    dirs: Vec<PathBuf>,
}

impl Binaries {
    /// The search path described on [`Binaries`]. Never builds anything.
    pub fn locate() -> Self {
        let mut dirs = Vec::new();
        for var in [BIN_ENV, "KUBEBUILDER_ASSETS"] {
            if let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty()) {
                dirs.push(PathBuf::from(dir));
            }
        }
        let script = Self::script();
        if script.is_file()
            && let Ok(out) = Command::new("bash")
                .arg(&script)
                .args(["--print-dir", "--no-build"])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
            && out.status.success()
        {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !dir.is_empty() {
                dirs.push(PathBuf::from(dir));
            }
        }
        Self { dirs }
    }

    /// A search path of exactly these folders.
    pub fn from_dirs(dirs: Vec<PathBuf>) -> Self {
        Self { dirs }
    }

    /// `scripts/k8s-binaries` in this repository.
    pub fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/k8s-binaries")
    }

    /// The path of binary `name` (e.g. `kube-apiserver`, `kubectl`, `helm`).
    pub fn path(&self, name: &str) -> Result<PathBuf, ClusterError> {
        self.dirs
            .iter()
            .map(|dir| dir.join(name))
            .find(|p| is_executable(p))
            .ok_or_else(|| {
                let mut searched: Vec<String> =
                    self.dirs.iter().map(|d| d.display().to_string()).collect();
                if searched.is_empty() {
                    searched.push(format!(
                        "nothing: {BIN_ENV} and KUBEBUILDER_ASSETS are unset and the cache is empty"
                    ));
                }
                ClusterError::MissingBinary {
                    name: name.to_string(),
                    searched: searched.join(", "),
                }
            })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// One server running under [`SUPERVISE`].
#[derive(Debug)]
struct Supervised {
    name: String,
    /// The bash supervisor. Its pid is also its process group's id.
    supervisor: Child,
    /// Closing this (dropping it) tells the supervisor to stop the server.
    lifeline: Option<ChildStdin>,
    pid_file: PathBuf,
    log: PathBuf,
    /// How long stopping may take before the process group is killed.
    stop_timeout: Duration,
}

impl Supervised {
    fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &Path)],
        dir: &Path,
    ) -> Result<Self, ClusterError> {
        let log = dir.join("logs").join(format!("{name}.log"));
        let pid_file = dir.join("pids").join(format!("{name}.pid"));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(format!("opening {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io("duplicating a log file handle"))?;
        let mut command = Command::new("bash");
        command
            .arg(dir.join(SUPERVISE_FILE))
            .arg(&pid_file)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut supervisor = command
            .spawn()
            .map_err(io(format!("starting {name} ({})", program.display())))?;
        let lifeline = supervisor.stdin.take();
        Ok(Self {
            name: name.to_string(),
            supervisor,
            lifeline,
            pid_file,
            log,
            stop_timeout: Duration::from_secs(15),
        })
    }

    /// The server's pid (not the supervisor's), once the supervisor has written it.
    fn server_pid(&self) -> Option<u32> {
        fs::read_to_string(&self.pid_file).ok()?.trim().parse().ok()
    }

    /// `Some` once the supervisor (and so the server) has exited.
    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.supervisor.try_wait().ok().flatten()
    }

    fn exited_error(&mut self) -> Option<ClusterError> {
        let status = self.exit_status()?;
        Some(ClusterError::Exited {
            name: self.name.clone(),
            status: status.to_string(),
            log: self.log.clone(),
            tail: log_tail(&self.log, 30),
        })
    }

    fn timeout_error(&self, what: &str, timeout: Duration) -> ClusterError {
        ClusterError::Timeout {
            what: what.to_string(),
            seconds: timeout.as_secs(),
            log: self.log.clone(),
            tail: log_tail(&self.log, 30),
        }
    }

    /// Closes the lifeline: the supervisor stops the server.
    fn request_stop(&mut self) {
        self.lifeline.take();
    }

    /// Waits for the supervisor to finish after [`Supervised::request_stop`]; kills the whole
    /// process group if it takes longer than `timeout`.
    fn wait_stopped(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.exit_status().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(pgid) = i32::try_from(self.supervisor.id()) {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        let _ = self.supervisor.wait();
    }
}

/// The last `lines` lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Binds :0 on loopback and releases it. Another process may take the port before ours binds
/// it; every caller retries with a fresh port when the server reports the address in use.
fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("binding 127.0.0.1:0"))?;
    Ok(listener
        .local_addr()
        .map_err(io("reading a bound address"))?
        .port())
}

fn bind_raced(err: &ClusterError) -> bool {
    matches!(err, ClusterError::Exited { tail, .. } if tail.contains("address already in use"))
}

const START_ATTEMPTS: usize = 3;

/// The files of a cluster's PKI: one CA signs the serving certificate and the admin client
/// certificate; the service-account key pair signs and verifies tokens.
#[derive(Debug, Clone)]
struct Pki {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
    /// The CA, to sign more certificates (the real node's).
    issuer: std::sync::Arc<rcgen::Issuer<'static, rcgen::KeyPair>>,
}

impl Pki {
    fn generate(dir: &Path) -> Result<Self, ClusterError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let write = |name: &str, contents: &str| -> Result<PathBuf, ClusterError> {
            let path = dir.join(name);
            fs::write(&path, contents).map_err(io(format!("writing {}", path.display())))?;
            Ok(path)
        };

        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "liveclass-local-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            // The address the API server binds when the cluster has a real node.
            real_node::NODE_IP.to_string(),
            "localhost".to_string(),
            "10.96.0.1".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
        ])?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        // O=system:masters: the group RBAC lets do anything, as kubeadm's admin.conf.
        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin
            .distinguished_name
            .push(DnType::CommonName, "liveclass-admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let sa = KeyPair::generate()?;

        Ok(Self {
            ca_cert: write("ca.crt", &ca_cert.pem())?,
            serving_cert: write("apiserver.crt", &serving_cert.pem())?,
            serving_key: write("apiserver.key", &serving_key.serialize_pem())?,
            admin_cert: write("admin.crt", &admin_cert.pem())?,
            admin_key: write("admin.key", &admin_key.serialize_pem())?,
            sa_key: write("sa.key", &sa.serialize_pem())?,
            sa_pub: write("sa.pub", &sa.public_key_pem())?,
            issuer: std::sync::Arc::new(issuer),
        })
    }
}

fn kubeconfig_yaml(server: &str, pki: &Pki) -> String {
    kubeconfig_for(server, &pki.ca_cert, &pki.admin_cert, &pki.admin_key)
}

/// A kubeconfig for `server` authenticating with a client certificate.
fn kubeconfig_for(server: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    // JSON strings are YAML double-quoted scalars: safe for any path.
    let q = |p: &Path| serde_json::Value::String(p.display().to_string()).to_string();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: liveclass-local\n  cluster:\n    server: {server}\n    \
         certificate-authority: {ca}\nusers:\n- name: liveclass-admin\n  user:\n    client-certificate: {cert}\n    \
         client-key: {key}\ncontexts:\n- name: liveclass-local\n  context:\n    cluster: liveclass-local\n    \
         user: liveclass-admin\n    namespace: default\ncurrent-context: liveclass-local\n",
        ca = q(ca),
        cert = q(cert),
        key = q(key),
    )
}

// ---- the flags, in one place -------------------------------------------------------------------

fn etcd_args(dir: &Path, client_port: u16, peer_port: u16) -> Vec<String> {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    vec![
        "--name=liveclass".into(),
        format!("--data-dir={}", dir.join("etcd-data").display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=liveclass={peer}"),
        // A throwaway cluster: durability is not worth the fsyncs on a shared 2-core machine.
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ]
}

fn apiserver_args(dir: &Path, pki: &Pki, etcd_port: u16, port: u16, pods: bool) -> Vec<String> {
    let mut args = vec![
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", dir.join("pki").display()),
        format!("--tls-cert-file={}", pki.serving_cert.display()),
        format!("--tls-private-key-file={}", pki.serving_key.display()),
        format!("--client-ca-file={}", pki.ca_cert.display()),
        format!("--service-account-key-file={}", pki.sa_pub.display()),
        format!(
            "--service-account-signing-key-file={}",
            pki.sa_key.display()
        ),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        "--authorization-mode=RBAC".into(),
        "--allow-privileged=true".into(),
        // The `kubernetes` Service would point at 127.0.0.1, which Endpoints reject; nothing here
        // needs in-cluster access to the API server.
        "--endpoint-reconciler-type=none".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ];
    if !pods {
        // Without the controller manager no `default` ServiceAccount is ever created, and the
        // admission plugin would refuse every pod (envtest does the same).
        args.push("--disable-admission-plugins=ServiceAccount".into());
    }
    args
}

fn controller_manager_args(dir: &Path, pki: &Pki, kubeconfig: &Path, port: u16) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!(
            "--cert-dir={}",
            dir.join("pki/controller-manager").display()
        ),
        format!(
            "--service-account-private-key-file={}",
            pki.sa_key.display()
        ),
        format!("--root-ca-file={}", pki.ca_cert.display()),
        // Room for quick scale-ups of many fake pods.
        "--kube-api-qps=200".into(),
        "--kube-api-burst=400".into(),
        "--v=1".into(),
    ]
}

fn scheduler_args(dir: &Path, kubeconfig: &Path, port: u16) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", dir.join("pki/scheduler").display()),
        "--v=1".into(),
    ]
}

fn kwok_args(kubeconfig: &Path, stages: &Path) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--config={}", stages.display()),
        "--manage-all-nodes=false".into(),
        format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"),
        "--cidr=10.244.0.1/16".into(),
        "--node-lease-duration-seconds=40".into(),
    ]
}

/// KWOK's stages, with the `pod-ready` stage split per [`PodStartDelay`]: one copy per delay,
/// limited to its nodes, and the original for every other node.
fn kwok_stages(delays: &[PodStartDelay]) -> String {
    if delays.is_empty() {
        return KWOK_STAGES.to_owned();
    }
    let nodes = |range: &std::ops::Range<usize>| {
        range
            .clone()
            .map(|i| format!("      - 'kwok-node-{i}'\n"))
            .collect::<String>()
    };
    let on = |operator: &str, values: &str| {
        format!(
            "    - key: '.spec.nodeName'\n      operator: '{operator}'\n      values:\n{values}"
        )
    };
    let mut docs = Vec::new();
    for doc in KWOK_STAGES.split("\n---\n") {
        if !doc.contains("\n  name: pod-ready\n") {
            docs.push(doc.to_owned());
            continue;
        }
        let all: String = delays.iter().map(|d| nodes(&d.nodes)).collect();
        docs.push(doc.replacen(
            "\n  next:\n",
            &format!("\n{}  next:\n", on("NotIn", &all)),
            1,
        ));
        for (i, d) in delays.iter().enumerate() {
            let delay = format!(
                "  delay:\n    durationMilliseconds: {}\n    jitterDurationMilliseconds: {}\n",
                d.min.as_millis(),
                d.max.as_millis()
            );
            docs.push(
                doc.replacen(
                    "  name: pod-ready\n",
                    &format!("  name: pod-ready-{i}\n"),
                    1,
                )
                .replacen(
                    "\n  next:\n",
                    &format!("\n{}{delay}  next:\n", on("In", &nodes(&d.nodes))),
                    1,
                ),
            );
        }
    }
    docs.join("\n---\n")
}

/// A fake node for KWOK to play the kubelet of.
fn fake_node(name: &str, capacity: &NodeCapacity) -> Result<Node, ClusterError> {
    let resources = serde_json::json!({
        "cpu": capacity.cpu,
        "memory": capacity.memory,
        "pods": capacity.pods.to_string(),
    });
    let node = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": { KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0" },
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
            },
        },
        "status": { "allocatable": resources, "capacity": resources },
    });
    serde_json::from_value(node)
        .map_err(|e| ClusterError::Other(format!("building node {name}: {e}")))
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A local control plane; see the module docs. Dropping it stops every process it started.
pub struct LocalCluster {
    dir: PathBuf,
    temporary: bool,
    kubeconfig: PathBuf,
    server: String,
    nodes: Vec<String>,
    binaries: Binaries,
    /// In start order; stopped together.
    processes: Vec<Supervised>,
    janitor: Option<(Child, Option<ChildStdin>)>,
    real_node: Option<RealNode>,
}

impl fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCluster")
            .field("dir", &self.dir)
            .field("server", &self.server)
            .field("nodes", &self.nodes)
            .field(
                "processes",
                &self
                    .processes
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

static SHARED_API_ONLY: OnceCell<LocalCluster> = OnceCell::const_new();
static SHARED_WITH_PODS: OnceCell<LocalCluster> = OnceCell::const_new();
static SHARED_WITH_REAL_NODE: OnceCell<LocalCluster> = OnceCell::const_new();

impl LocalCluster {
    /// The API-only cluster shared by all tests of this test binary (started on first use; its
    /// processes end when the test binary exits).
    pub async fn shared_api_only() -> Result<&'static LocalCluster, ClusterError> {
        SHARED_API_ONLY
            .get_or_try_init(|| Self::start(ClusterOptions::api_only()))
            .await
    }

    /// The cluster with pods and [`DEFAULT_NODES`] fake nodes, shared by all tests of this test
    /// binary.
    pub async fn shared_with_pods() -> Result<&'static LocalCluster, ClusterError> {
        SHARED_WITH_PODS
            .get_or_try_init(|| Self::start(ClusterOptions::with_pods(DEFAULT_NODES)))
            .await
    }

    /// The cluster with a real node (images from `$LIVECLASS_IMAGES_DIR`) and one fake node,
    /// shared by all tests of this test binary. One real node runs per machine at a time: a
    /// second test binary waits for the first one's to stop.
    pub async fn shared_with_real_node() -> Result<&'static LocalCluster, ClusterError> {
        SHARED_WITH_REAL_NODE
            .get_or_try_init(|| async {
                let options = ClusterOptions::with_pods(1)
                    .real_node(RealNodeOptions::from_env()?)
                    .startup_timeout(Duration::from_secs(300));
                Self::start(options).await
            })
            .await
    }

    /// Starts a cluster with the binaries from [`Binaries::locate`].
    pub async fn start(options: ClusterOptions) -> Result<Self, ClusterError> {
        Self::start_with(options, Binaries::locate()).await
    }

    /// Starts a cluster with the given binaries.
    pub async fn start_with(
        options: ClusterOptions,
        binaries: Binaries,
    ) -> Result<Self, ClusterError> {
        // Find every binary first: a missing one is the most likely failure, and says what to do.
        let etcd = binaries.path("etcd")?;
        let apiserver = binaries.path("kube-apiserver")?;
        let pod_binaries = if options.pods {
            Some((
                binaries.path("kube-controller-manager")?,
                binaries.path("kube-scheduler")?,
                binaries.path("kwok")?,
            ))
        } else {
            None
        };

        let (dir, temporary) = match &options.state_dir {
            Some(dir) => {
                // A real node left by an owner that died hard: unmount and undo it first.
                real_node::clean_stale(dir)?;
                for sub in ["etcd-data", "pki", "pids", "logs", "kwok-home", "node"] {
                    let path = dir.join(sub);
                    if path.exists() {
                        fs::remove_dir_all(&path)
                            .map_err(io(format!("clearing {}", path.display())))?;
                    }
                }
                (dir.clone(), false)
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("liveclass-cluster-")
                    .tempdir()
                    .map_err(io("creating a temporary folder"))?
                    .keep();
                (dir, true)
            }
        };
        for sub in ["pids", "logs", "kwok-home"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(io(format!("creating {}/{sub}", dir.display())))?;
        }
        // As files rather than `bash -c`, so `ps` shows `bash <dir>/supervise.sh <pid file> <server> ...`.
        for (file, script) in [(SUPERVISE_FILE, SUPERVISE), (JANITOR_FILE, JANITOR)] {
            let path = dir.join(file);
            fs::write(&path, script).map_err(io(format!("writing {}", path.display())))?;
        }

        let mut cluster = LocalCluster {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            temporary,
            server: String::new(),
            nodes: Vec::new(),
            binaries,
            processes: Vec::new(),
            janitor: None,
            real_node: None,
        };
        if cluster.temporary && std::env::var_os(KEEP_ENV).is_none() {
            cluster.janitor = Some(spawn_janitor(&cluster.dir)?);
        }
        // On error `cluster` drops here and stops whatever did start.
        cluster
            .boot(&options, &etcd, &apiserver, pod_binaries.as_ref())
            .await?;
        Ok(cluster)
    }

    async fn boot(
        &mut self,
        options: &ClusterOptions,
        etcd: &Path,
        apiserver: &Path,
        pod_binaries: Option<&(PathBuf, PathBuf, PathBuf)>,
    ) -> Result<(), ClusterError> {
        let timeout = options.startup_timeout;
        let pki = Pki::generate(&self.dir.join("pki"))?;
        if let Some(node) = &options.real_node {
            self.start_real_node_runtime(node, &pki, timeout).await?;
        }
        let host = if self.real_node.is_some() {
            real_node::NODE_IP
        } else {
            "127.0.0.1"
        };

        // etcd: ready when its client port accepts connections.
        let mut etcd_port = 0;
        for attempt in 1..=START_ATTEMPTS {
            let (client, peer) = (free_port()?, free_port()?);
            let idx = self.spawn("etcd", etcd, &etcd_args(&self.dir, client, peer), &[])?;
            match self
                .wait_for(idx, "etcd to listen", timeout, || async move {
                    tcp_open(client).await
                })
                .await
            {
                Ok(()) => {
                    etcd_port = client;
                    break;
                }
                Err(e) if bind_raced(&e) && attempt < START_ATTEMPTS => self.forget(idx),
                Err(e) => return Err(e),
            }
        }

        // kube-apiserver: ready when /readyz says ok.
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port()?;
            self.server = format!("https://{host}:{port}");
            fs::write(&self.kubeconfig, kubeconfig_yaml(&self.server, &pki))
                .map_err(io(format!("writing {}", self.kubeconfig.display())))?;
            let mut args = apiserver_args(&self.dir, &pki, etcd_port, port, options.pods);
            if let Some(node) = &self.real_node {
                // The node's flags replace the ones of the same name (list flags such as
                // --authorization-mode would otherwise accumulate).
                let extra = node.apiserver_args();
                let flag = |a: &str| a.split('=').next().unwrap_or(a).to_string();
                let replaced: Vec<String> = extra.iter().map(|a| flag(a)).collect();
                args.retain(|a| !replaced.contains(&flag(a)));
                args.extend(extra);
            }
            let idx = self.spawn("kube-apiserver", apiserver, &args, &[])?;
            let kubeconfig = self.kubeconfig.clone();
            let ready = self
                .wait_for(idx, "kube-apiserver /readyz", timeout, || {
                    let kubeconfig = kubeconfig.clone();
                    async move { readyz(&kubeconfig).await }
                })
                .await;
            match ready {
                Ok(()) => break,
                Err(e) if bind_raced(&e) && attempt < START_ATTEMPTS => self.forget(idx),
                Err(e) => return Err(e),
            }
        }

        let Some((controller_manager, scheduler, kwok)) = pod_binaries else {
            return Ok(());
        };
        let kubeconfig = self.kubeconfig.clone();

        // kube-controller-manager and kube-scheduler: ready when their /healthz says ok.
        let components: [(&str, &PathBuf); 2] = [
            ("kube-controller-manager", controller_manager),
            ("kube-scheduler", scheduler),
        ];
        for (name, binary) in components {
            for attempt in 1..=START_ATTEMPTS {
                let port = free_port()?;
                let args = if name == "kube-scheduler" {
                    scheduler_args(&self.dir, &kubeconfig, port)
                } else {
                    controller_manager_args(&self.dir, &pki, &kubeconfig, port)
                };
                let idx = self.spawn(name, binary, &args, &[])?;
                let what = format!("{name} /healthz");
                match self
                    .wait_for(idx, &what, timeout, || async move {
                        healthz_insecure(port).await
                    })
                    .await
                {
                    Ok(()) => break,
                    Err(e) if bind_raced(&e) && attempt < START_ATTEMPTS => self.forget(idx),
                    Err(e) => return Err(e),
                }
            }
        }

        // KWOK, then its nodes: ready when every node reports Ready.
        let stages = self.dir.join("kwok-stages.yaml");
        fs::write(&stages, kwok_stages(&options.pod_start_delays))
            .map_err(io(format!("writing {}", stages.display())))?;
        // HOME points into the cluster folder so a person's ~/.kwok/kwok.yaml is not read.
        let kwok_home = self.dir.join("kwok-home");
        let kwok_idx = self.spawn(
            "kwok",
            kwok,
            &kwok_args(&kubeconfig, &stages),
            &[("HOME", &kwok_home)],
        )?;
        let client = self.client().await?;
        let nodes: Api<Node> = Api::all(client.clone());
        for i in 0..options.nodes {
            let name = format!("kwok-node-{i}");
            nodes
                .create(
                    &PostParams::default(),
                    &fake_node(&name, &options.node_capacity)?,
                )
                .await?;
            self.nodes.push(name);
        }
        let want = options.nodes;
        let what = format!("{want} fake nodes to be Ready");
        self.wait_for(kwok_idx, &what, timeout, || {
            let nodes = nodes.clone();
            async move {
                let list = nodes
                    .list(&ListParams::default().labels("type=kwok"))
                    .await
                    .ok()?;
                (list.items.iter().filter(|n| node_ready(n)).count() >= want).then_some(())
            }
        })
        .await?;

        if self.real_node.is_some() {
            self.start_real_node_agents(timeout).await?;
        }

        // The controller manager's ServiceAccount controller is working once `default` has its SA.
        let cm_idx = self
            .processes
            .iter()
            .position(|p| p.name == "kube-controller-manager")
            .unwrap_or(0);
        let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
        self.wait_for(cm_idx, "the default ServiceAccount", timeout, || {
            let accounts = accounts.clone();
            async move { accounts.get_opt("default").await.ok().flatten().map(|_| ()) }
        })
        .await?;
        Ok(())
    }

    fn spawn(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &Path)],
    ) -> Result<usize, ClusterError> {
        let process = Supervised::spawn(name, program, args, env, &self.dir)?;
        self.processes.push(process);
        Ok(self.processes.len() - 1)
    }

    /// Drops a process that exited during startup (to retry with another port).
    fn forget(&mut self, idx: usize) {
        let mut process = self.processes.remove(idx);
        process.request_stop();
        process.wait_stopped(Duration::from_secs(10));
    }

    /// Polls `check` until it yields, failing early with the log tail if process `idx` (or any
    /// other started process) exits, or with a timeout.
    async fn wait_for<T, F, Fut>(
        &mut self,
        idx: usize,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> Result<T, ClusterError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check().await {
                return Ok(value);
            }
            for process in &mut self.processes {
                if let Some(err) = process.exited_error() {
                    return Err(err);
                }
            }
            if Instant::now() >= deadline {
                let process = self
                    .processes
                    .get(idx)
                    .ok_or_else(|| ClusterError::Other(format!("no process {idx}")))?;
                return Err(process.timeout_error(what, timeout));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The admin kubeconfig (`system:masters`), usable by kubectl, helm and kube-rs alike.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// The folder holding the kubeconfig, certificates, logs (`logs/<component>.log`) and data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The fake nodes' names (empty for the API-only flavour).
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// A binary from the same place the cluster's came from, e.g. `kubectl` or `helm`.
    pub fn binary(&self, name: &str) -> Result<PathBuf, ClusterError> {
        self.binaries.path(name)
    }

    /// `(component, pid)` of every server process (not their supervisors).
    pub fn server_pids(&self) -> Vec<(String, u32)> {
        self.processes
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.server_pid()?)))
            .collect()
    }

    /// A new client for the calling runtime, authenticated as the admin.
    pub async fn client(&self) -> Result<Client, ClusterError> {
        client_from(&self.kubeconfig).await
    }

    /// Server-side applies `crd` and waits until the API server serves it (`Established`).
    pub async fn install_crd(&self, crd: &CustomResourceDefinition) -> Result<(), ClusterError> {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client().await?);
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(
            &name,
            &kube::api::PatchParams::apply("liveclass-testkit").force(),
            &kube::api::Patch::Apply(crd),
        )
        .await?;
        crate::wait::until(
            &format!("the CRD {name} to be Established"),
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                let (crds, name) = (crds.clone(), name.clone());
                async move {
                    let crd = crds.get(&name).await.ok()?;
                    crd.status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                }
            },
        )
        .await
        .map_err(ClusterError::Other)
    }

    /// A fresh namespace `<prefix>-<random>`, deleted (best effort) when the handle drops. With
    /// pods, waits until its `default` ServiceAccount exists so pods can be created at once.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace, ClusterError> {
        let name = format!("{prefix}-{:06x}", fastrand::u32(..0x100_0000));
        let client = client_in(&self.kubeconfig, Some(&name)).await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": name, "labels": { "liveclass.dev/test": "true" } },
        }))
        .map_err(|e| ClusterError::Other(format!("building namespace {name}: {e}")))?;
        namespaces.create(&PostParams::default(), &ns).await?;
        let handle = TestNamespace {
            name: name.clone(),
            kubeconfig: self.kubeconfig.clone(),
            client: client.clone(),
        };
        if !self.nodes.is_empty() {
            let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
            let deadline = Instant::now() + Duration::from_secs(60);
            while accounts.get_opt("default").await?.is_none() {
                if Instant::now() >= deadline {
                    return Err(ClusterError::Other(format!(
                        "namespace {name} got no default ServiceAccount within 60s"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(handle)
    }

    /// Stops every process and waits for them (also what `Drop` does).
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        // Clients of the API server first (together), then the API server, then etcd: each stops
        // at once on SIGTERM while what it talks to is still up. (When the owner dies instead, all
        // get SIGTERM together and a server stuck on a vanished peer is killed after the grace.)
        let tier = |name: &str| match name {
            "etcd" => 2,
            // The real node's containerd stops after its kubelet (it removes the pods first).
            "kube-apiserver" | "containerd" => 1,
            _ => 0,
        };
        for current in 0..=2 {
            for process in self
                .processes
                .iter_mut()
                .filter(|p| tier(&p.name) == current)
            {
                process.request_stop();
            }
            for process in self
                .processes
                .iter_mut()
                .filter(|p| tier(&p.name) == current)
            {
                let timeout = process.stop_timeout;
                process.wait_stopped(timeout);
            }
        }
        self.processes.clear();
        if let Some((mut janitor, lifeline)) = self.janitor.take() {
            drop(lifeline);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && matches!(janitor.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = janitor.kill();
            let _ = janitor.wait();
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn spawn_janitor(dir: &Path) -> Result<(Child, Option<ChildStdin>), ClusterError> {
    let mut child = Command::new("bash")
        .arg(dir.join(JANITOR_FILE))
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(io("starting the cluster folder's janitor"))?;
    let lifeline = child.stdin.take();
    Ok((child, lifeline))
}

async fn client_from(kubeconfig: &Path) -> Result<Client, ClusterError> {
    client_in(kubeconfig, None).await
}

/// A client from `kubeconfig`, with `namespace` as its default namespace when given.
async fn client_in(kubeconfig: &Path, namespace: Option<&str>) -> Result<Client, ClusterError> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let mut config =
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    if let Some(namespace) = namespace {
        config.default_namespace = namespace.to_string();
    }
    Ok(Client::try_from(config)?)
}

async fn tcp_open(port: u16) -> Option<()> {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()
        .map(|_| ())
}

async fn readyz(kubeconfig: &Path) -> Option<()> {
    let client = client_from(kubeconfig).await.ok()?;
    let request = http::Request::get("/readyz").body(Vec::new()).ok()?;
    let body = client.request_text(request).await.ok()?;
    (body.trim() == "ok").then_some(())
}

/// `GET https://127.0.0.1:<port>/healthz` without verifying the self-signed certificate that
/// kube-controller-manager and kube-scheduler serve (`/healthz` needs no credentials).
async fn healthz_insecure(port: u16) -> Option<()> {
    let mut config = Config::new(format!("https://127.0.0.1:{port}").parse().ok()?);
    config.accept_invalid_certs = true;
    config.connect_timeout = Some(Duration::from_secs(2));
    let client = Client::try_from(config).ok()?;
    let request = http::Request::get("/healthz").body(Vec::new()).ok()?;
    let body = client.request_text(request).await.ok()?;
    (body.trim() == "ok").then_some(())
}

/// A namespace made for one test. Dropping it deletes the namespace (best effort, bounded).
pub struct TestNamespace {
    name: String,
    kubeconfig: PathBuf,
    client: Client,
}

impl fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish()
    }
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A client (for the runtime that created the namespace) whose default namespace is this one.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// An [`Api`] for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // The client belongs to the test's runtime, which may be shutting down: delete from a
        // thread with its own small runtime and a fresh client, bounded in time.
        let name = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();
        let handle = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let delete = async {
                    let client = client_from(&kubeconfig).await.ok()?;
                    Api::<Namespace>::all(client)
                        .delete(&name, &DeleteParams::background())
                        .await
                        .ok()
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), delete).await;
            });
        });
        let _ = handle.join();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_fake_node_offers_the_capacity_it_is_given() {
        let roomy = fake_node("kwok-node-0", &NodeCapacity::default()).unwrap();
        let real = NodeCapacity {
            cpu: "32".to_owned(),
            memory: "128Gi".to_owned(),
            pods: 110,
        };
        let node = fake_node("kwok-node-1", &real).unwrap();
        let status = node.status.unwrap();
        for resources in [status.allocatable.unwrap(), status.capacity.unwrap()] {
            let get = |k: &str| resources.get(k).map(|q| q.0.clone());
            assert_eq!(
                (get("cpu"), get("memory"), get("pods")),
                (Some("32".into()), Some("128Gi".into()), Some("110".into()))
            );
        }
        let allocatable = roomy.status.unwrap().allocatable.unwrap();
        assert_eq!(allocatable["cpu"].0, "1000");
    }

    /// The stages as KWOK reads them: the pod-ready stage once per delay, limited to its nodes,
    /// and once for the rest; the other stages as they were.
    #[test]
    fn pod_start_delays_split_the_pod_ready_stage_by_node() {
        let delays = [PodStartDelay {
            nodes: 4..6,
            min: Duration::from_secs(30),
            max: Duration::from_secs(60),
        }];
        let text = kwok_stages(&delays);
        let docs: Vec<serde_json::Value> = text
            .split("\n---\n")
            .filter(|d| d.contains("kind: Stage"))
            .map(|d| serde_yaml::from_str(d).unwrap())
            .collect();
        let base = KWOK_STAGES
            .split("\n---\n")
            .filter(|d| d.contains("kind: Stage"))
            .count();
        assert_eq!(docs.len(), base + 1);
        let stage = |name: &str| docs.iter().find(|d| d["metadata"]["name"] == name).unwrap();
        let node_rule = |d: &serde_json::Value| {
            d["spec"]["selector"]["matchExpressions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["key"] == ".spec.nodeName")
                .cloned()
                .unwrap()
        };
        let slow = stage("pod-ready-0");
        assert_eq!(slow["spec"]["delay"]["durationMilliseconds"], 30_000);
        assert_eq!(slow["spec"]["delay"]["jitterDurationMilliseconds"], 60_000);
        let rule = node_rule(slow);
        assert_eq!(rule["operator"], "In");
        assert_eq!(
            rule["values"],
            serde_json::json!(["kwok-node-4", "kwok-node-5"])
        );
        let rest = stage("pod-ready");
        assert!(rest["spec"].get("delay").is_none());
        assert_eq!(node_rule(rest)["operator"], "NotIn");
        assert_eq!(kwok_stages(&[]), KWOK_STAGES);
    }
}
