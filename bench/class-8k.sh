#!/usr/bin/env bash
# class-8k: 8,000 students in one class through Caddy to three socket servers and one Redis,
# every comment broadcast to the whole class. Runs the comment rates in BENCH_RATES in order
# (10 and 20 always; above that it stops at the first rate that is not clean) and records:
#   bench/results/class-8k-<rate>.json   the full figures of each rate
#   bench/results/class-8k.json          the highest clean rate (0 lost, p99 <= 250 ms)
#
# Environment: BENCH_STUDENTS (8000), BENCH_RATES ("10 20 30 40 50 60 80"), BENCH_DURATION (30s),
#              BENCH_RAMP (2000 connections/s), BENCH_P99 (250ms)
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "$0")/lib/stack.sh"
# Priority over other work on a shared machine (see README); BENCH_NICE=0 to turn off.
LC_NICE=${BENCH_NICE:--10}

STUDENTS=${BENCH_STUDENTS:-8000}
RATES=${BENCH_RATES:-10 20 30 40 50 60 80}
DURATION=${BENCH_DURATION:-30s}
RAMP=${BENCH_RAMP:-2000}
P99=${BENCH_P99:-250ms}
RESULTS=$LC_ROOT/bench/results
RUN=$LC_ROOT/run/bench-class-8k-$(date +%Y%m%d-%H%M%S)
SCRIPT_CMD="bench/class-8k.sh (BENCH_STUDENTS=$STUDENTS BENCH_RATES=\"$RATES\" BENCH_DURATION=$DURATION BENCH_RAMP=$RAMP BENCH_P99=$P99)"

trap lc_stop_all EXIT
trap 'exit 130' INT TERM
lc_raise_nofile >/dev/null
lc_prepare "$RUN"
lc_start_redis "$RUN"
for i in 1 2 3; do lc_start_socket "$RUN" "socket-$i"; done
lc_start_caddy "$RUN"
caddy_base_kib=$(lc_rss_kib "$LC_CADDY_PID")
declare -A socket_base
for pid in "${LC_SOCKET_PIDS[@]}"; do socket_base[$pid]=$(lc_rss_kib "$pid"); done

highest=0
runs=()
for rate in $RATES; do
  lc_log "class-8k: $STUDENTS students, $rate comments/s for $DURATION"
  lc_snapshot_cpu
  LC_LOAD_MEMBERS=$((STUDENTS + 1))
  out=$RUN/rate-$rate.json
  status=0
  lc_run_load "$out" --url "ws://127.0.0.1:$LC_CADDY_PORT/ws" --students "$STUDENTS" --classes 1 --teachers 1 \
    --ramp "$RAMP" --comment-rate "$rate" --duration "$DURATION" --max-p99 "$P99" --source-ips 8 \
    --run-id "c8k$rate$RANDOM" --no-progress >"$RUN/rate-$rate.txt" 2>&1 || status=$?
  cat "$RUN/rate-$rate.txt"
  [[ -s $out ]] || lc_die "no report for rate $rate (see $RUN/rate-$rate.txt)"
  caddy_hwm=$(lc_hwm_kib "$LC_CADDY_PID")
  sockets_growth=0
  for pid in "${LC_SOCKET_PIDS[@]}"; do sockets_growth=$((sockets_growth + $(lc_hwm_kib "$pid") - ${socket_base[$pid]})); done
  clean=false
  ((status == 0)) && clean=true
  extra=$(printf '"comment_rate": %s,\n"clean": %s,\n"caddy_kib_per_connection": %s,\n"socket_servers_kib_per_connection": %s' \
    "$rate" "$clean" \
    "$(awk -v h="$caddy_hwm" -v b="$caddy_base_kib" -v n="$STUDENTS" 'BEGIN { printf "%.1f", (h - b) / n }')" \
    "$(awk -v g="$sockets_growth" -v n="$STUDENTS" 'BEGIN { printf "%.1f", g / n }')")
  lc_write_result "$RESULTS/class-8k-$rate.json" class-8k "$SCRIPT_CMD; load: $LC_LOAD_CMD" "$extra" "$out"
  runs+=("\"class-8k-$rate.json\"")
  if [[ $clean == true ]]; then
    ((rate > highest)) && highest=$rate
  elif ((rate > 20)); then
    lc_log "rate $rate is not clean: stopping the search"
    break
  fi
done

IFS=,
cat >"$RESULTS/class-8k.json" <<JSON
{
"scenario": "class-8k",
"recorded_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
"git": "$(lc_git_rev)",
"machine": $(lc_machine_json),
"command": "$(lc_json_escape "$SCRIPT_CMD")",
"students": $STUDENTS,
"p99_target_ms": "$P99",
"highest_clean_comment_rate": $highest,
"highest_clean_deliveries_per_s": $((highest * (STUDENTS + 1))),
"runs": [${runs[*]}]
}
JSON
unset IFS
lc_log "class-8k: highest clean rate $highest comments/s ($((highest * (STUDENTS + 1))) deliveries/s); results in bench/results/"
