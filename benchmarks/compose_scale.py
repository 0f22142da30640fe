"""Throughput and latency through the nginx proxy with 1 and 3 api replicas (docker compose).

What it does:

1. builds the image and starts docker-compose.yml under its own project name
   (``rbmrec-bench-scale``) with one api replica, then seeds MovieLens 100K and
   trains the model (the ``seed`` service);
2. for each replica count (``--replicas``, default 1 and 3): scales the api with
   ``up -d --scale api=N --wait``, waits until the proxy spreads requests over all N,
   warms up, and runs ``scripts/proxy_load.py load`` (``GET
   /users/{id}/recommendations?n=10`` for random users, ``--concurrency`` keep-alive
   connections, ``--requests`` per run, ``--repeat`` runs) along each path:

   * ``host -> proxy``: from this machine to the published port (what clients use;
     it includes Docker's port forwarding);
   * ``net -> proxy``: from a container on the proxy's network to ``proxy:80``;
   * ``net -> api`` (1 replica only): from the same container straight to the
     replica, ``api:8000``: the same requests without nginx, so the difference to
     ``net -> proxy`` is what the proxy costs;

3. prints one row per run, with the CPU time per request of the nginx container and
   of the api replicas (from the containers' cgroups, when this host exposes them:
   what each costs, whatever else runs on the machine), and removes everything it
   created.

The load generator, nginx, the replicas and PostgreSQL share this machine's cores.
Without a Docker engine it prints why and exits 0 (``make bench`` runs every
benchmark). Example::

    .venv/bin/python benchmarks/compose_scale.py --requests 4000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOAD = ROOT / "scripts" / "proxy_load.py"
CLIENT_IMAGE = "python:3.11-slim"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", default="1,3", help="Replica counts, comma separated.")
    parser.add_argument("--requests", type=int, default=4000, help="Per run.")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2, help="Runs per path.")
    parser.add_argument("--warmup", type=int, default=600)
    parser.add_argument(
        "--movielens-dir",
        default=os.environ.get("RBMREC_MOVIELENS_DIR")
        or os.environ.get("RBMREC_TEST_MOVIELENS_DIR")
        or str(ROOT.parent / "shared" / "datasets" / "ml-100k"),
        help="Unpacked ml-100k directory (without u.data there, the seed downloads it).",
    )
    parser.add_argument("--project", default="rbmrec-bench-scale")
    parser.add_argument("--keep", action="store_true", help="Leave the stack running.")
    return parser.parse_args()


def docker_missing() -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return "no Docker engine answers (docker info failed)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Stack:
    """The compose project of this benchmark."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.project = args.project
        self.port = free_port()
        (work / "app.env").write_text("")  # the defaults: access logs on, as deployed
        (work / "compose.env").write_text("")
        movielens = Path(args.movielens_dir)
        if not (movielens / "u.data").is_file():
            movielens = work / "movielens"
            movielens.mkdir()
        self.env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": self.project,
            "APP_IMAGE": f"rbmrec:{self.project}",
            "APP_ENV_FILE": str(work / "app.env"),
            "API_BIND": "127.0.0.1",
            "API_PORT": str(self.port),
            "MOVIELENS_HOST_DIR": str(movielens.resolve()),
        }
        self.env_file = str(work / "compose.env")

    def compose(self, *args: str, capture: bool = False) -> str:
        result = subprocess.run(
            ["docker", "compose", "--env-file", self.env_file, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"docker compose {' '.join(args)} failed:\n{result.stderr[-3000:]}")
        return result.stdout if capture else ""

    def scale(self, replicas: int) -> None:
        self.compose("up", "-d", "--scale", f"api={replicas}", "--wait")
        self.wait_spread(replicas)

    def wait_spread(self, replicas: int, timeout: float = 120.0) -> None:
        """Until requests through the proxy reach exactly ``replicas`` replicas."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(3)  # the proxy looks the replicas up every 2 s
            row = self.load("host", 60, 4)
            if len(row["replicas"]) == replicas and row["failed"] == 0:
                return
        raise SystemExit(f"the proxy did not reach {replicas} replicas within {timeout:.0f} s")

    def load(self, path: str, requests: int, concurrency: int) -> dict[str, Any]:
        options = ["load", "--requests", str(requests), "--concurrency", str(concurrency)]
        if path == "host":
            command = [
                sys.executable,
                str(LOAD),
                *options,
                "--url",
                f"http://127.0.0.1:{self.port}",
            ]
        else:
            url = "http://proxy:80" if path == "proxy" else "http://api:8000"
            command = [
                "docker", "run", "--rm", "--network", f"{self.project}_edge",
                "-v", f"{LOAD}:/proxy_load.py:ro", CLIENT_IMAGE,
                "python3", "/proxy_load.py", *options, "--url", url,
            ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"the load generator failed:\n{result.stderr[-3000:]}")
        row: dict[str, Any] = json.loads(result.stdout)
        return row

    def cpu_seconds(self, service: str) -> float | None:
        """CPU time used so far by the containers of ``service`` (None: not readable)."""
        total = 0.0
        ids = self.compose("ps", "-q", service, capture=True).split()
        for container in ids:
            usage = _cgroup_cpu_seconds(container)
            if usage is None:
                return None
            total += usage
        return total if ids else None

    def down(self) -> None:
        subprocess.run(
            ["docker", "compose", "--env-file", self.env_file, "down", "-v", "--rmi", "local",
             "--remove-orphans", "-t", "10"],
            cwd=ROOT, env=self.env, capture_output=True, check=False,
        )  # fmt: skip
        subprocess.run(
            ["docker", "image", "prune", "-f", "--filter",
             f"label=com.docker.compose.project={self.project}"],
            capture_output=True, check=False,
        )  # fmt: skip


PATHS = {"host": "host -> proxy", "proxy": "net -> proxy", "direct": "net -> api"}


def _cgroup_cpu_seconds(container: str) -> float | None:
    """A container's CPU time from its cgroup (v1 cgroupfs or v2 systemd/cgroupfs)."""
    v1 = Path("/sys/fs/cgroup/cpuacct/docker") / container / "cpuacct.usage"
    if v1.is_file():
        return int(v1.read_text()) / 1e9
    for v2 in (
        Path("/sys/fs/cgroup/system.slice") / f"docker-{container}.scope" / "cpu.stat",
        Path("/sys/fs/cgroup/docker") / container / "cpu.stat",
    ):
        if v2.is_file():
            for line in v2.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
    return None


def _per_request_ms(before: float | None, after: float | None, requests: int) -> str:
    if before is None or after is None:
        return "n/a"
    return f"{(after - before) / requests * 1000:.2f}"


def main() -> int:
    args = parse_args()
    missing = docker_missing()
    if missing is not None:
        print(f"compose_scale: skipped: {missing} (needs Docker and the compose plugin)")
        return 0
    counts = [int(n) for n in args.replicas.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(args, Path(tmp))
        try:
            started = time.monotonic()
            stack.compose("build", "--quiet")
            stack.compose("up", "-d", "--scale", f"api={counts[0]}", "--wait")
            stack.compose("run", "--rm", "-T", "seed")
            print(f"stack up and seeded in {time.monotonic() - started:.0f} s", flush=True)
            print(
                "| replicas | path | run | req/s | p50 ms | p95 ms | p99 ms | max ms | failed "
                "| nginx CPU ms/req | api CPU ms/req |"
            )
            print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            summary: dict[tuple[int, str], list[float]] = {}
            for replicas in counts:
                stack.scale(replicas)
                paths = ["direct", "proxy", "host"] if replicas == 1 else ["proxy", "host"]
                for path in paths:
                    stack.load(path, args.warmup, args.concurrency)
                    for run in range(1, args.repeat + 1):
                        cpu = {s: stack.cpu_seconds(s) for s in ("proxy", "api")}
                        row = stack.load(path, args.requests, args.concurrency)
                        used = {
                            s: _per_request_ms(cpu[s], stack.cpu_seconds(s), row["requests"])
                            for s in cpu
                        }
                        lat = row["get_latency"]
                        print(
                            f"| {replicas} | {PATHS[path]} | {run} | {row['req_per_s']} "
                            f"| {lat['p50_ms']} | {lat['p95_ms']} | {lat['p99_ms']} "
                            f"| {lat['max_ms']} | {row['failed']} "
                            f"| {used['proxy']} | {used['api']} |",
                            flush=True,
                        )
                        summary.setdefault((replicas, path), []).append(row["req_per_s"])
            for (replicas, path), rates in summary.items():
                print(
                    f"{replicas} replica(s), {PATHS[path]}: median "
                    f"{statistics.median(rates):.1f} req/s over {len(rates)} runs"
                )
        finally:
            if args.keep:
                print(f"--keep: remove with: docker compose -p {stack.project} down -v")
            else:
                stack.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
