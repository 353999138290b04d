#!/usr/bin/env bash
# fanout-max: students connected directly to ONE socket server (no Caddy), one class. For each
# comment rate in BENCH_RATES (in order), BENCH_REPEAT runs on a fresh server, each with the
# calibration measured just before it; stops raising the rate after one with no clean run:
#   bench/results/fanout-max/<students>-students/<rate>-per-s/<time>.json (+ .hlog)
#
# Environment: BENCH_STUDENTS (4000), BENCH_RATES ("125 250"), BENCH_DURATION (20s),
#              BENCH_P99 (100ms), BENCH_REPEAT (3)
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "$0")/lib/stack.sh"
LC_NICE=${BENCH_NICE:--10}

STUDENTS=${BENCH_STUDENTS:-4000}
RATES=${BENCH_RATES:-125 250}
DURATION=${BENCH_DURATION:-20s}
P99=${BENCH_P99:-100ms}
LC_RAMP=2000
LC_SCRIPT_CMD="bench/fanout-max.sh (BENCH_STUDENTS=$STUDENTS BENCH_RATES=\"$RATES\" BENCH_DURATION=$DURATION BENCH_P99=$P99 BENCH_REPEAT=${BENCH_REPEAT:-3})"

lc_bench_setup fanout-max
for rate in $RATES; do
  clean_runs=0
  for ((run = 1; run <= BENCH_REPEAT; run++)); do
    lc_log "fanout-max: $STUDENTS students on one server, $rate comments/s for $DURATION (run $run of $BENCH_REPEAT)"
    lc_start_stack 1 no
    lc_step calibrate
    lc_calibrate "$RUN/calibration-$rate-$run.json" >"$RUN/calibration-$rate-$run.txt"
    lc_step load
    LC_LOAD_MEMBERS=$STUDENTS
    out=$RUN/load-$rate-$run.json
    status=0
    lc_run_load "$out" --url "ws://127.0.0.1:${LC_SOCKET_PORTS[0]}/ws" --students "$STUDENTS" --classes 1 --teachers 0 \
      --ramp "$LC_RAMP" --comment-rate "$rate" --duration "$DURATION" --max-p99 "$P99" --max-failed-attempts 0 \
      --source-ips 254 --no-progress >"$RUN/load-$rate-$run.txt" 2>&1 || status=$?
    cat "$RUN/load-$rate-$run.txt"
    [[ -s $out ]] || lc_die "no report for rate $rate (see $RUN/load-$rate-$run.txt)"
    ((status == 0)) && clean_runs=$((clean_runs + 1))
    lc_process_flags
    lc_record fanout-max "$STUDENTS-students/$rate-per-s" "$out" "$RUN/calibration-$rate-$run.json" \
      --param students="$STUDENTS" --param comment_rate="$rate" --param duration="$DURATION" --param p99_target="$P99"
    lc_stop_all
  done
  if ((clean_runs == 0)); then
    lc_log "rate $rate: no clean run; stopping"
    break
  fi
done
lc_log "fanout-max: done; bench/render-results updates bench/RESULTS.md"
