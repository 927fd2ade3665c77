"""A threaded HTTP endpoint for the bolt app (HTTP mode, `migrate-bot serve`).

bolt's built-in development server handles one request at a time; Slack
expects an ack within 3 s even while other requests are in flight, so each
request gets its own thread here. Signature checks stay bolt's: every body
goes through ``app.dispatch`` unchanged.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from slack_bolt import App, BoltRequest

MAX_BODY = 1_000_000


class _Server(ThreadingHTTPServer):
    """A listen backlog for Slack's bursts: with http.server's default of 5, twenty concurrent requests
    overflow the accept queue and each dropped SYN costs the client the kernel's 1 s retransmit
    (bench/ack_latency.py)."""

    daemon_threads = True
    request_queue_size = 128


def make_server(app: App, host: str = "0.0.0.0", port: int = 3000, path: str = "/slack/events") -> ThreadingHTTPServer:
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
            if urlsplit(self.path).path == "/healthz":
                return self._send(200, b"ok")
            return self._send(404, b"not found")

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if url.path != path or length > MAX_BODY:
                return self._send(404 if url.path != path else 413, b"")
            body = self.rfile.read(length).decode("utf-8")
            request = BoltRequest(body=body, query=url.query, headers={k.lower(): [v] for k, v in self.headers.items()})
            response = app.dispatch(request)
            headers = {k: v[0] if isinstance(v, list) else v for k, v in response.headers.items()}
            self._send(response.status, (response.body or "").encode("utf-8"), headers)

    return _Server((host, port), Handler)


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="migrate-bot-http", daemon=True)
    thread.start()
    return thread
