#!/usr/bin/env bash
# The operator at scale, in release builds, against a local control plane:
#   1. thousand_classes: 1,000 LiveClasses in an API-only control plane, reconciled by the
#      liveclass-operator binary as its own process: time until all are reconciled, operator
#      RSS, API writes until then, then reconciles and writes per class per minute at steady
#      state. BENCH_REPEAT runs (3), each in a fresh control plane, written to
#      bench/results/operator-1000-<n>.json; bench/results/operator-1000.json is their median
#      and spread. Knobs: BENCH_CLASSES (1000), BENCH_STEADY_SECONDS (120).
#   1b. api_floor: the same classes and the same writes sent by the bench itself (no operator):
#      the API server's floor under (1) on this machine. operator-1000-floor-<n>.json and the
#      summary operator-1000-floor.json.
#   2. fifty_live_classes (with BENCH_LIVE=1): 50 live classes on 3 KWOK nodes, one student more
#      per class every 5 s for BENCH_MINUTES (5), against the documented write bound (the test
#      fails above it). BENCH_REPEAT runs, bench/results/operator-live-50-<n>.json and the
#      summary operator-live-50.json.
# Every file carries the command, the commit (and whether the tree was dirty), the versions of
# rustc and Kubernetes, and the machine's load average before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBEBUILDER_ASSETS="$(scripts/k8s-binaries --print-dir)"
export KUBEBUILDER_ASSETS
REPEAT=${BENCH_REPEAT:-3}
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || { echo "operator-1000: BENCH_REPEAT wants a whole number above 0" >&2; exit 2; }
results=$PWD/bench/results
command="bench/operator-1000.sh (BENCH_REPEAT=$REPEAT BENCH_LIVE=${BENCH_LIVE:-0} BENCH_CLASSES=${BENCH_CLASSES:-1000} BENCH_STEADY_SECONDS=${BENCH_STEADY_SECONDS:-120} BENCH_MINUTES=${BENCH_MINUTES:-5})"

# Build once, outside the timed runs.
cargo test --release -p liveclass-operator --test bench_1000 --no-run

# shellcheck source=bench/lib/runs.sh
source bench/lib/runs.sh

for n in $(seq 1 "$REPEAT"); do
  loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
  BENCH_OUT="$results/operator-1000-$n.json" \
    cargo test --release -p liveclass-operator --test bench_1000 -- --ignored --nocapture --test-threads 1 thousand_classes
  lc_add_provenance "$results/operator-1000-$n.json" "$n" "$command" "$loadavg_before"
done
lc_summarize "$results" "$REPEAT" "$command" operator-1000 all_reconciled_seconds operator_rss_mib_peak operator_rss_mib_after_steady_state \
  api_writes_per_class_until_all steady_api_writes_per_class_per_minute steady_reconciles_per_class_per_minute

for n in $(seq 1 "$REPEAT"); do
  loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
  BENCH_OUT="$results/operator-1000-floor-$n.json" \
    cargo test --release -p liveclass-operator --test bench_1000 -- --ignored --nocapture --test-threads 1 api_floor
  lc_add_provenance "$results/operator-1000-floor-$n.json" "$n" "$command" "$loadavg_before"
done
lc_summarize "$results" "$REPEAT" "$command" operator-1000-floor all_written_seconds api_writes_per_class

if [[ ${BENCH_LIVE:-0} == 1 ]]; then
  for n in $(seq 1 "$REPEAT"); do
    loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
    BENCH_OUT="$results/operator-live-50-$n.json" \
      cargo test --release -p liveclass-operator --test bench_1000 -- --ignored --nocapture --test-threads 1 fifty_live_classes
    lc_add_provenance "$results/operator-live-50-$n.json" "$n" "$command" "$loadavg_before"
  done
  lc_summarize "$results" "$REPEAT" "$command" operator-live-50 api_writes_per_class_per_minute reconciles_per_class_per_minute
fi
