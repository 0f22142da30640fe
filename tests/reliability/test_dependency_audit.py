"""scripts/audit_dependencies.py: what fails CI, what is reported and skipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _reliability_support import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "audit_dependencies.py"


def _dep(name: str, *vulns: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "version": "1.0", "vulns": list(vulns)}


def _vuln(ident: str, *fixes: str) -> dict[str, Any]:
    return {"id": ident, "fix_versions": list(fixes), "aliases": [], "description": "x"}


SKIPPED = {"name": "numpy", "skip_reason": "Dependency not found on PyPI and could not be audited"}
EDITABLE = {"name": "rbmrec", "skip_reason": "distribution marked as editable"}


def _audit(
    tmp_path: Path, report: dict[str, Any], strict: bool = False
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "audit.json"
    path.write_text(json.dumps(report))
    env = {"PATH": "/usr/bin:/bin", "RBMREC_AUDIT_STRICT": "1" if strict else ""}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--report", str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )


def test_a_vulnerability_with_a_fix_fails_the_audit(tmp_path: Path) -> None:
    report = {"dependencies": [_dep("ok"), _dep("urllib3", _vuln("GHSA-1", "2.2.2")), EDITABLE]}
    done = _audit(tmp_path, report)
    assert done.returncode == 1, done.stdout
    assert "VULNERABLE: urllib3 1.0: GHSA-1 (fixed in 2.2.2)" in done.stdout
    assert "FAILED" in done.stdout


def test_a_vulnerability_without_a_fix_is_a_warning(tmp_path: Path) -> None:
    report = {"dependencies": [_dep("ok"), _dep("lib", _vuln("PYSEC-9"))]}
    done = _audit(tmp_path, report)
    assert done.returncode == 0, done.stdout
    assert "warning: lib 1.0: PYSEC-9 (no fixed release yet)" in done.stdout
    assert "OK: no known vulnerabilities" in done.stdout


def test_a_clean_complete_audit_passes(tmp_path: Path) -> None:
    done = _audit(tmp_path, {"dependencies": [_dep("a"), _dep("b"), EDITABLE], "fixes": []})
    assert done.returncode == 0
    assert "2 dependencies audited" in done.stdout
    assert "OK" in done.stdout


@pytest.mark.parametrize("strict", [False, True])
def test_versions_the_service_does_not_know_are_reported_not_failed(
    tmp_path: Path, strict: bool
) -> None:
    done = _audit(tmp_path, {"dependencies": [SKIPPED, EDITABLE]}, strict=strict)
    assert done.returncode == (2 if strict else 0), done.stdout
    assert "SKIPPED: 1 installed package version(s) could not be audited" in done.stdout
    partial = _audit(tmp_path, {"dependencies": [_dep("a"), SKIPPED]}, strict=strict)
    assert partial.returncode == (2 if strict else 0)
    assert "INCOMPLETE" in partial.stdout


def test_a_fixable_vulnerability_fails_even_when_others_could_not_be_audited(
    tmp_path: Path,
) -> None:
    report = {"dependencies": [SKIPPED, _dep("jinja2", _vuln("CVE-1", "3.1.5", "3.2.0"))]}
    done = _audit(tmp_path, report)
    assert done.returncode == 1
    assert "fixed in 3.1.5, 3.2.0" in done.stdout


def test_ci_runs_the_audit_before_the_tests() -> None:
    ci = (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()
    audit = next(i for i, line in enumerate(ci) if "scripts/audit_dependencies.py" in line)
    tests = next(i for i, line in enumerate(ci) if line.strip() == "make test")
    assert audit < tests
