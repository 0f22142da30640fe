"""What the Docker end-to-end tests share: when to skip them, and running their scripts.

They build the image and start the compose stack, which takes minutes, so they run
only when asked: ``RBMREC_TEST_DOCKER=1`` and a Docker engine that answers. Anywhere
else (CI included, which has no engine) they skip and say why. On a machine without
an engine, ``bash ../shared/tools/docker-sandbox/setup.sh`` (or any Docker install)
provides one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPT_IN = "RBMREC_TEST_DOCKER"


def docker_skip_reason() -> str | None:
    """Why the Docker tests cannot run here, or ``None`` when they can."""
    if os.environ.get(OPT_IN) != "1":
        return (
            f"slow docker compose end-to-end test: set {OPT_IN}=1 to run it "
            "(needs a Docker engine with the compose plugin)"
        )
    if shutil.which("docker") is None:
        return f"{OPT_IN}=1 but no docker CLI on PATH"
    try:
        probe = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"{OPT_IN}=1 but the Docker engine did not answer within 20 s"
    if probe.returncode != 0:
        return f"{OPT_IN}=1 but no Docker engine answers: {probe.stderr.strip()[:200]}"
    return None


def run_script(script: Path, movielens_dir: Path, timeout_s: int) -> tuple[int, str]:
    """Run a smoke script from the project root; (exit status, stdout + stderr)."""
    env = {**os.environ, "MOVIELENS_HOST_DIR": str(movielens_dir)}
    env.pop("API_PORT", None)
    result = subprocess.run(
        ["bash", str(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr
