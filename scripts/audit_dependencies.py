"""Audit the installed dependencies for known vulnerabilities (pip-audit), for CI.

Fails (exit 1) only on vulnerabilities that have a fixed release: those can and must
be fixed by raising a version bound. Vulnerabilities without a fix are listed as
warnings. When the vulnerability service cannot be reached, or knows none of the
installed versions, the audit is reported as SKIPPED and the exit status is 0, so
that a network problem never fails a build; set ``RBMREC_AUDIT_STRICT=1`` to make an
incomplete audit fail (exit 2) instead.

It audits the environment it runs in (CI installs it fresh from pyproject.toml), not
the editable rbmrec package itself. Usage::

    .venv/bin/python scripts/audit_dependencies.py            # run pip-audit
    .venv/bin/python scripts/audit_dependencies.py --report audit.json   # assess a report
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROBE_URL = "https://pypi.org/pypi/pip/json"
"""Fetched first: if PyPI does not answer, pip-audit cannot either."""

EXIT_OK, EXIT_VULNERABLE, EXIT_INCOMPLETE = 0, 1, 2


@dataclass
class Verdict:
    """What a pip-audit JSON report says."""

    fixable: list[str] = field(default_factory=list)
    unfixable: list[str] = field(default_factory=list)
    unaudited: list[str] = field(default_factory=list)
    audited: int = 0

    @property
    def complete(self) -> bool:
        return not self.unaudited


def assess(report: dict[str, Any]) -> Verdict:
    """Sort a pip-audit ``--format json`` report into fixable, unfixable and unaudited.

    Parameters
    ----------
    report : dict
        ``{"dependencies": [{"name", "version", "vulns": [...]} or {"name",
        "skip_reason"}], ...}``.

    Returns
    -------
    Verdict
    """
    verdict = Verdict()
    for dep in report.get("dependencies", []):
        name = f"{dep.get('name')} {dep.get('version', '')}".strip()
        if "skip_reason" in dep:
            # an editable install (this project) is not a dependency to audit
            if "editable" not in str(dep["skip_reason"]):
                verdict.unaudited.append(name)
            continue
        verdict.audited += 1
        for vuln in dep.get("vulns", []):
            fixes = vuln.get("fix_versions") or []
            line = f"{name}: {vuln.get('id', '?')}"
            if fixes:
                verdict.fixable.append(f"{line} (fixed in {', '.join(fixes)})")
            else:
                verdict.unfixable.append(f"{line} (no fixed release yet)")
    return verdict


def decide(verdict: Verdict, *, strict: bool) -> tuple[int, list[str]]:
    """The exit status and the lines to print for a verdict."""
    lines = [f"pip-audit: {verdict.audited} dependencies audited"]
    lines += [f"VULNERABLE: {v}" for v in verdict.fixable]
    lines += [f"warning: {v}" for v in verdict.unfixable]
    if verdict.fixable:
        lines.append("FAILED: known vulnerabilities with a fix available; raise the bounds")
        return EXIT_VULNERABLE, lines
    if not verdict.complete:
        shown = ", ".join(verdict.unaudited[:10])
        more = f" and {len(verdict.unaudited) - 10} more" if len(verdict.unaudited) > 10 else ""
        what = "SKIPPED" if not verdict.audited else "INCOMPLETE"
        lines.append(
            f"{what}: {len(verdict.unaudited)} installed package version(s) could not be "
            f"audited (unknown to the vulnerability service): {shown}{more}"
        )
        return (EXIT_INCOMPLETE if strict else EXIT_OK), lines
    lines.append("OK: no known vulnerabilities")
    return EXIT_OK, lines


def reachable(url: str = PROBE_URL, timeout: float = 10.0) -> str | None:
    """``None`` if ``url`` answers, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read(1)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return str(getattr(exc, "reason", exc))
    return None


def run_pip_audit(timeout: float) -> tuple[dict[str, Any] | None, str]:
    """Run pip-audit on this environment; (the report or None, its error output)."""
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "audit.json"
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip_audit",
                    "--format",
                    "json",
                    "--output",
                    str(out),
                    "--progress-spinner",
                    "off",
                    "--skip-editable",
                    "--timeout",
                    "15",
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None, f"pip-audit did not finish in {timeout:.0f}s"
        if not out.is_file() or not out.read_text().strip():
            text = (done.stderr or done.stdout).strip()
            return None, text.splitlines()[-1] if text else f"exit status {done.returncode}"
        report: dict[str, Any] = json.loads(out.read_text())
        return report, done.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--report", type=Path, help="Assess this pip-audit JSON report.")
    parser.add_argument("--timeout", type=float, default=600.0, help="Seconds for pip-audit.")
    args = parser.parse_args(argv)
    strict = os.environ.get("RBMREC_AUDIT_STRICT", "") not in ("", "0", "false")

    if args.report is not None:
        report: dict[str, Any] | None = json.loads(args.report.read_text())
    else:
        why = reachable()
        if why is not None:
            print(f"SKIPPED: pip-audit needs PyPI, which does not answer here ({why})")
            return EXIT_INCOMPLETE if strict else EXIT_OK
        report, error = run_pip_audit(args.timeout)
        if report is None:
            print(f"SKIPPED: pip-audit could not complete: {error}")
            return EXIT_INCOMPLETE if strict else EXIT_OK
    assert report is not None
    status, lines = decide(assess(report), strict=strict)
    for line in lines:
        print(line)
    return status


if __name__ == "__main__":
    sys.exit(main())
