#!/usr/bin/env python3
"""What the pub/sub liveness check costs (issue 10): a socket server's CPU per delivery at
about 40,000 deliveries a second, with `--pubsub-ping 1s` (the default) against a PING so rare
it never fires in the run (`--pubsub-ping 1h`, i.e. off).

One release `liveclass-socket` with default limits but the ping, a real `redis-server`, and
`liveclass-load` (2,000 students of one class; the class comments 20 times a second, spread over
its students, so each comment is delivered 2,000 times). The server's CPU seconds (utime+stime
from /proc) over the load run, divided by the deliveries the load generator received. Runs
alternate on, off, on, off... so drifting machine load hits both alike.

Usage: bench/pubsub-ping-cost.py [--runs 3] [--students 2000] [--comment-rate 20] [--seconds 30]
Writes bench/results/pubsub-ping-cost.json and prints a summary.
"""

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))
from lcbench import (ROOT, TARGET, cpu_seconds, free_port, metric, provenance,  # noqa: E402
                     redis_cmd, wait_for)

SECRET = b"pubsub-ping-cost-bench-secret-0123456789abcdef"


def one_run(ping, args):
    tmp = Path(tempfile.mkdtemp(prefix="lc-ping-"))
    procs = []
    try:
        (tmp / "secret").write_bytes(SECRET)
        redis_port, port, admin = free_port(), free_port(), free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "",
                                  "--appendonly", "no", "--dir", str(tmp)],
                                 stdout=open(tmp / "redis.log", "w"), stderr=subprocess.STDOUT)
        procs.append(redis)
        wait_for("redis", lambda: redis_cmd(redis_port, "PING").strip() == "PONG", 10)
        server = subprocess.Popen(
            [str(TARGET / "release/liveclass-socket"), "--listen", f"127.0.0.1:{port}",
             "--admin-listen", f"127.0.0.1:{admin}", "--redis-url", f"redis://127.0.0.1:{redis_port}",
             "--token-secret-file", str(tmp / "secret"), "--pod-id", "bench-a",
             "--pubsub-ping", ping],
            stdout=open(tmp / "socket.log", "w"), stderr=subprocess.STDOUT)
        procs.append(server)
        wait_for("the socket server", lambda: metric(admin, "liveclass_redis_up") == 1, 20)
        load = subprocess.Popen(
            [str(TARGET / "release/liveclass-load"), "--url", f"ws://127.0.0.1:{port}/ws",
             "--students", str(args.students), "--class-id", "bench/ping", "--teachers", "0",
             "--comment-rate", str(args.comment_rate), "--duration", f"{args.seconds}s",
             "--secret-file", str(tmp / "secret"), "--source-ips", "16", "--ramp", "1000",
             "--no-progress", "--json", str(tmp / "load.json")],
            stdout=open(tmp / "load.log", "w"), stderr=subprocess.STDOUT)
        procs.append(load)
        # From when everyone is connected: the handshakes are not a delivery's cost.
        wait_for("every student connected",
                 lambda: (metric(admin, "liveclass_connections") or 0) >= args.students, 120)
        cpu_before = cpu_seconds(server.pid)
        started = time.monotonic()
        load.wait(args.seconds + 120)
        wall = time.monotonic() - started
        cpu = cpu_seconds(server.pid) - cpu_before
        report = json.loads((tmp / "load.json").read_text())
        deliveries = report["deliveries"]
        pings = metric(admin, 'liveclass_redis_errors_total{op="pubsub_ping"}') or 0
        return {
            "pubsub_ping": ping,
            "load_exit": load.returncode,
            "cpu_window": "from every student connected to the load generator's exit",
            "server_cpu_seconds": round(cpu, 3),
            "deliveries_received": deliveries["received"],
            "deliveries_lost": deliveries["lost"],
            "deliveries_per_second_in_window": deliveries["in_window"]["per_second"],
            "cpu_us_per_delivery": round(cpu / max(deliveries["received"], 1) * 1e6, 4),
            "pubsub_ping_failures": pings,
            "wall_seconds": round(wall, 1),
            "loadavg_after": __import__("os").getloadavg(),
        }
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def summary(runs):
    values = [r["cpu_us_per_delivery"] for r in runs]
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--students", type=int, default=2000)
    parser.add_argument("--comment-rate", type=float, default=20)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    record = {"benchmark": "pubsub-ping-cost", **provenance(),
              "setup": {"students": args.students, "comment_rate": args.comment_rate,
                        "seconds": args.seconds,
                        "socket_flags": "defaults but --pubsub-ping (1s = on, 1h = off)"},
              "on": [], "off": []}
    for _ in range(args.runs):
        for label, ping in (("on", "1s"), ("off", "1h")):
            result = one_run(ping, args)
            record[label].append(result)
            print(json.dumps({label: result}))
    record["cpu_us_per_delivery"] = {"on": summary(record["on"]), "off": summary(record["off"])}
    out = ROOT / "bench/results/pubsub-ping-cost.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["cpu_us_per_delivery"]))


if __name__ == "__main__":
    main()
