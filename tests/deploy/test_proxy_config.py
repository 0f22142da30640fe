"""Static checks of the nginx proxy (deploy/nginx/): no Docker or nginx needed.

The configuration is rendered by the same script the `proxy` container runs and parsed
into its blocks, so that the promises between the proxy and the api are checked where
both sides are visible: the body limit and its 413 answer, keep-alive timeouts that
cannot race, the forwarded headers the api reads, and retries of idempotent requests
only. The docker-marked test (test_compose_scale_smoke.py) runs it for real.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

import pytest
from _docker_support import ROOT

from app.api.middleware import MAX_URL_BYTES, BodyTooLargeError
from app.cli.serve import KEEP_ALIVE_SECONDS
from app.settings import Settings

RUN_PROXY = ROOT / "deploy" / "nginx" / "run-proxy.sh"


@dataclass
class Block:
    """An nginx block: its simple directives in order, and its child blocks."""

    directives: list[list[str]] = field(default_factory=list)
    children: list[tuple[list[str], Block]] = field(default_factory=list)

    def values(self, name: str) -> list[list[str]]:
        return [d[1:] for d in self.directives if d[0] == name]

    def value(self, name: str) -> list[str]:
        found = self.values(name)
        assert len(found) == 1, f"{name}: {found}"
        return found[0]

    def child(self, *head: str) -> Block:
        found = [block for h, block in self.children if h == list(head)]
        assert len(found) == 1, f"no single block {head}"
        return found[0]


_TOKEN = re.compile(r"""'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|([{};])|([^\s{};'"]+)""")


def parse(text: str) -> Block:
    """Parse nginx configuration text (comments, quotes, nested blocks)."""
    text = re.sub(r"(?m)^\s*#.*$|\s#.*$", "", text)
    root = Block()
    stack = [root]
    words: list[str] = []
    for match in _TOKEN.finditer(text):
        single, double, punct, word = match.groups()
        if punct == ";":
            stack[-1].directives.append(words)
            words = []
        elif punct == "{":
            block = Block()
            stack[-1].children.append((words, block))
            stack.append(block)
            words = []
        elif punct == "}":
            assert not words, f"unterminated directive {words}"
            stack.pop()
        else:
            words.append(next(w for w in (single, double, word) if w is not None))
    assert len(stack) == 1, "unbalanced braces"
    assert not words, f"unterminated directive {words}"
    return root


def render(max_body_bytes: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RBMREC_MAX_BODY_BYTES"}
    if max_body_bytes is not None:
        env["RBMREC_MAX_BODY_BYTES"] = max_body_bytes
    return subprocess.run(
        ["sh", str(RUN_PROXY), "render"], env=env, capture_output=True, text=True, check=False
    )


def config(max_body_bytes: str | None = None) -> Block:
    result = render(max_body_bytes)
    assert result.returncode == 0, result.stderr
    return parse(result.stdout)


def server() -> Block:
    return config().child("server")


def api_location() -> Block:
    return server().child("location", "/")


def test_the_proxy_script_is_valid_posix_sh() -> None:
    result = subprocess.run(["sh", "-n", str(RUN_PROXY)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("limit", [None, "12345"])
def test_the_body_limit_and_its_413_are_the_apis(limit: str | None) -> None:
    expected = Settings(
        _env_file=None, max_body_bytes=limit or Settings.model_fields["max_body_bytes"].default
    ).max_body_bytes  # type: ignore[call-arg]
    rendered = config(limit)
    assert rendered.child("server").value("client_max_body_size") == [str(expected)]
    too_large = rendered.child("server").child("location", "@too_large")
    status, body = too_large.value("return")
    api = BodyTooLargeError(expected)
    assert int(status) == api.status_code == 413
    assert json.loads(body.replace("\\n", "\n")) == {
        "type": "about:blank",
        "title": HTTPStatus(413).phrase,
        "status": 413,
        "detail": api.detail,
    }
    assert too_large.value("default_type") == ["application/problem+json"]


@pytest.mark.parametrize("bad", ["", "0", "-5", "2MB", "1e6", "12 34"])
def test_a_body_limit_the_api_would_refuse_stops_the_proxy(bad: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (pydantic's ValidationError)
        Settings(_env_file=None, max_body_bytes=bad)  # type: ignore[call-arg]
    result = render(bad)
    assert result.returncode == 1
    assert "RBMREC_MAX_BODY_BYTES" in result.stderr
    assert "not a positive whole number of bytes" in result.stderr


def test_every_api_replica_upstream_with_keepalive_that_cannot_race_uvicorn() -> None:
    upstream = config().child("upstream", "rbmrec_api")
    assert upstream.value("server")[0] == "api:8000"
    assert int(upstream.value("keepalive")[0]) > 0
    timeout = upstream.value("keepalive_timeout")[0]
    assert timeout.endswith("s")
    # nginx must close an idle upstream connection before the api does
    assert float(timeout[:-1]) < KEEP_ALIVE_SECONDS
    location = api_location()
    assert location.value("proxy_pass") == ["http://rbmrec_api"]
    assert location.value("proxy_http_version") == ["1.1"]
    headers = {h[0].lower(): h[1] for h in location.values("proxy_set_header")}
    assert headers["connection"] == ""


def test_the_proxy_overwrites_the_forwarded_headers_the_api_reads() -> None:
    headers = {h[0].lower(): h[1] for h in api_location().values("proxy_set_header")}
    # overwritten with what nginx saw, never appended to what the client sent
    assert headers["x-forwarded-for"] == "$remote_addr"
    assert headers["x-forwarded-proto"] == "$scheme"
    assert headers["forwarded"] == ""


def test_only_idempotent_requests_are_retried_on_another_replica() -> None:
    location = api_location()
    conditions = location.value("proxy_next_upstream")
    assert {"error", "timeout"} <= set(conditions)
    # non_idempotent would re-send a POST that reached a replica; http_503 would retry
    # the api's own "database down" answer on replicas that share the database
    assert "non_idempotent" not in conditions
    assert not [c for c in conditions if c.startswith("http_")]
    assert int(location.value("proxy_next_upstream_tries")[0]) >= 2
    for name in ("proxy_connect_timeout", "proxy_read_timeout", "proxy_send_timeout"):
        assert re.fullmatch(r"\d+s", location.value(name)[0]), name


def test_nginx_errors_are_problem_documents() -> None:
    root = server()
    pages = {tuple(v[:-1]): v[-1] for v in root.values("error_page")}
    assert pages == {("413",): "@too_large", ("502", "503"): "@bad_gateway", ("504",): "@timeout"}
    for name, status in (("@bad_gateway", 502), ("@timeout", 504)):
        block = root.child("location", name)
        code, body = block.value("return")
        document = json.loads(body.replace("\\n", "\n"))
        assert int(code) == document["status"] == status
        assert document["title"] == HTTPStatus(status).phrase
        assert block.value("default_type") == ["application/problem+json"]


@pytest.mark.parametrize("bad", ["0", "abc", "1.2.3", "-1"])
def test_a_bad_resolve_interval_stops_the_proxy_before_it_starts(bad: str, tmp_path: Path) -> None:
    env = {**os.environ, "PROXY_RESOLVE_SECONDS": bad, "PROXY_CONFIG_PATH": f"{tmp_path}/x.conf"}
    result = subprocess.run(
        ["sh", str(RUN_PROXY)], env=env, capture_output=True, text=True, timeout=10, check=False
    )
    assert result.returncode == 1
    assert f"PROXY_RESOLVE_SECONDS={bad} is not a positive number of seconds" in result.stderr


def test_the_longest_url_the_api_answers_passes_the_proxy() -> None:
    count, size = server().value("large_client_header_buffers")
    assert int(count) >= 2
    assert size.endswith("k")
    request_line = len("DELETE ") + MAX_URL_BYTES + len(" HTTP/1.1\r\n")
    assert int(size[:-1]) * 1024 >= request_line
