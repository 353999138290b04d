#!/usr/bin/env bash
# fanout-max: 4,000 students connected directly to ONE socket server (no Caddy), one class;
# raises the comment rate until a run is not clean (something lost, or p99 over 100 ms) and
# records the highest clean broadcast delivery rate (deliveries = comments x members):
#   bench/results/fanout-max-<rate>.json   the full figures of each rate
#   bench/results/fanout-max.json          the highest clean delivery rate
#
# Environment: BENCH_STUDENTS (4000), BENCH_RATES ("25 50 75 100 125 150 200 250"),
#              BENCH_DURATION (20s), BENCH_P99 (100ms)
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "$0")/lib/stack.sh"
# Priority over other work on a shared machine (see README); BENCH_NICE=0 to turn off.
LC_NICE=${BENCH_NICE:--10}

STUDENTS=${BENCH_STUDENTS:-4000}
RATES=${BENCH_RATES:-25 50 75 100 125 150 200 250}
DURATION=${BENCH_DURATION:-20s}
P99=${BENCH_P99:-100ms}
RESULTS=$LC_ROOT/bench/results
RUN=$LC_ROOT/run/bench-fanout-max-$(date +%Y%m%d-%H%M%S)
SCRIPT_CMD="bench/fanout-max.sh (BENCH_STUDENTS=$STUDENTS BENCH_RATES=\"$RATES\" BENCH_DURATION=$DURATION BENCH_P99=$P99)"

trap lc_stop_all EXIT
trap 'exit 130' INT TERM
lc_raise_nofile >/dev/null
lc_prepare "$RUN"
lc_start_redis "$RUN"
lc_start_socket "$RUN" socket-1

best_rate=0
best_deliveries=0
runs=()
for rate in $RATES; do
  lc_log "fanout-max: $STUDENTS students on one server, $rate comments/s for $DURATION"
  lc_snapshot_cpu
  LC_LOAD_MEMBERS=$STUDENTS
  out=$RUN/rate-$rate.json
  status=0
  lc_run_load "$out" --url "ws://127.0.0.1:${LC_SOCKET_PORTS[0]}/ws" --students "$STUDENTS" --classes 1 --teachers 0 \
    --ramp 2000 --comment-rate "$rate" --duration "$DURATION" --max-p99 "$P99" --source-ips 4 \
    --run-id "fan$rate$RANDOM" --no-progress >"$RUN/rate-$rate.txt" 2>&1 || status=$?
  cat "$RUN/rate-$rate.txt"
  [[ -s $out ]] || lc_die "no report for rate $rate (see $RUN/rate-$rate.txt)"
  clean=false
  ((status == 0)) && clean=true
  deliveries=$(awk '/"per_second"/ { gsub(/[^0-9.]/, "", $2); print int($2); exit }' "$out")
  lc_write_result "$RESULTS/fanout-max-$rate.json" fanout-max "$SCRIPT_CMD; load: $LC_LOAD_CMD" \
    "$(printf '"comment_rate": %s,\n"clean": %s,\n"deliveries_per_s": %s' "$rate" "$clean" "${deliveries:-0}")" "$out"
  runs+=("\"fanout-max-$rate.json\"")
  if [[ $clean != true ]]; then
    lc_log "rate $rate is not clean: stopping"
    break
  fi
  best_rate=$rate
  best_deliveries=${deliveries:-0}
done

IFS=,
cat >"$RESULTS/fanout-max.json" <<JSON
{
"scenario": "fanout-max",
"recorded_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
"git": "$(lc_git_rev)",
"machine": $(lc_machine_json),
"command": "$(lc_json_escape "$SCRIPT_CMD")",
"students": $STUDENTS,
"p99_target_ms": "$P99",
"highest_clean_comment_rate": $best_rate,
"highest_clean_deliveries_per_s": $best_deliveries,
"runs": [${runs[*]}]
}
JSON
unset IFS
lc_log "fanout-max: highest clean rate $best_rate comments/s = $best_deliveries deliveries/s"
