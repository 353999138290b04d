#!/usr/bin/env bash
# The operator at scale, in release builds, against a local control plane:
#   1. thousand_classes: 1,000 LiveClasses in an API-only control plane, reconciled by the
#      liveclass-operator binary as its own process: time until all are reconciled, operator
#      RSS, API requests per reconcile, then reconciles and writes per class per minute at steady
#      state. Writes bench/results/operator-1000.json. Knobs: BENCH_CLASSES (1000),
#      BENCH_STEADY_SECONDS, BENCH_OUT.
#   2. fifty_live_classes (with BENCH_LIVE=1): 50 live classes on 3 KWOK nodes, one student more
#      per class every 5 s for 5 minutes, against the documented write bound. Writes
#      bench/results/operator-live-50.json.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBEBUILDER_ASSETS="$(scripts/k8s-binaries --print-dir)"
export KUBEBUILDER_ASSETS
export BENCH_OUT="${BENCH_OUT:-$PWD/bench/results/operator-1000.json}"
cargo test --release -p liveclass-operator --test bench_1000 -- --ignored --nocapture --test-threads 1 thousand_classes
if [[ ${BENCH_LIVE:-0} == 1 ]]; then
  unset BENCH_OUT
  cargo test --release -p liveclass-operator --test bench_1000 -- --ignored --nocapture --test-threads 1 fifty_live_classes
fi
