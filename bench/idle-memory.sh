#!/usr/bin/env bash
# idle-memory: idle connections on ONE socket server (no Caddy, no comments); the server's
# resident memory per connection, BENCH_REPEAT runs on a fresh server:
#   bench/results/idle-memory/<students>-connections/<time>.json (+ .hlog)
#
# RSS per connection = (highest server RSS read while everyone is connected - RSS before the
# first connection) / connections the server reports. The load generator holds the sockets in
# one process (the open-file limit is 20,000 per process) from 127.0.0.1-16.
#
# Environment: BENCH_STUDENTS (19000), BENCH_HOLD (20s), BENCH_REPEAT (3)
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "$0")/lib/stack.sh"
LC_NICE=${BENCH_NICE:--10}

STUDENTS=${BENCH_STUDENTS:-19000}
HOLD=${BENCH_HOLD:-20s}
LC_RAMP=2000
LC_SCRIPT_CMD="bench/idle-memory.sh (BENCH_STUDENTS=$STUDENTS BENCH_HOLD=$HOLD BENCH_REPEAT=${BENCH_REPEAT:-3})"

# While everyone is connected (the window starts once they are): read RSS a few times.
measure_rss() {
  held_kib=0
  server_connections=$(lc_metric "${LC_SOCKET_ADMIN_PORTS[0]}" liveclass_connections || echo 0)
  local _
  for _ in 1 2 3 4 5; do
    kib=$(lc_rss_kib "${LC_SOCKET_PIDS[0]}")
    ((kib > held_kib)) && held_kib=$kib
    sleep 1
  done
}

lc_bench_setup idle-memory
((STUDENTS + 100 <= $(ulimit -Hn))) || lc_die "$STUDENTS sockets do not fit in one process (limit $(ulimit -Hn))"
for ((run = 1; run <= BENCH_REPEAT; run++)); do
  lc_log "idle-memory: $STUDENTS idle connections to one server, held for $HOLD (run $run of $BENCH_REPEAT)"
  lc_start_stack 1 no
  base_kib=$(lc_rss_kib "${LC_SOCKET_PIDS[0]}")
  lc_step load
  LC_LOAD_MEMBERS=$STUDENTS
  out=$RUN/load-$run.json
  held_kib=0
  server_connections=0
  LC_WINDOW_HOOK=measure_rss LC_HOOK_AT_S=1 lc_run_load "$out" --url "ws://127.0.0.1:${LC_SOCKET_PORTS[0]}/ws" \
    --students "$STUDENTS" --classes 1 --teachers 0 --ramp "$LC_RAMP" --comment-rate 0 --duration "$HOLD" \
    --source-ips 254 --max-failed-attempts 0 --no-progress >"$RUN/load-$run.txt" 2>&1 || true
  cat "$RUN/load-$run.txt"
  [[ -s $out ]] || lc_die "no load report (see $RUN/load-$run.txt)"
  per_conn=$(awk -v h="$held_kib" -v b="$base_kib" -v n="${server_connections:-0}" 'BEGIN { if (n > 0) printf "%.2f", (h - b) / n; else print 0 }')
  lc_process_flags
  lc_record idle-memory "$STUDENTS-connections" "$out" "" \
    --param students="$STUDENTS" --param hold="$HOLD" \
    --figure server_connections="${server_connections:-0}" --figure server_rss_before_kib="$base_kib" \
    --figure server_rss_connected_kib="$held_kib" --figure server_kib_per_connection="$per_conn"
  lc_log "idle-memory: ${server_connections:-0} connections, $per_conn KiB RSS per connection (server $base_kib -> $held_kib KiB)"
  lc_stop_all
done
