"""A threaded HTTP endpoint for the bolt app (HTTP mode, `migrate-bot serve`).

bolt's built-in development server handles one request at a time; Slack
expects an ack within 3 s even while other requests are in flight, so each
request gets its own thread here. Signature checks stay bolt's: every body
goes through ``app.dispatch`` unchanged. The body's size is checked before a
byte of it is read, so no request can make the process read without bound.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

from slack_bolt import App, BoltRequest

MAX_BODY = 1_000_000


class _Server(ThreadingHTTPServer):
    """A listen backlog for Slack's bursts: with http.server's default of 5, twenty concurrent requests
    overflow the accept queue and each dropped SYN costs the client the kernel's 1 s retransmit
    (bench/ack_latency.py)."""

    daemon_threads = True
    request_queue_size = 128


def body_length(content_length: str | None, transfer_encoding: str | None) -> tuple[int, int]:
    """(bytes to read, 0) for a body we accept, else (0, HTTP status): decided before reading anything.

    Slack always sends a Content-Length. A missing, negative or non-numeric
    one, or a chunked body, would have us read until the peer stops — an
    attacker's stream of any size — so they are refused, as is anything
    over the limit (413).
    """
    if transfer_encoding and transfer_encoding.strip().lower() != "identity":
        return 0, 411
    text = (content_length or "").strip()
    if not text.isdigit():  # also refuses "-1", "+5", "1e3" and an absent header
        return 0, 411 if not text else 400
    length = int(text)
    return (0, 413) if length > MAX_BODY else (length, 0)


@dataclass(frozen=True)
class Probes:
    """What the HTTP front answers besides Slack: readiness (ok, reasons) and the metrics text."""

    ready: Callable[[], tuple[bool, list[str]]] = lambda: (True, [])
    metrics: Callable[[], tuple[bytes, str]] | None = None


def make_server(app: App | None, host: str = "0.0.0.0", port: int = 3000, path: str = "/slack/events",
                probes: Probes = Probes()) -> ThreadingHTTPServer:
    """``app`` None: no Slack endpoint (Socket Mode), only the probes and metrics for the orchestrator."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # request lines carry nothing useful; bolt logs errors
            return None

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            route = urlsplit(self.path).path
            if route == "/healthz":  # the process answers: it is alive
                return self._send(200, b"ok")
            if route == "/readyz":  # it can do its work: Slack, the state store, the scheduler
                ok, reasons = probes.ready()
                body = json.dumps({"ready": ok, "reasons": reasons}).encode()
                return self._send(200 if ok else 503, body, {"Content-Type": "application/json"})
            if route == "/metrics" and probes.metrics is not None:
                text, content_type = probes.metrics()
                return self._send(200, text, {"Content-Type": content_type})
            return self._send(404, b"not found")

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            if app is None or url.path != path:
                self.close_connection = True
                return self._send(404, b"")
            length, refusal = body_length(self.headers.get("Content-Length"), self.headers.get("Transfer-Encoding"))
            if refusal:
                self.close_connection = True  # the unread body must not be taken for the next request
                return self._send(refusal, b"")
            body = self.rfile.read(length).decode("utf-8", errors="replace")
            request = BoltRequest(body=body, query=url.query, headers={k.lower(): [v] for k, v in self.headers.items()})
            response = app.dispatch(request)
            headers = {k: v[0] if isinstance(v, list) else v for k, v in response.headers.items()}
            self._send(response.status, (response.body or "").encode("utf-8"), headers)

    return _Server((host, port), Handler)


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="migrate-bot-http", daemon=True)
    thread.start()
    return thread
