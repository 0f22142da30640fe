"""The worked examples run end to end, and the library and the service never need them.

examples/ uses scikit-learn (the digits, its BernoulliRBM) and matplotlib, which come
with the optional extra ``examples`` (pulled in by ``dev``); rbm_core and app must
import neither.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_example(script: str, *args: str, tmp_path: Path) -> str:
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args, "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000  # a drawn figure, not an empty canvas


def test_reconstruct_digits_trains_and_draws(tmp_path: Path) -> None:
    out = run_example(
        "reconstruct_digits.py", "--epochs", "3", "--gibbs-steps", "20", tmp_path=tmp_path
    )
    assert_png(tmp_path / "out" / "digits.png")
    assert_png(tmp_path / "out" / "training.png")
    found = re.search(
        r"reconstruction error ([\d.]+) \(predicting every pixel by its mean: ([\d.]+)", out
    )
    assert found, out
    trained, baseline = (float(x) for x in found.groups())
    assert trained < 0.6 * baseline


def test_compare_sklearn_prints_both_libraries_side_by_side(tmp_path: Path) -> None:
    out = run_example("compare_sklearn.py", "--runs", "1", "--epochs", "2", tmp_path=tmp_path)
    assert_png(tmp_path / "out" / "compare.png")
    rows = [line for line in out.splitlines() if line.startswith("| ") and "model" not in line]
    names = [row.split(" | ")[0].lstrip("| ") for row in rows]
    assert names[:2] == ["rbm_core, PCD-1 as scikit-learn", "rbm_core, defaults (CD-1, momentum)"]
    assert [name.startswith("scikit-learn ") for name in names[2:]] == [True, True]
    assert len(rows) == 4
    for row in rows:
        numbers = [float(cell) for cell in row.strip(" |").split(" | ")[1:]]
        assert len(numbers) == 5
        error, score, pseudo, wall, cpu = numbers
        assert 0.0 < error < 0.1
        assert score < 0.0
        assert pseudo < 0.0
        assert wall > 0.0
        assert cpu > 0.0


def test_the_library_and_the_service_do_not_import_the_examples_libraries() -> None:
    code = (
        "import sys, rbm_core, app.api.main, app.worker, app.cli\n"
        "print(','.join(sorted(m for m in ('sklearn', 'matplotlib') if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
