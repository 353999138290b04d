#!/usr/bin/env bash
# idle-memory: 19,000 idle connections on ONE socket server (no Caddy, no comments); records the
# server's resident memory per connection:
#   bench/results/idle-memory.json
#
# RSS per connection = (server RSS with everyone connected - RSS before the first connection)
# / connections. The load generator holds 19,000 sockets in one process (the open-file limit is
# 20,000 per process) and spreads its source addresses over 127.0.0.1-16.
#
# Environment: BENCH_STUDENTS (19000), BENCH_HOLD (20s)
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "$0")/lib/stack.sh"
# Priority over other work on a shared machine (see README); BENCH_NICE=0 to turn off.
LC_NICE=${BENCH_NICE:--10}

STUDENTS=${BENCH_STUDENTS:-19000}
HOLD=${BENCH_HOLD:-20s}
RESULTS=$LC_ROOT/bench/results
RUN=$LC_ROOT/run/bench-idle-memory-$(date +%Y%m%d-%H%M%S)
SCRIPT_CMD="bench/idle-memory.sh (BENCH_STUDENTS=$STUDENTS BENCH_HOLD=$HOLD)"

trap lc_stop_all EXIT
trap 'exit 130' INT TERM
lc_raise_nofile >/dev/null
lc_prepare "$RUN"
lc_start_redis "$RUN"
lc_start_socket "$RUN" socket-1
server=${LC_SOCKET_PIDS[0]}
base_kib=$(lc_rss_kib "$server")
lc_snapshot_cpu

connections() {
  { exec 5<>"/dev/tcp/127.0.0.1/${LC_SOCKET_PORTS[0]}"; } 2>/dev/null || return 1
  printf 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&5
  awk '$1 == "liveclass_connections" { print int($2); exit }' <&5
  exec 5>&- 5<&-
}
all_connected() { [[ $(connections) -ge $STUDENTS ]]; }

lc_log "idle-memory: $STUDENTS idle connections to one server, held for $HOLD"
((STUDENTS + 100 <= $(ulimit -Hn))) || lc_die "$STUDENTS sockets do not fit in one process (limit $(ulimit -Hn))"
out=$RUN/load.json
load_flags=(--url "ws://127.0.0.1:${LC_SOCKET_PORTS[0]}/ws" --students "$STUDENTS" --classes 1 --teachers 0
  --ramp 2000 --comment-rate 0 --duration "$HOLD" --source-ips 16 --run-id "idle$RANDOM" --no-progress
  --secret-file "$LC_SECRET_FILE" --json "$out")
LC_LOAD_CMD="$LC_LOAD_BIN ${load_flags[*]}"
nice -n "$LC_NICE" "$LC_LOAD_BIN" "${load_flags[@]}" >"$RUN/load.txt" 2>&1 &
load_pid=$!
lc_track "$load_pid"
held_kib=0
if lc_wait_until "$STUDENTS connections on the server" 120 all_connected; then
  # Let allocations settle, then read RSS a few times while everyone is connected.
  for _ in 1 2 3 4 5; do
    sleep 1
    kib=$(lc_rss_kib "$server")
    ((kib > held_kib)) && held_kib=$kib
  done
fi
status=0
wait "$load_pid" || status=$?
cat "$RUN/load.txt"
[[ -s $out ]] || lc_die "no load report (see $RUN/load.txt)"
connected=$(awk '/"connected"/ { gsub(/[^0-9]/, "", $2); print $2; exit }' "$out")
((held_kib > 0)) || held_kib=$(lc_hwm_kib "$server")
per_conn=$(awk -v h="$held_kib" -v b="$base_kib" -v n="${connected:-0}" 'BEGIN { if (n > 0) printf "%.2f", (h - b) / n; else print 0 }')
extra=$(printf '"connections": %s,\n"server_rss_before_kib": %s,\n"server_rss_connected_kib": %s,\n"server_kib_per_connection": %s,\n"load_exit_status": %s' \
  "${connected:-0}" "$base_kib" "$held_kib" "$per_conn" "$status")
lc_write_result "$RESULTS/idle-memory.json" idle-memory "$SCRIPT_CMD; load: $LC_LOAD_CMD" "$extra" "$out"
lc_log "idle-memory: ${connected:-0} connections, $per_conn KiB RSS per connection (server $base_kib -> $held_kib KiB)"
