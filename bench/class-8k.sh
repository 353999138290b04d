#!/usr/bin/env bash
# class-8k: students in one class through Caddy to three socket servers and one Redis, every
# comment broadcast to the whole class. For each comment rate in BENCH_RATES, BENCH_REPEAT runs,
# each on a fresh stack, each with the calibration (a raw TCP fan-out) measured just before it:
#   bench/results/class-8k/<students>-students/<rate>-per-s/<time>.json (+ .hlog)
#
# Environment: BENCH_STUDENTS (8000), BENCH_RATES ("10 20"), BENCH_DURATION (30s),
#              BENCH_RAMP (2000 connections/s), BENCH_P99 (250ms), BENCH_REPEAT (3)
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "$0")/lib/stack.sh"
# Priority over other work on a shared machine (see README); BENCH_NICE=0 to turn off.
LC_NICE=${BENCH_NICE:--10}

STUDENTS=${BENCH_STUDENTS:-8000}
RATES=${BENCH_RATES:-10 20}
DURATION=${BENCH_DURATION:-30s}
LC_RAMP=${BENCH_RAMP:-2000}
P99=${BENCH_P99:-250ms}
LC_SCRIPT_CMD="bench/class-8k.sh (BENCH_STUDENTS=$STUDENTS BENCH_RATES=\"$RATES\" BENCH_DURATION=$DURATION BENCH_RAMP=$LC_RAMP BENCH_P99=$P99 BENCH_REPEAT=${BENCH_REPEAT:-3})"

lc_bench_setup class-8k
for rate in $RATES; do
  for ((run = 1; run <= BENCH_REPEAT; run++)); do
    lc_log "class-8k: $STUDENTS students, $rate comments/s for $DURATION (run $run of $BENCH_REPEAT)"
    lc_start_stack 3 yes
    caddy_base_kib=$(lc_rss_kib "$LC_CADDY_PID")
    sockets_base_kib=0
    for pid in "${LC_SOCKET_PIDS[@]}"; do sockets_base_kib=$((sockets_base_kib + $(lc_rss_kib "$pid"))); done
    lc_step calibrate
    lc_calibrate "$RUN/calibration-$rate-$run.json" >"$RUN/calibration-$rate-$run.txt"
    lc_step load
    LC_LOAD_MEMBERS=$((STUDENTS + 1))
    out=$RUN/load-$rate-$run.json
    lc_run_load "$out" --url "ws://127.0.0.1:$LC_CADDY_PORT/ws" --students "$STUDENTS" --classes 1 --teachers 1 \
      --ramp "$LC_RAMP" --comment-rate "$rate" --duration "$DURATION" --max-p99 "$P99" --max-failed-attempts 0 \
      --source-ips 254 --no-progress >"$RUN/load-$rate-$run.txt" 2>&1 || true
    cat "$RUN/load-$rate-$run.txt"
    [[ -s $out ]] || lc_die "no report for rate $rate (see $RUN/load-$rate-$run.txt)"
    sockets_hwm_kib=0
    for pid in "${LC_SOCKET_PIDS[@]}"; do sockets_hwm_kib=$((sockets_hwm_kib + $(lc_hwm_kib "$pid"))); done
    lc_process_flags
    lc_record class-8k "$STUDENTS-students/$rate-per-s" "$out" "$RUN/calibration-$rate-$run.json" \
      --param students="$STUDENTS" --param comment_rate="$rate" --param duration="$DURATION" --param p99_target="$P99" \
      --param caddy_stream_buffer_size="$(lc_caddy_setting stream_buffer_size)" \
      --param caddy_stream_close_delay="$(lc_caddy_setting stream_close_delay)" \
      --figure caddy_kib_per_connection="$(awk -v h="$(lc_hwm_kib "$LC_CADDY_PID")" -v b="$caddy_base_kib" -v n="$STUDENTS" 'BEGIN { printf "%.1f", (h - b) / n }')" \
      --figure socket_servers_kib_per_connection="$(awk -v h="$sockets_hwm_kib" -v b="$sockets_base_kib" -v n="$STUDENTS" 'BEGIN { printf "%.1f", (h - b) / n }')"
    lc_stop_all
  done
done
lc_log "class-8k: done; bench/render-results updates bench/RESULTS.md"
