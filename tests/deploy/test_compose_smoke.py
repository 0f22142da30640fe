"""The docker compose deployment, end to end, through scripts/compose-smoke.sh.

It builds the image, starts PostgreSQL, the migrations, the api and the worker, seeds
MovieLens 100K, trains a model, and checks recommendations, a posted rating and
restarts over real HTTP. It takes one to a few minutes, so it runs only when asked
(see ``_docker_support``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _docker_support import ROOT, docker_skip_reason, run_script

SCRIPT = ROOT / "scripts" / "compose-smoke.sh"
SCRIPT_TIMEOUT_S = 1200


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(SCRIPT_TIMEOUT_S + 60)
def test_compose_deployment_end_to_end(movielens_dir: Path) -> None:
    reason = docker_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    status, output = run_script(SCRIPT, movielens_dir, SCRIPT_TIMEOUT_S)
    assert status == 0, output[-8000:]
    for step in (
        "cold start from empty volumes",
        "migrate: database at revision",
        "api and worker connect as rbmrec_app (no superuser, no DDL",
        "the api serves model",
        "it is excluded and the list changed",
        "after restarting api and worker (both stopped cleanly on SIGTERM): same model",
        "after down + up (volumes kept)",
        "compose smoke: OK",
    ):
        assert step in output, f"missing step {step!r}:\n{output[-4000:]}"
