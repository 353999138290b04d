# shellcheck shell=bash
# Repeated runs of a benchmark written by a Rust test: the provenance every result file carries
# (command, commit and whether the tree was dirty, versions, the machine's load), and the
# summary of BENCH_REPEAT runs (median and spread of each figure). Sourced by
# bench/operator-1000.sh, bench/school-day and bench/redis-failover; not run on its own.

# lc_add_provenance FILE RUN COMMAND LOADAVG_BEFORE: merges into FILE the facts a figure needs
# to be read later; with KUBEBUILDER_ASSETS set, the versions of the Kubernetes binaries used.
lc_add_provenance() {
  python3 - "$1" "$2" "$3" "${KUBEBUILDER_ASSETS:-}" "$4" <<'PY'
import json, os, subprocess, sys
path, run, command, assets, before = sys.argv[1:]
sh = lambda *cmd: subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
data = json.load(open(path))
data.update({
    "run": int(run),
    "command": command,
    "build": "release (cargo test --release)",
    "commit": sh("git", "rev-parse", "HEAD"),
    # The result files a run writes are not what was measured: they do not make the tree dirty.
    "dirty": bool(sh("git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")),
    "rustc": sh("rustc", "--version"),
    "redis": sh("redis-server", "--version").split(" sha=")[0],
    "cpus": os.cpu_count(),
    "loadavg_before": before,
    "loadavg_after": open("/proc/loadavg").read().strip(),
})
if assets:
    data["kube_apiserver"] = sh(os.path.join(assets, "kube-apiserver"), "--version")
    kwok = os.path.join(assets, "kwok")
    data["kwok"] = sh(kwok, "--version") if os.path.exists(kwok) else None
open(path, "w").write(json.dumps(data, indent=2, sort_keys=True) + "\n")
PY
}

# lc_summarize RESULTS REPEAT COMMAND SCENARIO FIGURE...: RESULTS/SCENARIO.json with the median
# and [min, max] of each FIGURE over the runs' files RESULTS/SCENARIO-<n>.json (a figure a run
# did not have, such as a median of nothing, is left out of that run's values).
lc_summarize() {
  python3 - "$@" <<'PY'
import json, statistics, sys
results, repeat, command, scenario, *figures = sys.argv[1:]
runs = [json.load(open(f"{results}/{scenario}-{n}.json")) for n in range(1, int(repeat) + 1)]
out = {"scenario": scenario, "command": command, "runs": len(runs),
       "run_files": ", ".join(f"{scenario}-{n}.json" for n in range(1, len(runs) + 1)),
       "commit": runs[-1]["commit"], "dirty": any(r["dirty"] for r in runs)}
for f in figures:
    values = [r[f] for r in runs if r.get(f) is not None]
    if not values:
        continue
    out[f"{f}_median"] = statistics.median(values)
    out[f"{f}_min"] = min(values)
    out[f"{f}_max"] = max(values)
open(f"{results}/{scenario}.json", "w").write(json.dumps(out, indent=2, sort_keys=True) + "\n")
print(json.dumps(out, indent=2, sort_keys=True))
PY
}

# lc_repeat_test REPEAT COMMAND SCENARIO PACKAGE TEST FILTER: builds the release test binary, then
# runs the ignored test FILTER of PACKAGE's TEST REPEAT times, each writing BENCH_OUT =
# bench/results/SCENARIO-<n>.json, with its provenance added (the caller's environment, e.g.
# BENCH_STUDENTS, reaches the test).
lc_repeat_test() {
  local repeat=$1 command=$2 scenario=$3 package=$4 test=$5 filter=$6 n loadavg_before
  local results=$PWD/bench/results
  cargo test --release -p "$package" --test "$test" --no-run
  for n in $(seq 1 "$repeat"); do
    loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
    BENCH_OUT="$results/$scenario-$n.json" \
      cargo test --release -p "$package" --test "$test" -- --ignored --nocapture --test-threads 1 --exact "$filter"
    lc_add_provenance "$results/$scenario-$n.json" "$n" "$command" "$loadavg_before"
  done
}
