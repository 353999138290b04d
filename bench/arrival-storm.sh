#!/usr/bin/env bash
# arrival-storm: the bell rings. Students arrive through Caddy at three socket servers, every
# one of them within BENCH_WITHIN (each at a uniformly random instant), and the class comments
# from the first arrival on. Records the connect-time percentiles, failed handshakes, the time
# until everyone has `hello`, and whether every comment reached everyone who was there:
#   bench/results/arrival-storm/<students>-students/within-<window>/<time>.json (+ .hlog)
#
# Environment: BENCH_STUDENTS (8000), BENCH_WITHIN (10s), BENCH_RATE (10 comments/s),
#              BENCH_DURATION (20s of comments, from the first arrival), BENCH_REPEAT (3)
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "$0")/lib/stack.sh"
LC_NICE=${BENCH_NICE:--10}

STUDENTS=${BENCH_STUDENTS:-8000}
WITHIN=${BENCH_WITHIN:-10s}
RATE=${BENCH_RATE:-10}
DURATION=${BENCH_DURATION:-20s}
LC_SCRIPT_CMD="bench/arrival-storm.sh (BENCH_STUDENTS=$STUDENTS BENCH_WITHIN=$WITHIN BENCH_RATE=$RATE BENCH_DURATION=$DURATION BENCH_REPEAT=${BENCH_REPEAT:-3})"

lc_bench_setup arrival-storm
for ((run = 1; run <= BENCH_REPEAT; run++)); do
  lc_log "arrival-storm: $STUDENTS students within $WITHIN, $RATE comments/s from the first (run $run of $BENCH_REPEAT)"
  lc_start_stack 3 yes
  lc_step calibrate
  lc_calibrate "$RUN/calibration-$run.json" >"$RUN/calibration-$run.txt"
  lc_step load
  LC_LOAD_MEMBERS=$((STUDENTS + 1))
  out=$RUN/load-$run.json
  lc_run_load "$out" --url "ws://127.0.0.1:$LC_CADDY_PORT/ws" --students "$STUDENTS" --classes 1 --teachers 1 \
    --arrive-within "$WITHIN" --arrival-shape random --send-from-start --comment-rate "$RATE" \
    --duration "$DURATION" --max-failed-attempts 0 --source-ips 254 --no-progress >"$RUN/load-$run.txt" 2>&1 || true
  cat "$RUN/load-$run.txt"
  [[ -s $out ]] || lc_die "no load report (see $RUN/load-$run.txt)"
  lc_process_flags
  lc_record arrival-storm "$STUDENTS-students/within-$WITHIN" "$out" "$RUN/calibration-$run.json" \
    --param students="$STUDENTS" --param within="$WITHIN" --param comment_rate="$RATE" --param duration="$DURATION"
  lc_stop_all
done
