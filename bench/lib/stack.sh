# shellcheck shell=bash
# The local liveclass stack on loopback — redis-server, liveclass-socket servers, Caddy — started
# and stopped by PID, plus the load generator and per-process CPU and memory readings.
# Sourced by scripts/demo and the bench/*.sh scenarios; not run on its own.
#
# Every process started here is recorded in LC_PIDS; lc_stop_all (call it from an EXIT trap)
# stops exactly those, TERM first and KILL after a deadline, and leaves nothing behind.

LC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LC_PIDS=()
LC_SOCKET_PORTS=()
LC_SOCKET_ADMIN_PORTS=()
LC_SOCKET_PIDS=()
LC_SOCKET_NAMES=()
LC_SECRET_FILE=
# Scheduling priority of every process started here (nice value; negative needs root). The
# benchmarks use -10 so that other work on a shared machine (compiles) does not set the figures.
LC_NICE=${LC_NICE:-0}

lc_log() {
  if [[ -t 2 ]]; then
    printf '\033[1m[liveclass %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2
  else
    printf '[liveclass %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
  fi
}
lc_die() {
  lc_log "error: $*"
  exit 1
}

# lc_wait_until DESCRIPTION TIMEOUT_SECONDS COMMAND...: polls COMMAND every 100 ms until it
# succeeds; fails after the deadline.
lc_wait_until() {
  local what=$1 timeout=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      lc_log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.1
  done
}

# lc_http_status PORT PATH: prints the HTTP status of GET http://127.0.0.1:PORT/PATH (bash only,
# no curl needed), or nothing when nothing answers.
lc_http_status() {
  local port=$1 path=$2 line
  { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
  printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
  IFS= read -r -t 3 line <&3 || true
  exec 3>&- 3<&-
  line=${line#HTTP/1.? }
  printf '%s' "${line%% *}"
}
lc_http_ok() { [[ $(lc_http_status "$1" "$2" 2>/dev/null) == 200 ]]; }

# lc_port_free PORT: true when nothing listens on 127.0.0.1:PORT.
lc_port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# lc_free_port: a free loopback port below the ephemeral range (so outgoing connections never
# take it between this check and the bind).
lc_free_port() {
  local port i
  for ((i = 0; i < 200; i++)); do
    port=$((20000 + RANDOM % 12000))
    if lc_port_free "$port"; then
      echo "$port"
      return 0
    fi
  done
  lc_die "no free loopback port found"
}

# lc_raise_nofile: soft open-file limit to the hard limit (20,000 here); prints the new limit.
lc_raise_nofile() {
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  ulimit -n
}

lc_ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1 && [[ ! -x /usr/bin/redis-server ]]; then
    lc_log "installing redis-server (Debian package)"
    if [[ $(id -u) -eq 0 ]]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
      sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    fi
  fi
  LC_REDIS_BIN=$(command -v redis-server || echo /usr/bin/redis-server)
}

# lc_build: release builds of the socket server and the load generator (cargo skips the work when
# nothing changed). Sets LC_SOCKET_BIN and LC_LOAD_BIN.
lc_build() {
  command -v cargo >/dev/null || lc_die "cargo is not installed (https://rustup.rs)"
  lc_log "building liveclass-socket and liveclass-load (release)"
  (cd "$LC_ROOT" && cargo build --release --locked -q -p liveclass-socket -p liveclass-load) ||
    (cd "$LC_ROOT" && cargo build --release -q -p liveclass-socket -p liveclass-load) ||
    lc_die "cargo build failed"
  local target=${CARGO_TARGET_DIR:-$LC_ROOT/target}
  LC_SOCKET_BIN=$target/release/liveclass-socket
  LC_LOAD_BIN=$target/release/liveclass-load
  [[ -x $LC_SOCKET_BIN && -x $LC_LOAD_BIN ]] || lc_die "binaries not found under $target/release"
}

# lc_ensure_caddy: the pinned Caddy (built once with Go into ~/.cache/liveclass). Sets LC_CADDY.
lc_ensure_caddy() {
  if [[ -n ${LIVECLASS_CADDY:-} ]]; then
    LC_CADDY=$LIVECLASS_CADDY
  else
    LC_CADDY=$(bash "$LC_ROOT/scripts/caddy-binary" --print-path) || lc_die "could not get Caddy"
  fi
}

# lc_prepare RUN_DIR: everything the stack needs, and a fresh token secret in RUN_DIR.
lc_prepare() {
  local run=$1
  lc_priority
  mkdir -p "$run"
  lc_ensure_redis
  lc_build
  lc_ensure_caddy
  LC_SECRET_FILE=$run/token-secret
  (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$LC_SECRET_FILE")
}

lc_track() { LC_PIDS+=("$1"); }

# lc_priority: with a negative LC_NICE, also raise the CPU share of this session's scheduler
# autogroup (Linux gives each session an equal share first, so per-process nice alone does not
# beat compiles running in other sessions); lc_stop_all puts it back.
LC_AUTOGROUP_OLD=
lc_priority() {
  ((LC_NICE < 0)) || return 0
  [[ -w /proc/self/autogroup ]] || return 0
  LC_AUTOGROUP_OLD=$(awk '{ print $3 }' /proc/self/autogroup 2>/dev/null || true)
  echo "$LC_NICE" >/proc/self/autogroup 2>/dev/null || LC_AUTOGROUP_OLD=
}

lc_start_redis() {
  local run=$1
  LC_REDIS_PORT=$(lc_free_port)
  nice -n "$LC_NICE" "$LC_REDIS_BIN" --port "$LC_REDIS_PORT" --bind 127.0.0.1 --protected-mode yes --save "" --appendonly no \
    --dir "$run" --logfile "$run/redis.log" --maxclients 10000 >/dev/null 2>&1 &
  LC_REDIS_PID=$!
  lc_track "$LC_REDIS_PID"
  lc_wait_until "redis-server on port $LC_REDIS_PORT" 10 redis_ping "$LC_REDIS_PORT" || lc_die "redis-server did not start (see $run/redis.log)"
}

redis_ping() {
  local reply
  { exec 4<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&4
  IFS= read -r -t 2 reply <&4 || true
  exec 4>&- 4<&-
  [[ $reply == +PONG* ]]
}

# lc_socket_has FLAG: true when this liveclass-socket build has FLAG (e.g. --admin-listen: newer
# builds serve /metrics on a separate admin listener, older ones on the students' port).
LC_SOCKET_HELP=
lc_socket_has() {
  [[ -n $LC_SOCKET_HELP ]] || LC_SOCKET_HELP=$("$LC_SOCKET_BIN" --help 2>/dev/null || echo none)
  grep -q -- "$1" <<<"$LC_SOCKET_HELP"
}

# lc_start_socket RUN_DIR NAME [extra flags...]: sets LC_SOCKET_PORTS, LC_SOCKET_ADMIN_PORTS
# (where /metrics is), LC_SOCKET_PIDS and LC_SOCKET_NAMES (same order).
lc_start_socket() {
  local run=$1 name=$2
  shift 2
  local port admin extra_env=()
  port=$(lc_free_port)
  admin=$port
  if lc_socket_has --admin-listen; then
    admin=$(lc_free_port)
    extra_env+=(LIVECLASS_ADMIN_LISTEN="127.0.0.1:$admin")
  fi
  # Behind Caddy, students are told apart by the address Caddy forwards (as behind a cluster's
  # gateway), not by Caddy's own.
  if [[ -n ${LC_TRUSTED_PROXY:-} ]] && lc_socket_has --trusted-proxy; then
    extra_env+=(LIVECLASS_TRUSTED_PROXIES="$LC_TRUSTED_PROXY")
  fi
  env LIVECLASS_LISTEN="127.0.0.1:$port" "${extra_env[@]}" LIVECLASS_REDIS_URL="redis://127.0.0.1:$LC_REDIS_PORT" \
    LIVECLASS_POD_ID="$name" LIVECLASS_TOKEN_SECRET_FILE="$LC_SECRET_FILE" \
    LIVECLASS_DRAIN_WINDOW="${LC_DRAIN_WINDOW:-2s}" RUST_LOG="${LC_SOCKET_LOG:-warn}" \
    nice -n "$LC_NICE" "$LC_SOCKET_BIN" "$@" >"$run/$name.log" 2>&1 &
  local pid=$!
  lc_track "$pid"
  LC_SOCKET_PORTS+=("$port")
  LC_SOCKET_ADMIN_PORTS+=("$admin")
  LC_SOCKET_PIDS+=("$pid")
  LC_SOCKET_NAMES+=("$name")
  lc_wait_until "$name /readyz" 20 lc_http_ok "$port" /readyz || lc_die "$name did not become ready (see $run/$name.log)"
}

# lc_metric PORT NAME: the value of the first sample of metric NAME at http://127.0.0.1:PORT/metrics
# (integer part), or nothing.
lc_metric() {
  local port=$1 name=$2
  { exec 5<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
  printf 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&5
  awk -v m="$name" '$1 == m || index($1, m "{") == 1 { print int($2); exit }' <&5
  exec 5>&- 5<&-
}

# lc_start_caddy RUN_DIR: Caddy with the repository's Caddyfile in front of every socket server.
lc_start_caddy() {
  local run=$1 upstreams="" p
  for p in "${LC_SOCKET_PORTS[@]}"; do upstreams+="127.0.0.1:$p "; done
  # A caller that must know the port before the socket servers start (their allowed Origin)
  # sets LC_CADDY_PORT_WANTED.
  LC_CADDY_PORT=${LC_CADDY_PORT_WANTED:-$(lc_free_port)}
  LC_CADDY_ADMIN=$(lc_free_port)
  mkdir -p "$run/caddy-home"
  env LIVECLASS_BIND=127.0.0.1 LIVECLASS_PORT="$LC_CADDY_PORT" LIVECLASS_UPSTREAMS="${upstreams% }" \
    LIVECLASS_CLIENTS="$LC_ROOT/clients" \
    LIVECLASS_CADDY_ADMIN="127.0.0.1:$LC_CADDY_ADMIN" HOME="$run/caddy-home" \
    XDG_CONFIG_HOME="$run/caddy-home" XDG_DATA_HOME="$run/caddy-home" \
    nice -n "$LC_NICE" "$LC_CADDY" run --config "$LC_ROOT/Caddyfile" --adapter caddyfile >"$run/caddy.log" 2>&1 &
  LC_CADDY_PID=$!
  lc_track "$LC_CADDY_PID"
  lc_wait_until "Caddy to proxy /ws" 20 lc_caddy_proxies "$LC_CADDY_PORT" || lc_die "Caddy did not start (see $run/caddy.log)"
}

# lc_caddy_setting NAME: the value of the proxy setting NAME (stream_buffer_size,
# stream_close_delay, ...) that lc_start_caddy's Caddy runs with, read from the files it loads:
# the line `NAME <value>` of charts/liveclass/files/gateway/socket-proxy.caddy, where a value
# `{args[i]}` is the i-th argument of the Caddyfile's `import .../socket-proxy.caddy ...` line,
# and an argument `{$VAR:default}` is VAR from the exported environment (Caddy inherits it) or
# the default. Prints `?` when the files do not have it.
lc_caddy_setting() {
  local name=$1 snippet=$LC_ROOT/charts/liveclass/files/gateway/socket-proxy.caddy value args i
  value=$(awk -v n="$name" '$1 == n { print $2; exit }' "$snippet" 2>/dev/null)
  if [[ $value =~ ^\{args\[([0-9]+)\]\}$ ]]; then
    i=${BASH_REMATCH[1]}
    args=$(awk '$1 == "import" && $2 ~ /socket-proxy\.caddy$/ { $1 = ""; $2 = ""; print; exit }' "$LC_ROOT/Caddyfile")
    read -r -a args <<<"$args"
    value=${args[i]:-}
  fi
  if [[ $value =~ ^\{\$([A-Za-z_][A-Za-z0-9_]*)(:(.*))?\}$ ]]; then
    local var=${BASH_REMATCH[1]}
    value=${BASH_REMATCH[3]}
    # Caddy takes the default only when the variable is not in its environment at all.
    if printenv "$var" >/dev/null; then value=$(printenv "$var"); fi
  fi
  printf '%s' "${value:-?}"
}

# lc_caddy_proxies PORT: true when Caddy answers its own /healthz and passes /ws to a socket
# server (a plain GET without a token gets the server's 4xx refusal, not Caddy's 404 or 502).
# The gateway serves only /ws, /class/ and /healthz, so a server's /readyz is not reachable
# through it.
lc_caddy_proxies() {
  local status
  lc_http_ok "$1" /healthz || return 1
  status=$(lc_http_status "$1" /ws 2>/dev/null)
  [[ $status == 4* && $status != 404 ]]
}

# lc_stop_all: stops every process started here (TERM, then KILL after 10 s) and reaps it.
lc_stop_all() {
  local pid deadline=$((SECONDS + 10)) alive
  [[ -z ${LC_SLEEP_PID:-} ]] || kill "$LC_SLEEP_PID" 2>/dev/null || true
  if ((${#LC_PIDS[@]} == 0)); then
    [[ -z $LC_AUTOGROUP_OLD ]] || echo "$LC_AUTOGROUP_OLD" >/proc/self/autogroup 2>/dev/null || true
    return 0
  fi
  for pid in "${LC_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  while ((SECONDS < deadline)); do
    alive=0
    for pid in "${LC_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${LC_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${LC_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  LC_PIDS=()
  LC_SOCKET_PORTS=()
  LC_SOCKET_ADMIN_PORTS=()
  LC_SOCKET_PIDS=()
  LC_SOCKET_NAMES=()
  LC_CADDY_PID=
  if [[ -n $LC_AUTOGROUP_OLD ]]; then
    echo "$LC_AUTOGROUP_OLD" >/proc/self/autogroup 2>/dev/null || true
  fi
}

# lc_cpu_s PID: user + system CPU seconds of a running process.
lc_cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# lc_rss_kib PID: resident memory now (KiB).
lc_rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# lc_hwm_kib PID: peak resident memory (KiB).
lc_hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# lc_load_parts MEMBERS: how many load-generator processes MEMBERS sockets need under the
# open-file limit (each process keeps 100 descriptors for itself); LC_LOAD_PARTS overrides it.
lc_load_parts() {
  local members=$1 limit
  if [[ -n ${LC_LOAD_PARTS:-} ]]; then
    echo "$LC_LOAD_PARTS"
    return
  fi
  limit=$(ulimit -Hn)
  [[ $limit == unlimited ]] && limit=1000000
  echo $(((members + limit - 101) / (limit - 100)))
}

lc_now_ms() { date +%s%3N; }

# lc_snapshot_cpu: CPU seconds of every tracked process, into LC_CPU_BEFORE[pid].
declare -A LC_CPU_BEFORE
lc_snapshot_cpu() {
  local pid
  for pid in "${LC_PIDS[@]}"; do LC_CPU_BEFORE[$pid]=$(lc_cpu_s "$pid"); done
}

# lc_sleep_until_ms UNIX_MS: sleeps until that instant (no-op when it has passed). The sleep runs
# in the background and is waited for, so a signal's trap (the cleanup) runs at once, not after it.
LC_SLEEP_PID=
lc_sleep_until_ms() {
  local left=$(($1 - $(lc_now_ms)))
  ((left > 0)) || return 0
  sleep "$(awk -v l="$left" 'BEGIN { printf "%.3f", l / 1000 }')" &
  LC_SLEEP_PID=$!
  wait "$LC_SLEEP_PID" || true
  LC_SLEEP_PID=
}

# lc_run_load OUT_JSON LOAD_FLAGS...: runs the load generator — split over as many processes as
# the open-file limit needs (LC_LOAD_MEMBERS = sockets in all) — and leaves one report in
# OUT_JSON and its histograms in OUT_JSON's .hlog. Returns the generator's exit status
# (1 = not clean).
#
# The run id is given here, once (LC_RUN_ID, or a random one): callers must not pass --run-id.
# Unless the flags have --send-from-start, sending starts at one instant for every part
# (--start-at, LC_START_DELAY_MS after now: by default the arrival plan plus 10 s), so the
# script knows the sending window: it reads every stack process's CPU at its start and end
# (LC_CPU_WINDOW[pid]), and calls the function named by LC_WINDOW_HOOK (if set) LC_HOOK_AT_S
# seconds into it. Every part runs in the background, tracked in LC_PIDS, so lc_stop_all (the
# scripts' EXIT trap) stops them too; their pids are in LC_LOAD_PIDS.
declare -A LC_CPU_WINDOW
LC_LOAD_PROCESS_FLAGS=()
LC_LOAD_PIDS=()
lc_run_load() {
  local out=$1
  shift
  local a from_start=0 duration_s=0 prev= quiet=0
  for a in "$@"; do
    [[ $a == --run-id || $a == --run-id=* ]] && lc_die "lc_run_load gives the run id itself (LC_RUN_ID); do not pass --run-id"
    [[ $a == --send-from-start ]] && from_start=1
    [[ $a == --no-progress ]] && quiet=1
    if [[ $prev == --duration ]]; then duration_s=$(lc_seconds "$a"); fi
    prev=$a
  done
  local parts run_id start_at flags=() i status=0 files=() pid
  parts=$(lc_load_parts "${LC_LOAD_MEMBERS:?}")
  run_id=${LC_RUN_ID:-r$RANDOM$RANDOM}
  if ((from_start)); then
    start_at=$(lc_now_ms)
  else
    start_at=$(($(lc_now_ms) + ${LC_START_DELAY_MS:-$((LC_LOAD_MEMBERS * 1000 / ${LC_RAMP:-2000} + 10000))}))
    flags+=(--start-at "$start_at")
  fi
  LC_LOAD_PIDS=()
  LC_WINDOW_START_MS=$start_at
  LC_WINDOW_END_MS=$(awk -v s="$start_at" -v d="$duration_s" 'BEGIN { printf "%.0f", s + d * 1000 }')
  if ((parts <= 1)); then
    LC_LOAD_CMD="$LC_LOAD_BIN $* --run-id $run_id ${flags[*]} --secret-file $LC_SECRET_FILE --json $out --hdr-log ${out%.json}.hlog"
    nice -n "$LC_NICE" "$LC_LOAD_BIN" "$@" --run-id "$run_id" "${flags[@]}" --secret-file "$LC_SECRET_FILE" \
      --json "$out" --hdr-log "${out%.json}.hlog" &
    LC_LOAD_PIDS+=($!)
  else
    lc_log "load split over $parts processes (open-file limit $(ulimit -Hn)); merging their reports"
    for ((i = 0; i < parts; i++)); do
      local part_flags=(--split "$parts" --part "$i" --run-id "$run_id" "${flags[@]}" --json "$out.part$i")
      ((i > 0 && !quiet)) && part_flags+=(--no-progress)
      nice -n "$LC_NICE" "$LC_LOAD_BIN" "$@" --secret-file "$LC_SECRET_FILE" "${part_flags[@]}" >"$out.part$i.txt" 2>&1 &
      LC_LOAD_PIDS+=($!)
      files+=("$out.part$i")
    done
    LC_LOAD_CMD="$LC_LOAD_BIN $* --secret-file $LC_SECRET_FILE --split $parts --part <i> --run-id $run_id ${flags[*]} --json $out.part<i> (x$parts); $LC_LOAD_BIN merge ${files[*]} --json $out --hdr-log ${out%.json}.hlog"
  fi
  for pid in "${LC_LOAD_PIDS[@]}"; do
    lc_track "$pid"
    lc_log "load generator pid $pid"
  done
  # The sending window: CPU of every stack process at its start and its end.
  lc_sleep_until_ms "$LC_WINDOW_START_MS"
  lc_snapshot_cpu
  if [[ -n ${LC_WINDOW_HOOK:-} ]]; then
    lc_sleep_until_ms $((LC_WINDOW_START_MS + ${LC_HOOK_AT_S:-0} * 1000))
    "$LC_WINDOW_HOOK"
  fi
  lc_sleep_until_ms "$LC_WINDOW_END_MS"
  for pid in "${LC_PIDS[@]}"; do
    LC_CPU_WINDOW[$pid]=$(awk -v a="$(lc_cpu_s "$pid")" -v b="${LC_CPU_BEFORE[$pid]:-0}" 'BEGIN { printf "%.2f", a - b }')
  done
  LC_LOAD_PROCESS_FLAGS=()
  for ((i = 0; i < ${#LC_LOAD_PIDS[@]}; i++)); do
    pid=${LC_LOAD_PIDS[i]}
    LC_LOAD_PROCESS_FLAGS+=(--process "load-$i=${LC_CPU_WINDOW[$pid]:-0},$(lc_cpu_s "$pid"),$(lc_rss_kib "$pid"),$(lc_hwm_kib "$pid")")
  done
  for pid in "${LC_LOAD_PIDS[@]}"; do wait "$pid" || status=$?; done
  lc_untrack "${LC_LOAD_PIDS[@]}"
  if ((parts > 1)); then
    status=0
    "$LC_LOAD_BIN" merge "${files[@]}" --json "$out" --hdr-log "${out%.json}.hlog" || status=$?
  fi
  return $status
}

# lc_untrack PID...: forget processes that have been waited for.
lc_untrack() {
  local keep=() pid drop
  for pid in "${LC_PIDS[@]}"; do
    for drop in "$@"; do [[ $pid == "$drop" ]] && continue 2; done
    keep+=("$pid")
  done
  LC_PIDS=("${keep[@]}")
}

# lc_seconds DURATION: 500ms, 30s, 2m, 1.5 -> seconds (as the load generator reads them).
lc_seconds() {
  awk -v d="$1" 'BEGIN {
    if (d ~ /ms$/) { sub(/ms$/, "", d); print d / 1000 }
    else if (d ~ /m$/) { sub(/m$/, "", d); print d * 60 }
    else if (d ~ /h$/) { sub(/h$/, "", d); print d * 3600 }
    else { sub(/s$/, "", d); print d + 0 } }'
}

# lc_calibrate OUT_JSON: the calibration figure (a raw TCP fan-out), measured now.
lc_calibrate() {
  nice -n "$LC_NICE" "$LC_LOAD_BIN" calibrate --json "$1" ${LC_CALIBRATE_FLAGS:-}
}

# lc_loadavg: the 1-minute load average now.
lc_loadavg() { cut -d' ' -f1 /proc/loadavg; }

# Wall time per step: lc_step NAME starts a step (ending the one before); LC_STEPS holds them.
declare -A LC_STEPS
LC_STEP_NAME=
LC_STEP_START=
lc_step() {
  local now
  now=$(lc_now_ms)
  if [[ -n $LC_STEP_NAME ]]; then
    LC_STEPS[$LC_STEP_NAME]=$(awk -v a="$now" -v b="$LC_STEP_START" 'BEGIN { printf "%.3f", (a - b) / 1000 }')
  fi
  LC_STEP_NAME=${1:-}
  LC_STEP_START=$now
}

# lc_versions_flags: --version-of flags for `liveclass-load record` (Caddy, Redis, rustc, kernel).
lc_versions_flags() {
  LC_VERSION_FLAGS=(--version-of "rustc=$(rustc --version 2>/dev/null || echo unknown)"
    --version-of "redis=$("$LC_REDIS_BIN" --version 2>/dev/null | head -1)"
    --version-of "liveclass-socket=$("$LC_SOCKET_BIN" --version 2>/dev/null)"
    --version-of "liveclass-load=$("$LC_LOAD_BIN" --version 2>/dev/null)")
  if [[ -n ${LC_CADDY:-} ]]; then
    LC_VERSION_FLAGS+=(--version-of "caddy=$("$LC_CADDY" version 2>/dev/null | head -1)")
  fi
}

# lc_process_flags: --process flags for every running stack process and load-generator part:
# CPU seconds in the last sending window, since the last lc_snapshot_cpu... and memory.
lc_process_flags() {
  LC_PROCESS_FLAGS=("${LC_LOAD_PROCESS_FLAGS[@]}")
  local i
  [[ -n ${LC_REDIS_PID:-} ]] && lc_process_flag redis-server "$LC_REDIS_PID"
  for ((i = 0; i < ${#LC_SOCKET_PIDS[@]}; i++)); do lc_process_flag "${LC_SOCKET_NAMES[i]}" "${LC_SOCKET_PIDS[i]}"; done
  [[ -n ${LC_CADDY_PID:-} ]] && lc_process_flag caddy "$LC_CADDY_PID"
  return 0
}
# lc_process_flag NAME PID: one --process flag (a process that has exited counts its window CPU
# and no memory).
lc_process_flag() {
  local name=$1 pid=$2
  if kill -0 "$pid" 2>/dev/null; then
    LC_PROCESS_FLAGS+=(--process "$name=${LC_CPU_WINDOW[$pid]:-0},$(lc_cpu_s "$pid"),$(lc_rss_kib "$pid"),$(lc_hwm_kib "$pid")")
  else
    LC_PROCESS_FLAGS+=(--process "$name=${LC_CPU_WINDOW[$pid]:-0},0,0,0")
  fi
}

# lc_record SCENARIO VARIANT OUT_JSON LOAD_JSON CALIBRATION_JSON [extra record flags...]: writes
# bench/results/SCENARIO/VARIANT/<time>.json (and moves the .hlog beside it).
lc_record() {
  local scenario=$1 variant=$2 load=$3 calibration=$4
  shift 4
  local dir=$LC_ROOT/bench/results/$scenario/$variant stamp
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  mkdir -p "$dir"
  lc_step
  local steps=() k
  for k in "${!LC_STEPS[@]}"; do steps+=(--step "$k=${LC_STEPS[$k]}"); done
  local hlog=()
  if [[ -f ${load%.json}.hlog ]]; then
    cp "${load%.json}.hlog" "$dir/$stamp.hlog"
    hlog=(--hdr-log "$dir/$stamp.hlog")
  fi
  local cal=()
  [[ -s $calibration ]] && cal=(--calibration "$calibration")
  "$LC_LOAD_BIN" record --scenario "$scenario" --variant "$variant" --repo "$LC_ROOT" \
    --command "${LC_SCRIPT_CMD:-?}; load: ${LC_LOAD_CMD:-?}" --nice "$LC_NICE" \
    --loadavg-before "${LC_LOADAVG_BEFORE:-0}" --load "$load" "${cal[@]}" "${hlog[@]}" \
    --param socket_flags="${LC_SOCKET_EXTRA:-?}" \
    "${steps[@]}" "${LC_VERSION_FLAGS[@]}" "${LC_PROCESS_FLAGS[@]}" "$@" \
    --out "$dir/$stamp.json" || lc_die "could not record the result"
  lc_log "recorded bench/results/$scenario/$variant/$stamp.json"
}

# lc_bench_setup NAME: what every benchmark script does first: the open-file limit, a run folder
# ($RUN), the binaries and a token secret, the EXIT trap. Sets BENCH_REPEAT (runs per figure).
lc_bench_setup() {
  trap lc_stop_all EXIT
  trap 'exit 130' INT TERM
  lc_raise_nofile >/dev/null
  RUN=$LC_ROOT/run/bench-$1-$(date +%Y%m%d-%H%M%S)
  lc_prepare "$RUN"
  BENCH_REPEAT=${BENCH_REPEAT:-3}
  local load
  load=$(lc_loadavg)
  if awk -v l="$load" 'BEGIN { exit !(l >= 0.5) }'; then
    lc_log "note: the machine is busy (load average $load); the figures will say so"
  fi
}

# lc_start_stack SERVERS CADDY(yes|no) [socket flags...]: Redis, SERVERS socket servers and,
# with yes, Caddy in front; starts a run's steps and notes the load average before it.
lc_start_stack() {
  local servers=$1 caddy=$2 i
  shift 2
  # Recorded with the result: a benchmark that changes a server limit says so in its JSON.
  LC_SOCKET_EXTRA="${*:-no flags} (LIVECLASS_DRAIN_WINDOW=${LC_DRAIN_WINDOW:-2s}; everything else the production default)"
  LC_STEPS=()
  LC_STEP_NAME=
  LC_LOADAVG_BEFORE=$(lc_loadavg)
  lc_step stack
  lc_start_redis "$RUN"
  LC_TRUSTED_PROXY=
  [[ $caddy == yes ]] && LC_TRUSTED_PROXY=127.0.0.1/32
  for ((i = 1; i <= servers; i++)); do lc_start_socket "$RUN" "socket-$i" "$@"; done
  if [[ $caddy == yes ]]; then lc_start_caddy "$RUN"; fi
  lc_versions_flags
}
