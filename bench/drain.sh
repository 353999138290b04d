#!/usr/bin/env bash
# drain: a class through Caddy to three socket servers; BENCH_TERM_AT seconds into the comments
# one server is sent SIGTERM. It turns not-ready, tells its students to reconnect at moments
# spread over its drain window (the server's production default unless BENCH_DRAIN_WINDOW is
# set), and exits. Records when its students reconnected (a histogram of reconnect times after
# the first `reconnect` frame) and whether anything was lost:
#   bench/results/drain/<students>-students/<rate>-per-s/<time>.json (+ .hlog)
#
# Environment: BENCH_STUDENTS (8100: 2,700 per server), BENCH_RATE (10 comments/s),
#              BENCH_DRAIN_WINDOW (20s), BENCH_TERM_AT (5), BENCH_DURATION (40s), BENCH_REPEAT (3)
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "$0")/lib/stack.sh"
LC_NICE=${BENCH_NICE:--10}

STUDENTS=${BENCH_STUDENTS:-8100}
RATE=${BENCH_RATE:-10}
LC_DRAIN_WINDOW=${BENCH_DRAIN_WINDOW:-20s}
TERM_AT=${BENCH_TERM_AT:-5}
DURATION=${BENCH_DURATION:-40s}
LC_RAMP=2000
LC_SCRIPT_CMD="bench/drain.sh (BENCH_STUDENTS=$STUDENTS BENCH_RATE=$RATE BENCH_DRAIN_WINDOW=$LC_DRAIN_WINDOW BENCH_TERM_AT=$TERM_AT BENCH_DURATION=$DURATION BENCH_REPEAT=${BENCH_REPEAT:-3})"
window_s=$(lc_seconds "$LC_DRAIN_WINDOW")
awk -v d="$(lc_seconds "$DURATION")" -v t="$TERM_AT" -v w="$window_s" 'BEGIN { exit !(d >= t + w + 5) }' ||
  lc_die "BENCH_DURATION must cover BENCH_TERM_AT + the drain window + 5 s"

term_one() {
  victim_connections=$(lc_metric "${LC_SOCKET_ADMIN_PORTS[0]}" liveclass_connections || echo 0)
  lc_log "drain: SIGTERM ${LC_SOCKET_NAMES[0]} (pid ${LC_SOCKET_PIDS[0]}, $victim_connections connections, drain window $LC_DRAIN_WINDOW)"
  kill -TERM "${LC_SOCKET_PIDS[0]}"
}

lc_bench_setup drain
for ((run = 1; run <= BENCH_REPEAT; run++)); do
  lc_log "drain: $STUDENTS students, $RATE comments/s, one of three servers drained at ${TERM_AT}s (run $run of $BENCH_REPEAT)"
  lc_start_stack 3 yes
  lc_step calibrate
  lc_calibrate "$RUN/calibration-$run.json" >"$RUN/calibration-$run.txt"
  lc_step load
  LC_LOAD_MEMBERS=$((STUDENTS + 1))
  out=$RUN/load-$run.json
  victim_connections=0
  LC_WINDOW_HOOK=term_one LC_HOOK_AT_S=$TERM_AT lc_run_load "$out" --url "ws://127.0.0.1:$LC_CADDY_PORT/ws" \
    --students "$STUDENTS" --classes 1 --teachers 1 --ramp "$LC_RAMP" --comment-rate "$RATE" --duration "$DURATION" \
    --drain 20s --source-ips 254 --no-progress >"$RUN/load-$run.txt" 2>&1 || true
  cat "$RUN/load-$run.txt"
  [[ -s $out ]] || lc_die "no load report (see $RUN/load-$run.txt)"
  lc_process_flags
  lc_record drain "$STUDENTS-students/$RATE-per-s" "$out" "$RUN/calibration-$run.json" \
    --param students="$STUDENTS" --param comment_rate="$RATE" --param duration="$DURATION" --param term_at_s="$TERM_AT" \
    --param drain_window="$LC_DRAIN_WINDOW" \
    --figure victim_connections="${victim_connections:-0}" --figure drain_window_s="$window_s"
  lc_stop_all
done
