"""scripts/proxy_load.py, the load generator of the scale smoke: what it counts as failed.

A real HTTP server on 127.0.0.1 that, like nginx at a reload, closes a kept-alive
connection when the next request arrives on it, without answering. The client must
re-send an idempotent request once on a new connection (and count it), and never a
POST (it counts as failed).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType

import pytest
from _docker_support import ROOT


def load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("proxy_load", ROOT / "scripts/proxy_load.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class OneAnswerPerConnection(BaseHTTPRequestHandler):
    """Answers the first request of a connection (keep-alive), drops the second unanswered."""

    protocol_version = "HTTP/1.1"

    def handle(self) -> None:
        self.answered = False
        super().handle()

    def _answer(self) -> None:
        if self.answered:
            # the connection ends with no answer: what a client sees when nginx closes
            # an idle keep-alive connection at a reload just as the request arrives
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.answered = True
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        body = json.dumps({"version": "v1"}).encode()
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Rbmrec-Replica", "r1")
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OneAnswerPerConnection)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_get_on_a_connection_closed_unanswered_is_resent_once_and_counted(
    server_url: str,
) -> None:
    proxy_load = load_module()
    connection = proxy_load.Connection("127.0.0.1", int(server_url.rsplit(":", 1)[1]), 5.0)
    try:
        assert connection.request("GET", "/model") == (200, b'{"version": "v1"}', "r1", False)
        # reused connection, closed unanswered: sent again on a new one
        assert connection.request("GET", "/model") == (200, b'{"version": "v1"}', "r1", True)
        # the POST on the (again reused) connection is not re-sent
        with pytest.raises(proxy_load.http.client.RemoteDisconnected):
            connection.request("POST", "/ratings", "{}")
    finally:
        connection.close()


def test_the_load_counts_failed_posts_and_resent_gets(server_url: str) -> None:
    proxy_load = load_module()
    args = proxy_load.argparse.Namespace(
        url=server_url,
        requests=8,
        concurrency=1,
        rate=0.0,
        post_every=2,
        post_user_prefix="t-",
        users=10,
        items=10,
        seed=0,
        timeout=5.0,
        log=None,
    )
    result = proxy_load.run_load(args)
    # one connection: GET (new), POST (reused: dropped, failed), GET (new), POST (reused) ...
    assert result["by_method"]["GET"] == {
        "sent": 4,
        "failed": 0,
        "retried_on_a_new_connection": 0,
        "statuses": {"200": 4},
    }
    assert result["by_method"]["POST"]["failed"] == 4
    assert result["by_method"]["POST"]["statuses"] == {"0": 4}
    assert [json.loads(f["body"])["user_id"] for f in result["failures"]] == [
        "t-1",
        "t-3",
        "t-5",
        "t-7",
    ]
    assert result["replicas"] == {"r1": 4, "-": 4}
