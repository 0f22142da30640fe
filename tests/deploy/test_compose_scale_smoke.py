"""Several api replicas behind nginx, end to end, through scripts/compose-scale-smoke.sh.

The script starts the compose stack with three api replicas behind the `proxy`
service, seeds MovieLens 100K, and proves each point of issue 17 over real HTTP
through the proxy: recommendations from every replica, read-your-writes across
replicas, POST /admin/retrain reaching the one worker, no failed GET while a replica
is killed and restarted under load (failed POSTs re-sent, each rating stored once),
every replica switching models within the poll interval without flipping back, and
nothing lost across down and up. It takes several minutes, so it runs only when
asked (see ``_docker_support``); the script's exit status is its verdict, and its
summary must list every point as passed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _docker_support import ROOT, docker_skip_reason, run_script

SCRIPT = ROOT / "scripts" / "compose-scale-smoke.sh"
SCRIPT_TIMEOUT_S = 1800
POINTS = ("up", "ryw", "retrain", "failover", "activate", "down-up")


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(SCRIPT_TIMEOUT_S + 60)
def test_replicas_behind_the_proxy_end_to_end(movielens_dir: Path) -> None:
    reason = docker_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    status, output = run_script(SCRIPT, movielens_dir, SCRIPT_TIMEOUT_S)
    # the script's own lines (the containers' logs follow a failure)
    steps = "\n".join(line for line in output.splitlines() if line.startswith("[scale"))
    assert status == 0, steps[-8000:]
    for point in POINTS:
        assert f"  PASS {point}: " in output, f"point {point} did not pass:\n{steps[-4000:]}"
    assert "GETs through the proxy while a replica was killed and restarted: 0 of" in output
    assert "compose scale smoke: OK" in output
    # the measurements, for `pytest -rP`
    print(output[output.rindex("summary (checks passed") :])
