//! The real node: a kubelet beside the KWOK nodes that runs pods for real, with Debian's
//! containerd and runc, the CNI bridge plugins, kube-proxy and CoreDNS.
//!
//! KWOK proves the operator's decisions; only a real kubelet proves the seam between them and
//! the data plane — images, probes, Secrets mounted as files, Service DNS names, drain timings.
//!
//! # What runs, and where
//! - `real-node.sh` (next to this file) runs first, as root: it takes a machine-wide lock (one
//!   real node per machine: the bridge, its address, the cgroup root and kube-proxy's nftables
//!   tables are the machine's), creates the bridge [`BRIDGE`] with the node's address
//!   [`NODE_IP`], an nftables table that forwards nothing between the pod network and any other
//!   interface, and starts containerd with a configuration of its own (state, socket, CNI
//!   configuration all inside the cluster folder). When the cluster stops — or its owner dies —
//!   it removes every pod through the CRI, stops containerd and undoes all of it.
//! - The API server binds [`NODE_IP`] instead of loopback, so pods reach it through the
//!   `kubernetes` Service; it dials kubelets by their `InternalIP` and checks their serving
//!   certificate against the cluster CA.
//! - The kubelet registers [`NODE_NAME`] with the label and the taint [`NODE_LABEL`]`=true`
//!   (`NoSchedule`), node IP [`NODE_IP`]: the kubelet refuses a loopback node IP
//!   (`validateNodeIP`), and the bridge's address is as local as loopback — the apiserver reaches
//!   the kubelet (logs, exec, port-forward) without leaving the machine.
//! - Pods get addresses in [`POD_SUBNET`] and routes only to it and to the Service range: no
//!   default route, no masquerade. CoreDNS (a host process on [`NODE_IP`]:53, no `forward`)
//!   resolves cluster names and nothing else; kube-proxy (nftables mode) implements Services.
//! - Images are never pulled: archives (`scripts/images save`) are imported into containerd
//!   directly, and every registry is mirrored to a closed local port so a missing image fails at
//!   once instead of reaching out.
//!
//! Pods land on the real node only when they tolerate the taint (and select the label); a
//! namespace can give that to all its pods with the `PodNodeSelector` and
//! `PodTolerationRestriction` admission plugins, enabled here (see [`NAMESPACE_ANNOTATIONS`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::PostParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ClusterError, LocalCluster, Pki, Supervised, free_port, io, node_ready};

/// The real node's name.
pub const NODE_NAME: &str = "liveclass-real-node";
/// Label (value `true`) and taint key (`true:NoSchedule`) of the real node.
pub const NODE_LABEL: &str = "liveclass.dev/real-node";
/// The bridge on the host side of the pod network.
pub const BRIDGE: &str = "liveclass0";
/// The node's address: the bridge's, the kubelet's, the API server's and CoreDNS's.
pub const NODE_IP: &str = "10.245.0.1";
/// The real node's pods' addresses (KWOK's fake pods use 10.244.0.0/16).
pub const POD_SUBNET: &str = "10.245.0.0/24";
/// The cluster's Service range (the API server's `--service-cluster-ip-range`).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// Folder of the node binaries (kubelet, kube-proxy, crictl, coredns) to use before the cache.
pub const NODE_BIN_ENV: &str = "LIVECLASS_NODE_BIN";
/// Folder of image archives (`*.tar`, as `scripts/images save` writes them) to import.
pub const IMAGES_ENV: &str = "LIVECLASS_IMAGES_DIR";

/// Namespace annotations that put every pod of the namespace on the real node (the
/// `PodNodeSelector` and `PodTolerationRestriction` admission plugins read them).
pub const NAMESPACE_ANNOTATIONS: [(&str, &str); 2] = [
    (
        "scheduler.alpha.kubernetes.io/node-selector",
        "liveclass.dev/real-node=true",
    ),
    (
        "scheduler.alpha.kubernetes.io/defaultTolerations",
        r#"[{"key":"liveclass.dev/real-node","operator":"Equal","value":"true","effect":"NoSchedule"}]"#,
    ),
];

const SCRIPT: &str = include_str!("real-node.sh");
const SCRIPT_FILE: &str = "real-node.sh";
/// The pause image's name in containerd; `scripts/images` tags it so.
const PAUSE_IMAGE_NAME: &str = "localhost/liveclass/pause";
/// Highest open-files limit of a container (this machine caps a process at 20,000).
const CONTAINER_NOFILE: u64 = 16_384;

/// What the real node needs beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct RealNodeOptions {
    /// Image archives to import into containerd before the node registers.
    pub images: Vec<PathBuf>,
    /// The pause (sandbox) image, e.g. `localhost/liveclass/pause:0.1.0`; by default the first
    /// imported image named `localhost/liveclass/pause:*`.
    pub pause_image: Option<String>,
}

impl RealNodeOptions {
    /// The archives (`*.tar`) in the folder `$LIVECLASS_IMAGES_DIR` names, if it is set.
    pub fn from_env() -> Result<Self, ClusterError> {
        let Some(dir) = std::env::var_os(IMAGES_ENV).filter(|v| !v.is_empty()) else {
            return Ok(Self::default());
        };
        Self::default().images_in(Path::new(&dir))
    }

    /// Adds every `*.tar` archive in `dir`.
    pub fn images_in(mut self, dir: &Path) -> Result<Self, ClusterError> {
        let entries = fs::read_dir(dir).map_err(io(format!("listing {}", dir.display())))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "tar"))
            .collect();
        found.sort();
        self.images.extend(found);
        Ok(self)
    }
}

/// The programs the real node runs.
#[derive(Debug, Clone)]
struct NodeBinaries {
    kubelet: PathBuf,
    kube_proxy: PathBuf,
    crictl: PathBuf,
    coredns: PathBuf,
    containerd: PathBuf,
    ctr: PathBuf,
    runc: PathBuf,
    cni_dir: PathBuf,
}

fn unavailable(what: impl Into<String>, fix: &str) -> ClusterError {
    ClusterError::Other(format!(
        "the real node cannot start here: {}. {fix}",
        what.into()
    ))
}

const INSTALL_FIX: &str = "Install Debian's containerd, runc, containernetworking-plugins, \
                           nftables and iptables with `scripts/install-deps --real-node`";

impl NodeBinaries {
    fn locate() -> Result<Self, ClusterError> {
        let node_dir = node_bin_dir().ok_or_else(|| {
            unavailable(
                "kubelet, kube-proxy, crictl and coredns are not built",
                "Build them with `scripts/k8s-binaries --node` (once; cached), or point \
                 LIVECLASS_NODE_BIN at a folder that has them",
            )
        })?;
        let node = |name: &str| -> Result<PathBuf, ClusterError> {
            let path = node_dir.join(name);
            if super::is_executable(&path) {
                Ok(path)
            } else {
                Err(unavailable(
                    format!("{} is missing", path.display()),
                    "Build it with `scripts/k8s-binaries --node`",
                ))
            }
        };
        let system = |name: &str| -> Result<PathBuf, ClusterError> {
            on_path(name)
                .ok_or_else(|| unavailable(format!("`{name}` is not on PATH"), INSTALL_FIX))
        };
        for tool in ["nft", "iptables", "ip", "flock"] {
            system(tool)?;
        }
        let cni_dir = ["/usr/lib/cni", "/opt/cni/bin"]
            .iter()
            .map(PathBuf::from)
            .find(|d| {
                ["bridge", "host-local", "portmap", "loopback"]
                    .iter()
                    .all(|p| super::is_executable(&d.join(p)))
            })
            .ok_or_else(|| {
                unavailable(
                    "no CNI plugins (bridge, host-local, portmap, loopback) in /usr/lib/cni or /opt/cni/bin",
                    INSTALL_FIX,
                )
            })?;
        Ok(Self {
            kubelet: node("kubelet")?,
            kube_proxy: node("kube-proxy")?,
            crictl: node("crictl")?,
            coredns: node("coredns")?,
            containerd: system("containerd")?,
            ctr: system("ctr")?,
            runc: system("runc")?,
            cni_dir,
        })
    }
}

/// `$LIVECLASS_NODE_BIN`, else the folder `scripts/k8s-binaries --print-dir --no-build --node`
/// prints on its second line.
fn node_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(NODE_BIN_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let out = Command::new("bash")
        .arg(super::Binaries::script())
        .args(["--print-dir", "--no-build", "--node"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .map(|l| PathBuf::from(l.trim()))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| super::is_executable(p))
}

fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
}

/// The real node of a running [`LocalCluster`].
#[derive(Debug)]
pub struct RealNode {
    dir: PathBuf,
    bins: NodeBinaries,
    images: Vec<PathBuf>,
    pause_image: Option<String>,
    sock: PathBuf,
    ca: PathBuf,
    kubelet_serving: CertFiles,
    kubelet_client: CertFiles,
    apiserver_kubelet_client: CertFiles,
    kube_proxy_client: CertFiles,
    coredns_client: CertFiles,
    /// Imports running beside the control plane's start.
    import: Option<std::thread::JoinHandle<Result<Vec<String>, String>>>,
    imported: Vec<String>,
    coredns_ready_port: u16,
    kube_proxy_healthz_port: u16,
    kubelet_healthz_port: u16,
}

impl RealNode {
    /// The node's name.
    pub fn name(&self) -> &str {
        NODE_NAME
    }

    /// containerd's socket, for `crictl --runtime-endpoint unix://...` or `ctr --address`.
    pub fn containerd_socket(&self) -> &Path {
        &self.sock
    }

    /// The `crictl` binary the node uses.
    pub fn crictl(&self) -> &Path {
        &self.bins.crictl
    }

    /// Image references imported into containerd.
    pub fn images(&self) -> &[String] {
        &self.imported
    }

    /// `crictl` with this node's runtime endpoint and the given arguments; stdout on success.
    pub fn crictl_output(&self, args: &[&str]) -> Result<String, ClusterError> {
        let out = Command::new(&self.bins.crictl)
            .arg("--runtime-endpoint")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(io("running crictl"))?;
        if !out.status.success() {
            return Err(ClusterError::Other(format!(
                "crictl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The flags the API server needs for a real node (they replace its own of the same name).
    pub(super) fn apiserver_args(&self) -> Vec<String> {
        vec![
            format!("--bind-address={NODE_IP}"),
            format!("--advertise-address={NODE_IP}"),
            // The `kubernetes` Service points at the API server on the node's address, so pods
            // (the operator) reach it in-cluster.
            "--endpoint-reconciler-type=lease".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction,PodNodeSelector,PodTolerationRestriction"
                .into(),
            "--kubelet-preferred-address-types=InternalIP".into(),
            format!("--kubelet-certificate-authority={}", self.ca.display()),
            format!(
                "--kubelet-client-certificate={}",
                self.apiserver_kubelet_client.cert.display()
            ),
            format!(
                "--kubelet-client-key={}",
                self.apiserver_kubelet_client.key.display()
            ),
        ]
    }
}

/// Signs a certificate with the cluster CA.
fn sign(
    pki: &Pki,
    dir: &Path,
    name: &str,
    common_name: &str,
    organization: Option<&str>,
    sans: &[&str],
    server: bool,
) -> Result<CertFiles, ClusterError> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = params.signed_by(&key, pki.issuer.as_ref())?;
    let files = CertFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    write(&files.cert, &cert.pem())?;
    write(&files.key, &key.serialize_pem())?;
    Ok(files)
}

fn write(path: &Path, contents: &str) -> Result<(), ClusterError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    fs::write(path, contents).map_err(io(format!("writing {}", path.display())))
}

/// A JSON string, which is also a YAML and TOML basic string: safe for any path.
fn q(value: impl AsRef<str>) -> String {
    serde_json::Value::String(value.as_ref().to_string()).to_string()
}

fn qp(path: &Path) -> String {
    q(path.display().to_string())
}

impl LocalCluster {
    /// The real node, when the cluster has one.
    pub fn real_node(&self) -> Option<&RealNode> {
        self.real_node.as_ref()
    }

    /// Step 1 of a real node, before etcd: certificates, configuration, the network and
    /// containerd (the API server binds the node's address, which the bridge carries); image
    /// imports start in the background.
    pub(super) async fn start_real_node_runtime(
        &mut self,
        options: &RealNodeOptions,
        pki: &Pki,
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        if !running_as_root() {
            return Err(unavailable(
                "it needs root (it creates a bridge, cgroups and mounts)",
                "Run as root",
            ));
        }
        let bins = NodeBinaries::locate()?;
        let dir = self.dir.join("node");
        for sub in [
            "containerd",
            "cni/net.d",
            "kubelet",
            "pki",
            "wait-for",
            "coredns",
            "kube-proxy",
        ] {
            fs::create_dir_all(dir.join(sub))
                .map_err(io(format!("creating {}/{sub}", dir.display())))?;
        }
        let certs = dir.join("pki");
        let kubelet_serving = sign(
            pki,
            &certs,
            "kubelet-serving",
            NODE_NAME,
            None,
            &[NODE_IP, NODE_NAME],
            true,
        )?;
        let kubelet_client = sign(
            pki,
            &certs,
            "kubelet-client",
            &format!("system:node:{NODE_NAME}"),
            Some("system:nodes"),
            &[],
            false,
        )?;
        let apiserver_kubelet_client = sign(
            pki,
            &certs,
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            None,
            &[],
            false,
        )?;
        let kube_proxy_client = sign(
            pki,
            &certs,
            "kube-proxy",
            "system:kube-proxy",
            None,
            &[],
            false,
        )?;
        let coredns_client = sign(
            pki,
            &certs,
            "coredns",
            "system:liveclass:coredns",
            None,
            &[],
            false,
        )?;

        let sock = dir.join("containerd/containerd.sock");
        let mut node = RealNode {
            dir: dir.clone(),
            bins,
            images: options.images.clone(),
            pause_image: options.pause_image.clone(),
            sock,
            ca: pki.ca_cert.clone(),
            kubelet_serving,
            kubelet_client,
            apiserver_kubelet_client,
            kube_proxy_client,
            coredns_client,
            import: None,
            imported: Vec::new(),
            coredns_ready_port: 0,
            kube_proxy_healthz_port: 0,
            kubelet_healthz_port: 0,
        };
        let pause = node.pause_image_ref()?;
        node.write_containerd_config(&pause)?;
        node.write_cni_config()?;

        let script = self.dir.join(SCRIPT_FILE);
        fs::write(&script, SCRIPT).map_err(io(format!("writing {}", script.display())))?;
        let supervisor = Supervised::spawn_direct(
            "containerd",
            &script,
            &[
                "run".into(),
                dir.display().to_string(),
                self.dir.join("pids/containerd.pid").display().to_string(),
                node.bins.containerd.display().to_string(),
                dir.join("containerd/config.toml").display().to_string(),
                std::process::id().to_string(),
            ],
            &[
                ("LIVECLASS_CRICTL", node.bins.crictl.as_path()),
                ("LIVECLASS_KUBE_PROXY", node.bins.kube_proxy.as_path()),
            ],
            &self.dir,
            // Waiting for the kubelet, removing pods, stopping containerd, undoing the network.
            Duration::from_secs(90),
        )?;
        self.processes.push(supervisor);
        let idx = self.processes.len() - 1;
        let ctr = node.bins.ctr.clone();
        let sock = node.sock.clone();
        self.wait_for(idx, "containerd to answer on its socket", timeout, || {
            let ctr = ctr.clone();
            let sock = sock.clone();
            async move {
                let status = tokio::process::Command::new(&ctr)
                    .arg("--address")
                    .arg(&sock)
                    .arg("version")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await
                    .ok()?;
                status.success().then_some(())
            }
        })
        .await?;

        let (ctr, sock, images) = (
            node.bins.ctr.clone(),
            node.sock.clone(),
            node.images.clone(),
        );
        node.import = Some(std::thread::spawn(move || {
            import_images(&ctr, &sock, &images)
        }));
        self.real_node = Some(node);
        Ok(())
    }

    /// Step 2, once the control plane runs: RBAC for the node's components, then CoreDNS,
    /// kube-proxy and the kubelet; ready when the node is Ready, CoreDNS and kube-proxy are, and
    /// every image is imported.
    pub(super) async fn start_real_node_agents(
        &mut self,
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        let client = self.client().await?;
        create_rbac(&client).await?;
        let server = self.server.clone();
        let Some(node) = self.real_node.as_mut() else {
            return Ok(());
        };
        if let Some(import) = node.import.take() {
            node.imported = import
                .join()
                .map_err(|_| ClusterError::Other("the image import thread panicked".into()))?
                .map_err(ClusterError::Other)?;
        }
        let dir = node.dir.clone();
        let kubeconfig = |name: &str, files: &CertFiles| -> Result<PathBuf, ClusterError> {
            let path = dir.join(format!("{name}.kubeconfig"));
            write(
                &path,
                &super::kubeconfig_for(&server, &node.ca, &files.cert, &files.key),
            )?;
            Ok(path)
        };
        let kubelet_kubeconfig = kubeconfig("kubelet", &node.kubelet_client)?;
        let proxy_kubeconfig = kubeconfig("kube-proxy", &node.kube_proxy_client)?;
        let coredns_kubeconfig = kubeconfig("coredns", &node.coredns_client)?;

        // CoreDNS on the node's address; its readiness means the kubernetes plugin has synced.
        let (health, ready) = (free_port()?, free_port()?);
        node.coredns_ready_port = ready;
        let corefile = dir.join("coredns/Corefile");
        write(
            &corefile,
            &format!(
                ".:53 {{\n    bind {NODE_IP}\n    errors\n    health 127.0.0.1:{health}\n    ready 127.0.0.1:{ready}\n    \
                 kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        kubeconfig {kc}\n        pods insecure\n        \
                 fallthrough in-addr.arpa ip6.arpa\n        ttl 5\n    }}\n    cache 5\n    loadbalance\n}}\n",
                kc = coredns_kubeconfig.display()
            ),
        )?;

        let (proxy_health, proxy_metrics) = (free_port()?, free_port()?);
        node.kube_proxy_healthz_port = proxy_health;
        let proxy_config = dir.join("kube-proxy/config.yaml");
        write(
            &proxy_config,
            &format!(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
                 clientConnection:\n  kubeconfig: {kc}\nhostnameOverride: {NODE_NAME}\nmode: nftables\n\
                 clusterCIDR: {POD_SUBNET}\nhealthzBindAddress: 127.0.0.1:{proxy_health}\n\
                 metricsBindAddress: 127.0.0.1:{proxy_metrics}\nnodePortAddresses: [\"{NODE_IP}/32\"]\n\
                 # Leave the machine's conntrack settings alone.\n\
                 conntrack:\n  maxPerCore: 0\n  min: 0\n  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 0s\n",
                kc = qp(&proxy_kubeconfig)
            ),
        )?;

        let (kubelet_port, kubelet_health) = (free_port()?, free_port()?);
        node.kubelet_healthz_port = kubelet_health;
        let kubelet_config = node.write_kubelet_config(kubelet_port, kubelet_health)?;
        let kubelet_args = vec![
            format!("--config={}", kubelet_config.display()),
            format!("--kubeconfig={}", kubelet_kubeconfig.display()),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={NODE_IP}"),
            format!("--node-labels={NODE_LABEL}=true"),
            format!("--root-dir={}", dir.join("kubelet/root").display()),
            format!("--cert-dir={}", dir.join("kubelet/pki").display()),
            "--v=1".into(),
        ];
        let coredns_bin = node.bins.coredns.clone();
        let proxy_bin = node.bins.kube_proxy.clone();
        let kubelet_bin = node.bins.kubelet.clone();

        // real-node.sh waits for these to exit before it removes pods and stops containerd.
        for name in ["kubelet", "kube-proxy", "coredns"] {
            let link = dir.join("wait-for").join(format!("{name}.pid"));
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(self.dir.join("pids").join(format!("{name}.pid")), &link)
                .map_err(io(format!("linking {}", link.display())))?;
        }
        let coredns_idx = self.spawn(
            "coredns",
            &coredns_bin,
            &["-conf".into(), corefile.display().to_string()],
            &[],
        )?;
        let proxy_idx = self.spawn(
            "kube-proxy",
            &proxy_bin,
            &[
                format!("--config={}", proxy_config.display()),
                "--v=1".into(),
            ],
            &[],
        )?;
        let kubelet_idx = self.spawn("kubelet", &kubelet_bin, &kubelet_args, &[])?;

        let nodes: Api<Node> = Api::all(client);
        self.wait_for(kubelet_idx, "the real node to be Ready", timeout, || {
            let nodes = nodes.clone();
            async move {
                let node = nodes.get_opt(NODE_NAME).await.ok().flatten()?;
                node_ready(&node).then_some(())
            }
        })
        .await?;
        self.wait_for(coredns_idx, "CoreDNS /ready", timeout, || async move {
            (http_status(ready, "/ready").await? == 200).then_some(())
        })
        .await?;
        self.wait_for(proxy_idx, "kube-proxy /healthz", timeout, || async move {
            (http_status(proxy_health, "/healthz").await? == 200).then_some(())
        })
        .await?;
        Ok(())
    }
}

impl RealNode {
    fn pause_image_ref(&self) -> Result<String, ClusterError> {
        if let Some(image) = &self.pause_image {
            return Ok(image.clone());
        }
        // `scripts/images save` names archives <image>.oci.tar; the pause image's tag is the
        // project version, read from the archive's index.
        for archive in &self.images {
            if let Some(name) = archive_ref_names(archive)?
                .into_iter()
                .find(|n| n.starts_with(&format!("{PAUSE_IMAGE_NAME}:")))
            {
                return Ok(name);
            }
        }
        Err(unavailable(
            format!(
                "no pause image among the image archives ({}), and none was named",
                if self.images.is_empty() {
                    format!("none given; set {IMAGES_ENV}")
                } else {
                    self.images
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            "Build the images with `scripts/images save <dir>` and point LIVECLASS_IMAGES_DIR at <dir>",
        ))
    }

    fn write_containerd_config(&self, pause: &str) -> Result<(), ClusterError> {
        let dir = &self.dir;
        // The OCI defaults containerd starts every container from, with the open-files limit a
        // socket server holding thousands of connections needs (containerd's default is 1024).
        let out = Command::new(&self.bins.ctr)
            .args(["oci", "spec"])
            .stdin(Stdio::null())
            .output()
            .map_err(io("running ctr oci spec"))?;
        let mut spec: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| ClusterError::Other(format!("parsing `ctr oci spec`: {e}")))?;
        spec["process"]["rlimits"] = serde_json::json!([
            { "type": "RLIMIT_NOFILE", "hard": CONTAINER_NOFILE, "soft": CONTAINER_NOFILE }
        ]);
        let base_spec = dir.join("containerd/base-spec.json");
        write(&base_spec, &spec.to_string())?;

        let config = format!(
            r#"version = 2
root = {root}
state = {state}
# Snapshotters and services this node does not use.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = {sock}

[ttrpc]
  address = {ttrpc}

[debug]
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {pause}
  # The pod sandbox asks for oom_score_adj -998, which needs a capability this machine withholds
  # (runc then fails with "can't get final child's PID from pipe"); clamp it instead.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      base_runtime_spec = {base_spec}

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = {runc}
        # cgroupfs, as the kubelet (cgroup v1 here, no systemd).
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {cni_bin}
    conf_dir = {cni_conf}
    max_conf_num = 1

  # No image is ever pulled: every registry goes to a closed local port, so a missing image
  # fails at once (ErrImagePull) instead of reaching out.
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."*"]
    endpoint = ["http://127.0.0.1:9"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["http://127.0.0.1:9"]
"#,
            root = qp(&dir.join("containerd/root")),
            state = qp(&dir.join("containerd/state")),
            sock = qp(&self.sock),
            ttrpc = qp(&dir.join("containerd/containerd.sock.ttrpc")),
            opt = qp(&dir.join("containerd/opt")),
            pause = q(pause),
            base_spec = qp(&base_spec),
            runc = qp(&self.bins.runc),
            cni_bin = qp(&self.bins.cni_dir),
            cni_conf = qp(&dir.join("cni/net.d")),
        );
        write(&dir.join("containerd/config.toml"), &config)
    }

    fn write_cni_config(&self) -> Result<(), ClusterError> {
        let gateway = NODE_IP;
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "liveclass",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": true,
                    // No default route and no masquerade: pods reach each other, Services and
                    // the node, and nothing else.
                    "isDefaultGateway": false,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": POD_SUBNET, "gateway": gateway }]],
                        "routes": [{ "dst": SERVICE_CIDR }],
                        "dataDir": self.dir.join("cni/ipam").display().to_string(),
                    },
                },
                { "type": "portmap", "capabilities": { "portMappings": true } },
            ],
        });
        write(
            &self.dir.join("cni/net.d/10-liveclass.conflist"),
            &serde_json::to_string_pretty(&conflist)
                .map_err(|e| ClusterError::Other(format!("CNI configuration: {e}")))?,
        )
    }

    fn write_kubelet_config(&self, port: u16, healthz: u16) -> Result<PathBuf, ClusterError> {
        let dir = &self.dir;
        let resolv = dir.join("resolv.conf");
        // Pods with dnsPolicy Default get this, not the machine's resolvers.
        write(&resolv, &format!("nameserver {NODE_IP}\n"))?;
        let config = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
tlsCertFile: {cert}
tlsPrivateKeyFile: {key}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
# cgroup v1 (hybrid), no systemd: cgroupfs, pods under their own root.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /liveclass
failSwapOn: false
containerRuntimeEndpoint: unix://{sock}
clusterDNS: [{NODE_IP}]
clusterDomain: cluster.local
resolvConf: {resolv}
podLogsDir: {logs}
registerWithTaints:
  - key: {NODE_LABEL}
    value: \"true\"
    effect: NoSchedule
maxPods: 110
serializeImagePulls: false
# Images are imported, never pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# The disk is shared with the machine's other work; evict only when it is really full.
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%
  imagefs.available: 2%
  nodefs.inodesFree: 2%
shutdownGracePeriod: 0s
",
            cert = qp(&self.kubelet_serving.cert),
            key = qp(&self.kubelet_serving.key),
            ca = qp(&self.ca),
            sock = self.sock.display(),
            resolv = qp(&resolv),
            logs = qp(&dir.join("pod-logs")),
        );
        let path = dir.join("kubelet/config.yaml");
        write(&path, &config)?;
        Ok(path)
    }
}

/// Imports each archive into containerd's `k8s.io` namespace; returns the image names.
fn import_images(ctr: &Path, sock: &Path, archives: &[PathBuf]) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for archive in archives {
        let out = Command::new(ctr)
            .arg("--address")
            .arg(sock)
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(archive)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running ctr images import {}: {e}", archive.display()))?;
        if !out.status.success() {
            return Err(format!(
                "ctr images import {}: {}",
                archive.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        names.extend(archive_ref_names(archive).map_err(|e| e.to_string())?);
    }
    Ok(names)
}

/// The image names an OCI archive's index carries (`org.opencontainers.image.ref.name`).
fn archive_ref_names(archive: &Path) -> Result<Vec<String>, ClusterError> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg("index.json")
        .stdin(Stdio::null())
        .output()
        .map_err(io(format!("reading {}", archive.display())))?;
    if !out.status.success() {
        return Err(ClusterError::Other(format!(
            "{} is not an OCI archive (no index.json): {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let index: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| ClusterError::Other(format!("{}: index.json: {e}", archive.display())))?;
    Ok(index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_string)
        .collect())
}

/// Permissions of the node's components that are not bootstrap roles: the API server's client
/// to kubelets (logs, exec, port-forward) and CoreDNS's reads.
async fn create_rbac(client: &kube::Client) -> Result<(), ClusterError> {
    fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ClusterError> {
        serde_json::from_value(value)
            .map_err(|e| ClusterError::Other(format!("building an RBAC object: {e}")))
    }
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let coredns_role: ClusterRole = parse(serde_json::json!({
        "metadata": { "name": "system:liveclass:coredns" },
        "rules": [
            { "apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"] },
            { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"] },
        ],
    }))?;
    roles.create(&PostParams::default(), &coredns_role).await?;
    for (name, role, user) in [
        (
            "system:liveclass:coredns",
            "system:liveclass:coredns",
            "system:liveclass:coredns",
        ),
        (
            "system:liveclass:apiserver-kubelet-client",
            "system:kubelet-api-admin",
            "kube-apiserver-kubelet-client",
        ),
    ] {
        let binding: ClusterRoleBinding = parse(serde_json::json!({
            "metadata": { "name": name },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }],
        }))?;
        bindings.create(&PostParams::default(), &binding).await?;
    }
    Ok(())
}

/// The status code of `GET http://127.0.0.1:<port><path>`, or `None` if nothing answers.
async fn http_status(port: u16, path: &str) -> Option<u16> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

impl Supervised {
    /// Runs `script` (a bash script implementing its own lifeline on standard input, like
    /// `real-node.sh`) in its own process group, logging to `logs/<name>.log`.
    fn spawn_direct(
        name: &str,
        script: &Path,
        args: &[String],
        env: &[(&str, &Path)],
        dir: &Path,
        stop_timeout: Duration,
    ) -> Result<Self, ClusterError> {
        use std::os::unix::process::CommandExt;
        let log = dir.join("logs").join(format!("{name}.log"));
        let pid_file = dir.join("pids").join(format!("{name}.pid"));
        let out = fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(format!("opening {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io("duplicating a log file handle"))?;
        let mut command = Command::new("bash");
        command
            .arg(script)
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
            .map_err(io(format!("starting {name} ({})", script.display())))?;
        let lifeline = supervisor.stdin.take();
        Ok(Self {
            name: name.to_string(),
            supervisor,
            lifeline,
            pid_file,
            log,
            stop_timeout,
        })
    }
}

/// Undoes a real node that an owner which died hard left in the state folder `dir` (its
/// supervisor killed too): pods' processes, mounts, the bridge and nftables tables.
pub(super) fn clean_stale(dir: &Path) -> Result<(), ClusterError> {
    let node = dir.join("node");
    if !node.exists() {
        return Ok(());
    }
    let script = dir.join(SCRIPT_FILE);
    fs::write(&script, SCRIPT).map_err(io(format!("writing {}", script.display())))?;
    let mut command = Command::new("bash");
    command
        .arg(&script)
        .arg("cleanup")
        .arg(&node)
        .stdin(Stdio::null());
    if let Ok(bins) = NodeBinaries::locate() {
        command
            .env("LIVECLASS_CRICTL", &bins.crictl)
            .env("LIVECLASS_KUBE_PROXY", &bins.kube_proxy);
    }
    let out = command
        .output()
        .map_err(io("cleaning up a stale real node"))?;
    if !out.status.success() {
        return Err(ClusterError::Other(format!(
            "cleaning up the real node left in {}: {}",
            node.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
