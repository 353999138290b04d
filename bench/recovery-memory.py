#!/usr/bin/env python3
"""What `since` hammering costs a socket server holding 10,000 idle students (issue 10).

One release `liveclass-socket` with its default limits (production's), a real `redis-server`, a
class whose history holds 10,000 comments (posted through the server API), 10,000 idle students
held by `liveclass-load`, then 100 clients (distinct users and source addresses) that reconnect
as fast as the server lets them, each asking to resume from the first of the 10,000 comments.
Recorded: the server's RSS before, right after and 5 s after the hammering; handshakes by
outcome (101 with recovered:false, refusals by status); Redis's SLOWLOG (commands over its
default 10 ms) during the hammering; CPU seconds of the server and of Redis.

Usage: bench/recovery-memory.py [--runs 3] [--students 10000] [--hammer-seconds 30]
Writes bench/results/recovery-memory-<run>.json and prints a summary.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))
from lcbench import (ROOT, TARGET, cpu_seconds, free_port, metric, provenance,  # noqa: E402
                     redis_cmd, rss_kib, wait_for)
CLASS = "bench/recovery"
SECRET = b"recovery-memory-bench-secret-0123456789abcdef"
API_KEY = "recovery-memory-bench-api-key-0123456789abcdef"


def fill_history(admin_port, n):
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
    first = None
    for i in range(n):
        body = json.dumps({"class": CLASS, "text": f"history comment {i} " + "x" * 120})
        conn.request("POST", "/api/publish", body,
                     {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        answer = json.loads(conn.getresponse().read())
        first = first or answer["id"]
    return first


async def handshake(port, source, user, since, outcomes):
    """One reconnect: the upgrade with `since`, then `hello`; returns when it is read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        query = urllib.parse.urlencode({"token": token(user), "since": since})
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            outcomes[f"refused_{status}"] = outcomes.get(f"refused_{status}", 0) + 1
            return status
        b0, b1 = await reader.readexactly(2)
        length = b1 & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        hello = json.loads(await reader.readexactly(length))
        kind = "recovered" if hello.get("recovered") else "not_recovered"
        outcomes[kind] = outcomes.get(kind, 0) + 1
        return 101
    finally:
        writer.close()


async def hammer(port, since, clients, seconds):
    outcomes = {}
    deadline = time.monotonic() + seconds

    async def client(i):
        source = f"127.0.1.{i + 1}"
        backoff = 0.05
        while time.monotonic() < deadline:
            try:
                status = await asyncio.wait_for(handshake(port, source, f"h{i}", since, outcomes), 10)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                outcomes[type(e).__name__] = outcomes.get(type(e).__name__, 0) + 1
                status = 0
            # As a client should: at once after a success, backing off after a refusal.
            backoff = 0.05 if status == 101 else min(backoff * 2, 1.0)
            await asyncio.sleep(0 if status == 101 else backoff)

    await asyncio.gather(*(client(i) for i in range(clients)))
    return outcomes


def one_run(run, args, results):
    tmp = Path(tempfile.mkdtemp(prefix="lc-recovery-"))
    procs = []
    try:
        (tmp / "secret").write_bytes(SECRET)
        (tmp / "api-key").write_text(API_KEY)
        redis_port, port, admin = free_port(), free_port(), free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "",
                                  "--appendonly", "no", "--dir", str(tmp)],
                                 stdout=open(tmp / "redis.log", "w"), stderr=subprocess.STDOUT)
        procs.append(redis)
        wait_for("redis", lambda: redis_cmd(redis_port, "PING").strip() == "PONG", 10)
        server = subprocess.Popen(
            [str(TARGET / "release/liveclass-socket"), "--listen", f"127.0.0.1:{port}",
             "--admin-listen", f"127.0.0.1:{admin}", "--redis-url", f"redis://127.0.0.1:{redis_port}",
             "--token-secret-file", str(tmp / "secret"), "--api-key-file", str(tmp / "api-key"),
             "--pod-id", "bench-a"],
            stdout=open(tmp / "socket.log", "w"), stderr=subprocess.STDOUT)
        procs.append(server)
        wait_for("the socket server", lambda: metric(admin, "liveclass_redis_up") == 1, 20)

        started = time.monotonic()
        first = fill_history(admin, args.history)
        fill_s = time.monotonic() - started
        history_len = int(redis_cmd(redis_port, "XLEN", f"lc:{{{CLASS}}}:history").strip())

        load = subprocess.Popen(
            [str(TARGET / "release/liveclass-load"), "--url", f"ws://127.0.0.1:{port}/ws",
             "--students", str(args.students), "--class-id", CLASS, "--teachers", "0",
             "--comment-rate", "0", "--duration", f"{args.hammer_seconds + 60}s",
             "--secret-file", str(tmp / "secret"), "--source-ips", "64", "--ramp", "1000",
             "--no-progress", "--json", str(tmp / "load.json")],
            stdout=open(tmp / "load.log", "w"), stderr=subprocess.STDOUT)
        procs.append(load)
        wait_for(f"{args.students} idle students",
                 lambda: (metric(admin, "liveclass_connections") or 0) >= args.students, 120)
        time.sleep(5)
        rss_before = rss_kib(server.pid)
        cpu_before = (cpu_seconds(server.pid), cpu_seconds(redis.pid))
        redis_cmd(redis_port, "SLOWLOG", "RESET")

        started = time.monotonic()
        outcomes = asyncio.run(hammer(port, first, args.clients, args.hammer_seconds))
        hammer_s = time.monotonic() - started
        rss_right_after = rss_kib(server.pid)
        cpu_after = (cpu_seconds(server.pid), cpu_seconds(redis.pid))
        slowlog = json.loads(subprocess.run(
            ["redis-cli", "-p", str(redis_port), "--json", "SLOWLOG", "GET", "128"],
            capture_output=True, text=True).stdout or "[]")
        time.sleep(5)
        rss_after = rss_kib(server.pid)
        connections = metric(admin, "liveclass_connections")

        handshakes = sum(v for k, v in outcomes.items() if k in ("recovered", "not_recovered"))
        record = {
            "benchmark": "recovery-memory",
            "run": run,
            **provenance(),
            "setup": {
                "socket_flags": "defaults (max-recovery 1000, user-handshakes 20 per 10s, "
                                "address-handshake-rate 50/s burst 200)",
                "history_comments": history_len, "history_fill_seconds": round(fill_s, 1),
                "idle_students": args.students, "hammer_clients": args.clients,
                "hammer_seconds": round(hammer_s, 1), "since": first,
            },
            "handshakes": outcomes,
            "recoveries_per_second": round(handshakes / hammer_s, 1),
            "server_rss_kib": {"before": rss_before, "right_after": rss_right_after,
                               "after_5s": rss_after},
            "server_cpu_seconds_hammering": round(cpu_after[0] - cpu_before[0], 2),
            "redis_cpu_seconds_hammering": round(cpu_after[1] - cpu_before[1], 2),
            "redis_slowlog_over_10ms": {
                "entries": len(slowlog),
                "max_us": max((e[2] for e in slowlog), default=0),
                "commands": sorted({" ".join(map(str, e[3][:6])) for e in slowlog})[:10],
            },
            "idle_students_still_connected": connections,
            "machine_after": {"loadavg": os.getloadavg()},
        }
        out = ROOT / "bench/results" / f"recovery-memory-{run}.json"
        out.write_text(json.dumps(record, indent=2) + "\n")
        results.append(record)
        print(json.dumps({k: record[k] for k in ("run", "handshakes", "recoveries_per_second",
                                                  "server_rss_kib", "redis_slowlog_over_10ms",
                                                  "idle_students_still_connected")}))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--students", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--hammer-seconds", type=float, default=30)
    args = parser.parse_args()
    results = []
    for run in range(1, args.runs + 1):
        one_run(run, args, results)


if __name__ == "__main__":
    main()
