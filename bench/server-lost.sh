#!/usr/bin/env bash
# server-lost: a class through Caddy to three socket servers; BENCH_KILL_AT seconds into the
# comments, one server — a third of the class — is SIGKILLed. Its students reconnect through
# Caddy to the two others and recover what they missed with `since`. Records the time until every
# student is back and has caught up, comments lost and duplicated, and the CPU of the survivors
# and of Redis in the BENCH_STORM seconds after the kill (against the seconds before it):
#   bench/results/server-lost/<students>-students/<rate>-per-s/<time>.json (+ .hlog)
#
# Environment: BENCH_STUDENTS (8000), BENCH_RATE (10 comments/s), BENCH_DURATION (30s),
#              BENCH_KILL_AT (10), BENCH_STORM (10), BENCH_REPEAT (3)
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "$0")/lib/stack.sh"
LC_NICE=${BENCH_NICE:--10}

STUDENTS=${BENCH_STUDENTS:-8000}
RATE=${BENCH_RATE:-10}
DURATION=${BENCH_DURATION:-30s}
KILL_AT=${BENCH_KILL_AT:-10}
STORM=${BENCH_STORM:-10}
LC_RAMP=2000
LC_SCRIPT_CMD="bench/server-lost.sh (BENCH_STUDENTS=$STUDENTS BENCH_RATE=$RATE BENCH_DURATION=$DURATION BENCH_KILL_AT=$KILL_AT BENCH_STORM=$STORM BENCH_REPEAT=${BENCH_REPEAT:-3})"
(($(lc_seconds "$DURATION" | cut -d. -f1) >= KILL_AT + STORM)) || lc_die "BENCH_DURATION must cover BENCH_KILL_AT + BENCH_STORM"

# cpu_of PREFIX: CPU seconds now of the survivors (socket-2, socket-3) or of redis.
cpu_of() {
  local total=0 i
  if [[ $1 == redis ]]; then
    lc_cpu_s "$LC_REDIS_PID"
    return
  fi
  for ((i = 1; i < ${#LC_SOCKET_PIDS[@]}; i++)); do
    total=$(awk -v a="$total" -v b="$(lc_cpu_s "${LC_SOCKET_PIDS[i]}")" 'BEGIN { print a + b }')
  done
  echo "$total"
}

kill_one() {
  victim_connections=$(lc_metric "${LC_SOCKET_ADMIN_PORTS[0]}" liveclass_connections || echo 0)
  local s0 r0 s1 r1
  s0=$(cpu_of sockets)
  r0=$(cpu_of redis)
  survivors_before=$(awk -v a="$s0" -v b="$(awk -v x="${LC_CPU_BEFORE[${LC_SOCKET_PIDS[1]}]:-0}" -v y="${LC_CPU_BEFORE[${LC_SOCKET_PIDS[2]}]:-0}" 'BEGIN { print x + y }')" 'BEGIN { print a - b }')
  redis_before=$(awk -v a="$r0" -v b="${LC_CPU_BEFORE[$LC_REDIS_PID]:-0}" 'BEGIN { print a - b }')
  lc_log "server-lost: SIGKILL ${LC_SOCKET_NAMES[0]} (pid ${LC_SOCKET_PIDS[0]}, $victim_connections connections)"
  kill -KILL "${LC_SOCKET_PIDS[0]}"
  sleep "$STORM"
  s1=$(cpu_of sockets)
  r1=$(cpu_of redis)
  survivors_storm=$(awk -v a="$s1" -v b="$s0" 'BEGIN { print a - b }')
  redis_storm=$(awk -v a="$r1" -v b="$r0" 'BEGIN { print a - b }')
}

lc_bench_setup server-lost
for ((run = 1; run <= BENCH_REPEAT; run++)); do
  lc_log "server-lost: $STUDENTS students, $RATE comments/s, one of three servers killed at ${KILL_AT}s (run $run of $BENCH_REPEAT)"
  lc_start_stack 3 yes
  lc_step calibrate
  lc_calibrate "$RUN/calibration-$run.json" >"$RUN/calibration-$run.txt"
  lc_step load
  LC_LOAD_MEMBERS=$((STUDENTS + 1))
  out=$RUN/load-$run.json
  victim_connections=0 survivors_before=0 redis_before=0 survivors_storm=0 redis_storm=0
  LC_WINDOW_HOOK=kill_one LC_HOOK_AT_S=$KILL_AT lc_run_load "$out" --url "ws://127.0.0.1:$LC_CADDY_PORT/ws" \
    --students "$STUDENTS" --classes 1 --teachers 1 --ramp "$LC_RAMP" --comment-rate "$RATE" --duration "$DURATION" \
    --drain 20s --source-ips 254 --no-progress >"$RUN/load-$run.txt" 2>&1 || true
  cat "$RUN/load-$run.txt"
  [[ -s $out ]] || lc_die "no load report (see $RUN/load-$run.txt)"
  lc_process_flags
  lc_record server-lost "$STUDENTS-students/$RATE-per-s" "$out" "$RUN/calibration-$run.json" \
    --param students="$STUDENTS" --param comment_rate="$RATE" --param duration="$DURATION" --param kill_at_s="$KILL_AT" \
    --figure victim_connections="${victim_connections:-0}" --figure storm_window_s="$STORM" \
    --figure survivors_cpu_s_storm="$survivors_storm" --figure redis_cpu_s_storm="$redis_storm" \
    --figure survivors_cpu_s_before="$survivors_before" --figure redis_cpu_s_before="$redis_before" \
    --figure before_window_s="$KILL_AT"
  lc_stop_all
done
