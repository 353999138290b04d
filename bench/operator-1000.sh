#!/usr/bin/env bash
# 1,000 LiveClasses in a local API-only control plane, reconciled by the liveclass-operator
# binary as its own process: time until all are reconciled, operator RSS, API requests per
# reconcile. Writes bench/results/operator-1000.json. Knob: BENCH_CLASSES (default 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test -p liveclass-operator --test bench_1000 -- --ignored --nocapture
