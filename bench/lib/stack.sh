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
LC_SOCKET_PIDS=()
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

# lc_start_socket RUN_DIR NAME [extra flags...]
lc_start_socket() {
  local run=$1 name=$2
  shift 2
  local port
  port=$(lc_free_port)
  env LIVECLASS_LISTEN="127.0.0.1:$port" LIVECLASS_REDIS_URL="redis://127.0.0.1:$LC_REDIS_PORT" \
    LIVECLASS_POD_ID="$name" LIVECLASS_TOKEN_SECRET_FILE="$LC_SECRET_FILE" \
    LIVECLASS_DRAIN_WINDOW="${LC_DRAIN_WINDOW:-2s}" RUST_LOG="${LC_SOCKET_LOG:-warn}" \
    nice -n "$LC_NICE" "$LC_SOCKET_BIN" "$@" >"$run/$name.log" 2>&1 &
  local pid=$!
  lc_track "$pid"
  LC_SOCKET_PORTS+=("$port")
  LC_SOCKET_PIDS+=("$pid")
  lc_wait_until "$name /readyz" 20 lc_http_ok "$port" /readyz || lc_die "$name did not become ready (see $run/$name.log)"
}

# lc_start_caddy RUN_DIR: Caddy with the repository's Caddyfile in front of every socket server.
lc_start_caddy() {
  local run=$1 upstreams="" p
  for p in "${LC_SOCKET_PORTS[@]}"; do upstreams+="127.0.0.1:$p "; done
  LC_CADDY_PORT=$(lc_free_port)
  LC_CADDY_ADMIN=$(lc_free_port)
  mkdir -p "$run/caddy-home"
  env LIVECLASS_BIND=127.0.0.1 LIVECLASS_PORT="$LC_CADDY_PORT" LIVECLASS_UPSTREAMS="${upstreams% }" \
    LIVECLASS_CADDY_ADMIN="127.0.0.1:$LC_CADDY_ADMIN" HOME="$run/caddy-home" \
    XDG_CONFIG_HOME="$run/caddy-home" XDG_DATA_HOME="$run/caddy-home" \
    nice -n "$LC_NICE" "$LC_CADDY" run --config "$LC_ROOT/Caddyfile" --adapter caddyfile >"$run/caddy.log" 2>&1 &
  LC_CADDY_PID=$!
  lc_track "$LC_CADDY_PID"
  lc_wait_until "Caddy to proxy /readyz" 20 lc_http_ok "$LC_CADDY_PORT" /readyz || lc_die "Caddy did not start (see $run/caddy.log)"
}

# lc_stop_all: stops every process started here (TERM, then KILL after 10 s) and reaps it.
lc_stop_all() {
  local pid deadline=$((SECONDS + 10)) alive
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
# open-file limit (each process keeps 100 descriptors for itself).
lc_load_parts() {
  local members=$1 limit
  limit=$(ulimit -Hn)
  [[ $limit == unlimited ]] && limit=1000000
  echo $(((members + limit - 101) / (limit - 100)))
}

# lc_run_load OUT_JSON LOAD_FLAGS...: runs the load generator, split over as many processes as
# the open-file limit needs (LC_LOAD_MEMBERS = sockets in all), and leaves one report in
# OUT_JSON. Returns the generator's exit status (1 = something lost).
lc_run_load() {
  local out=$1
  shift
  local parts
  parts=$(lc_load_parts "${LC_LOAD_MEMBERS:?}")
  LC_LOAD_CMD="$LC_LOAD_BIN $* --secret-file $LC_SECRET_FILE --json $out"
  if ((parts <= 1)); then
    nice -n "$LC_NICE" "$LC_LOAD_BIN" "$@" --secret-file "$LC_SECRET_FILE" --json "$out"
    return $?
  fi
  local run_id start_at i pids=() files=() status=0
  run_id=${LC_RUN_ID:-s$RANDOM$RANDOM}
  # One schedule for all parts: sending starts once every part has had time to connect.
  start_at=$(($(date +%s%3N) + ${LC_START_DELAY_MS:-20000}))
  lc_log "load split over $parts processes (open-file limit $(ulimit -Hn)); merging their reports"
  for ((i = 0; i < parts; i++)); do
    local flags=(--split "$parts" --part "$i" --run-id "$run_id" --start-at "$start_at" --json "$out.part$i")
    ((i > 0)) && flags+=(--no-progress)
    nice -n "$LC_NICE" "$LC_LOAD_BIN" "$@" --secret-file "$LC_SECRET_FILE" "${flags[@]}" >"$out.part$i.txt" &
    pids+=($!)
    files+=("$out.part$i")
  done
  for i in "${pids[@]}"; do wait "$i" || status=$?; done
  LC_LOAD_CMD="$LC_LOAD_BIN $* --secret-file $LC_SECRET_FILE --split $parts --part <i> --run-id $run_id --start-at <now+${LC_START_DELAY_MS:-20000}ms> (x$parts); $LC_LOAD_BIN merge ${files[*]} --json $out"
  "$LC_LOAD_BIN" merge "${files[@]}" --json "$out"
  status=$?
  return $status
}

# lc_machine_json: cores, memory and kernel of this machine, as a JSON object.
lc_machine_json() {
  local mem_kib cpu
  mem_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo | sed 's/"/\\"/g')
  printf '{"cores":%s,"memory_kib":%s,"cpu":"%s","kernel":"%s","open_files_hard_limit":"%s","loadavg_at_end":"%s"}' \
    "$(nproc)" "$mem_kib" "$cpu" "$(uname -r)" "$(ulimit -Hn)" "$(cut -d' ' -f1-3 /proc/loadavg)"
}

lc_git_rev() { git -C "$LC_ROOT" rev-parse --short HEAD 2>/dev/null || echo uncommitted; }

# lc_json_escape STRING
lc_json_escape() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }

# lc_proc_json NAME PID CPU_BEFORE: one process's CPU seconds since CPU_BEFORE and its memory.
lc_proc_json() {
  local name=$1 pid=$2 before=$3
  printf '{"name":"%s","pid":%s,"cpu_s":%s,"rss_kib":%s,"max_rss_kib":%s}' "$name" "$pid" \
    "$(awk -v a="$(lc_cpu_s "$pid")" -v b="$before" 'BEGIN { printf "%.2f", a - b }')" \
    "$(lc_rss_kib "$pid")" "$(lc_hwm_kib "$pid")"
}

# lc_snapshot_cpu: CPU seconds of every running stack process, into LC_CPU_BEFORE[pid].
declare -A LC_CPU_BEFORE
lc_snapshot_cpu() {
  local pid
  for pid in "${LC_PIDS[@]}"; do LC_CPU_BEFORE[$pid]=$(lc_cpu_s "$pid"); done
}

# lc_stack_processes_json: [..] of the stack's processes (Redis, socket servers, Caddy if started)
# with CPU seconds since lc_snapshot_cpu.
lc_stack_processes_json() {
  local parts=() i
  parts+=("$(lc_proc_json redis-server "$LC_REDIS_PID" "${LC_CPU_BEFORE[$LC_REDIS_PID]:-0}")")
  for ((i = 0; i < ${#LC_SOCKET_PIDS[@]}; i++)); do
    parts+=("$(lc_proc_json "socket-$((i + 1))" "${LC_SOCKET_PIDS[i]}" "${LC_CPU_BEFORE[${LC_SOCKET_PIDS[i]}]:-0}")")
  done
  if [[ -n ${LC_CADDY_PID:-} ]]; then
    parts+=("$(lc_proc_json caddy "$LC_CADDY_PID" "${LC_CPU_BEFORE[$LC_CADDY_PID]:-0}")")
  fi
  local IFS=,
  printf '[%s]' "${parts[*]}"
}

# lc_write_result FILE SCENARIO COMMAND EXTRA_JSON_FIELDS LOAD_REPORT: a result file of bench/results.
lc_write_result() {
  local file=$1 scenario=$2 command=$3 extra=$4 report=$5
  {
    printf '{\n"scenario": "%s",\n' "$scenario"
    printf '"recorded_at": "%s",\n"git": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(lc_git_rev)"
    printf '"machine": %s,\n' "$(lc_machine_json)"
    printf '"command": "%s",\n' "$(lc_json_escape "$command")"
    printf '"nice": %s,\n' "$LC_NICE"
    [[ -n $extra ]] && printf '%s,\n' "$extra"
    printf '"processes": %s,\n' "$(lc_stack_processes_json)"
    printf '"load": %s\n}\n' "$(cat "$report")"
  } >"$file"
}
