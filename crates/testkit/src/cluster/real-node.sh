# The real node's own supervisor (crates/testkit/src/cluster/real_node.rs writes it next to the
# cluster and runs it with bash). It owns what the node shares with the whole machine, so that it
# is set up once and always undone:
#   - a machine-wide lock: one real node at a time (the bridge, its address, the cgroup root and
#     kube-proxy's nftables tables are the machine's, not the cluster's);
#   - the pod network's host side: the bridge liveclass0 with the node's address, and an nftables
#     table that forwards nothing between the pod network and any other interface;
#   - containerd, whose pods (runc processes, shims, mounts, network namespaces) outlive it unless
#     someone removes them.
#
#   bash real-node.sh run <node dir> <pid file> <containerd> <containerd config> <owner pid>
#       stdin is the owner's lifeline: on EOF (the owner stopped the cluster, or died) it waits
#       for the kubelet, kube-proxy and CoreDNS to exit (their pid files are listed in
#       <node dir>/wait-for), removes every pod through the CRI, stops containerd, and undoes
#       everything (cleanup below). Exits with containerd's status if containerd dies first.
#   bash real-node.sh cleanup <node dir>
#       undo whatever a previous run left behind (idempotent); `scripts/cluster down` uses it.
# Environment: LIVECLASS_CRICTL and LIVECLASS_KUBE_PROXY (paths of crictl and kube-proxy).
set -u

BRIDGE=liveclass0
NODE_CIDR=10.245.0.1/24
NFT_TABLE=liveclass
CGROUP_ROOT=liveclass
LOCK=/run/liveclass-real-node.lock

mode=${1:?mode: run or cleanup}
node=${2:?the node folder}
log() { echo "liveclass-real-node: $*" >&2; }
alive() { [[ -n "${1:-}" && -d "/proc/$1" ]] && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null; }

# ---- undoing ------------------------------------------------------------------------------------
remove_pods() {
  local sock="$node/containerd/containerd.sock" crictl=${LIVECLASS_CRICTL:-}
  [[ -S "$sock" && -x "$crictl" ]] || return 0
  local pods
  pods=$("$crictl" --runtime-endpoint "unix://$sock" --timeout 10s pods -q 2>/dev/null) || return 0
  [[ -n "$pods" ]] || return 0
  log "removing $(wc -w <<<"$pods") pod sandbox(es) through the CRI"
  # shellcheck disable=SC2086 # one id per word
  "$crictl" --runtime-endpoint "unix://$sock" --timeout 20s stopp $pods >/dev/null 2>&1
  # shellcheck disable=SC2086
  "$crictl" --runtime-endpoint "unix://$sock" --timeout 20s rmp -f $pods >/dev/null 2>&1
}

kill_leftovers() {
  local f pid cg killed=0
  # Shims and container processes a stopped containerd left (by the pid files it keeps).
  for f in "$node"/containerd/state/io.containerd.runtime.v2.task/*/*/{init,shim}.pid; do
    [[ -f "$f" ]] || continue
    pid=$(<"$f")
    alive "$pid" && kill -KILL "$pid" 2>/dev/null && killed=$((killed + 1))
  done
  # Anything still in the pods' cgroups (the kubelet's cgroup root is /liveclass).
  for cg in /sys/fs/cgroup/pids/"$CGROUP_ROOT" /sys/fs/cgroup/memory/"$CGROUP_ROOT"; do
    [[ -d "$cg" ]] || continue
    while read -r f; do
      while read -r pid; do
        [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null && killed=$((killed + 1))
      done <"$f"
    done < <(find "$cg" -name cgroup.procs 2>/dev/null)
  done
  ((killed == 0)) || log "killed $killed leftover process(es)"
  # The cgroups themselves, deepest first, in every hierarchy.
  for cg in /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
    [[ -d "$cg" ]] || continue
    for _ in 1 2 3 4 5; do
      find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
      [[ -d "$cg" ]] || break
      sleep 0.2
    done
  done
}

unmount_all() {
  local target left
  # Mount points at or under the node folder, deepest first (kubelet volumes, container root
  # file systems, network namespaces, the kubelet's own rshared bind mount).
  for _ in 1 2 3; do
    left=0
    while read -r target; do
      umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true
      left=1
    done < <(awk -v dir="$node" '$5 == dir || index($5, dir "/") == 1 {print $5}' /proc/self/mountinfo | sort -r)
    ((left)) || return 0
  done
}

network_down() {
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
  nft list table inet "$NFT_TABLE" >/dev/null 2>&1 && nft delete table inet "$NFT_TABLE"
  # kube-proxy's own tables (nftables mode), removed the way kube-proxy documents.
  if [[ -x "${LIVECLASS_KUBE_PROXY:-}" ]] && nft list table ip kube-proxy >/dev/null 2>&1; then
    "$LIVECLASS_KUBE_PROXY" --cleanup >/dev/null 2>&1 || true
  fi
  # The portmap plugin's chains (each pod's rules went with its sandbox; these are the anchors).
  if command -v iptables >/dev/null 2>&1; then
    local chain
    for chain in CNI-HOSTPORT-DNAT CNI-HOSTPORT-SETMARK CNI-HOSTPORT-MASQ; do
      iptables -t nat -S "$chain" >/dev/null 2>&1 || continue
      iptables -t nat -S | awk -v c="$chain" '$1 == "-A" && $0 ~ ("-j " c "( |$)") {sub(/^-A/, "-D"); print}' |
        while read -r rule; do eval "iptables -t nat $rule" 2>/dev/null; done
      iptables -t nat -F "$chain" 2>/dev/null
      iptables -t nat -X "$chain" 2>/dev/null
    done
  fi
  if [[ -f "$node/ip_forward.orig" ]]; then
    cat "$node/ip_forward.orig" >/proc/sys/net/ipv4/ip_forward 2>/dev/null
    rm -f "$node/ip_forward.orig"
  fi
}

# undo: what a node changed on the machine (processes, mounts, network, cgroups); files stay.
undo() {
  kill_leftovers
  unmount_all
  network_down
}

cleanup() {
  [[ -d "$node" ]] || return 0
  undo
  # Nothing is mounted under the folder any more; --one-file-system is the belt to those braces.
  rm -rf --one-file-system "$node/containerd" "$node/kubelet" "$node/cni" "$node/pod-logs" 2>/dev/null
  return 0
}

if [[ "$mode" == cleanup ]]; then
  exec 8>"$LOCK"
  flock -w 60 8 || { log "another real node holds $LOCK"; exit 1; }
  cleanup
  exit 0
fi
[[ "$mode" == run ]] || { log "unknown mode '$mode'"; exit 2; }
pid_file=${3:?the pid file} containerd=${4:?containerd} config=${5:?the containerd config}
owner=${6:?the owner pid}
# For whoever waits on the cluster's pid files (its janitor, scripts/cluster down): this script
# outlives containerd while it cleans up.
echo "$$" >"$(dirname "$pid_file")/real-node.pid"

# ---- the machine lock ---------------------------------------------------------------------------
exec 3<&0 </dev/null # the lifeline on fd 3
exec 8>"$LOCK"
if ! flock -n 8; then
  log "waiting for the real node another cluster runs on this machine (lock $LOCK)"
  # Give up if our owner goes away while we wait.
  while ! flock -w 1 8; do
    alive "$owner" || exit 0
  done
fi
log "holding $LOCK"
# A previous owner that died hard (SIGKILL of this script too) may have left its node's
# network and cgroups behind; this node's own files (containerd's and the CNI configuration,
# written just now) stay.
undo

# ---- the pod network's host side ----------------------------------------------------------------
cat /proc/sys/net/ipv4/ip_forward >"$node/ip_forward.orig"
ip link add "$BRIDGE" type bridge &&
  ip addr add "$NODE_CIDR" dev "$BRIDGE" &&
  ip link set "$BRIDGE" up || { log "could not create the bridge $BRIDGE"; cleanup; exit 1; }
# Pods talk to each other and to the node's own address; the node forwards nothing between the
# pod network and any other interface (the bridge plugin turns ip_forward on for the bridge).
nft -f - <<EOF || { log "could not install the nftables table $NFT_TABLE"; cleanup; exit 1; }
table inet $NFT_TABLE {
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    iifname "$BRIDGE" oifname != "$BRIDGE" counter drop comment "nothing leaves the pod network"
    oifname "$BRIDGE" iifname != "$BRIDGE" counter drop comment "nothing enters it from outside"
  }
}
EOF

# ---- the pods' cgroup root ----------------------------------------------------------------------
# The kubelet refuses a cgroupRoot that does not exist in every hierarchy; a new cpuset cgroup
# starts with no CPUs and no memory nodes, so it gets its parent's.
for h in /sys/fs/cgroup/*/; do
  [[ -d "$h" && ! -L "${h%/}" ]] || continue
  mkdir -p "$h$CGROUP_ROOT" 2>/dev/null || continue
  if [[ -f "${h}cpuset.cpus" ]]; then
    cat "${h}cpuset.cpus" >"$h$CGROUP_ROOT/cpuset.cpus" 2>/dev/null
    cat "${h}cpuset.mems" >"$h$CGROUP_ROOT/cpuset.mems" 2>/dev/null
  fi
done
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
  mkdir -p "/sys/fs/cgroup/$CGROUP_ROOT" # cgroup v2 (one hierarchy)
fi

# ---- containerd ---------------------------------------------------------------------------------
"$containerd" --config "$config" 3<&- 8>&- &
server=$!
echo "$server" >"$pid_file.tmp" && mv -f "$pid_file.tmp" "$pid_file"
(read -r _ <&3) 8>&- &
lifeline=$!
exec 3<&-
wait -n -p finished "$server" "$lifeline"
status=$?
if [[ "${finished:-}" == "$server" ]]; then
  kill "$lifeline" 2>/dev/null
  log "containerd exited with status $status"
  cleanup
  exit "$status"
fi

# ---- stopping -----------------------------------------------------------------------------------
# The kubelet first (it would recreate what we remove), then the pods, then containerd.
deadline=$((SECONDS + 30))
for f in "$node"/wait-for/*.pid; do
  [[ -f "$f" ]] || continue
  pid=$(<"$f")
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  alive "$pid" && kill -KILL "$pid" 2>/dev/null
done
remove_pods
kill -TERM "$server" 2>/dev/null
for _ in $(seq 100); do alive "$server" || break; sleep 0.1; done
alive "$server" && { log "containerd ignored SIGTERM; killing it"; kill -KILL "$server" 2>/dev/null; }
wait "$server" 2>/dev/null
cleanup
log "stopped; the bridge, nftables table, cgroups and mounts are gone"
exit 0
