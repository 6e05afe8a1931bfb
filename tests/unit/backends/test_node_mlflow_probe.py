"""Whether a node logs to the MLflow tracking store directly: a server that answers with any HTTP
status does, a database whose port accepts a connection does, a hosted store is trusted to."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from skyflow.backends.node_mlflow import store_answers


class _Server(http.server.BaseHTTPRequestHandler):
    """/health answers 200; under /proxy/ an auth proxy answers 401."""

    def do_GET(self) -> None:
        self.send_response(401 if self.path.startswith("/proxy/") else 200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_healthy_server_answers(server: str) -> None:
    assert store_answers(server + "/", timeout_s=5) is True


def test_a_server_that_refuses_without_credentials_still_answers(server: str) -> None:
    assert store_answers(server + "/proxy", timeout_s=5) is True


def test_a_database_whose_port_accepts_connections_answers() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert store_answers(f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow", timeout_s=5) is True


def test_a_hosted_store_is_left_to_its_client() -> None:
    assert store_answers("databricks://profile") is True
