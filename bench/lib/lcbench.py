"""Shared by the Python benchmarks in bench/: free ports below the ephemeral range, waiting,
a process's RSS and CPU, Redis and socket-server metrics, and the run's provenance (commit,
dirty flag, versions, load)."""

import http.client
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def free_port():
    """A free port below the ephemeral range, so the 10,000 students' outgoing connections
    (and their TIME_WAIT after a run) never hold it."""
    for _ in range(1000):
        port = random.randint(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise SystemExit("no free port")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(user, role="student"):
    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": user, "class": CLASS, "role": role, "iat": now,
                             "exp": now + 3600}).encode())
    sig = hmac.new(SECRET, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(sig)}"


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(what, check, within):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, subprocess.CalledProcessError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def redis_cmd(port, *args):
    out = subprocess.run(["redis-cli", "-p", str(port), *map(str, args)], capture_output=True,
                         text=True, check=True)
    return out.stdout


def metric(admin_port, name):
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None



def provenance():
    """What a result file needs to be read later: the command, commit, versions and load."""
    run = lambda *cmd: subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    return {
        "command": " ".join(sys.argv),
        "commit": run("git", "-C", str(ROOT), "rev-parse", "HEAD"),
        "dirty": bool(run("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no")),
        "versions": {
            "redis": run("redis-server", "--version"),
            "rustc": run("rustc", "--version"),
            "python": sys.version.split()[0],
        },
        "machine": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()},
    }
