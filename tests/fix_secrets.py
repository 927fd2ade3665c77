"""pytest plugin: real secret-store servers on 127.0.0.1.

* ``aws_sm``: a moto server process (the AWS API emulator boto3's own users
  test against), reached by boto3 over HTTP through AWS_ENDPOINT_URL.
* ``vault``: a small Vault KV v2 HTTP server (Vault itself is not packaged
  for this machine); hvac talks to it over real HTTP, token checked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from bot.devcluster import free_port

VAULT_TOKEN = "hvs.test-vault-token-5a8c1"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if exe is None:
        pytest.fail("moto_server is not installed: `make test` installs moto[server]")
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto_server did not start within 30 s")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def aws_sm(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """A boto3 Secrets Manager client pointed at moto; the bot finds it through the same env."""
    import boto3

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"), timeout=10)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return boto3.client("secretsmanager")


class _VaultHandler(BaseHTTPRequestHandler):
    store: dict[str, dict] = {}

    def log_message(self, *args) -> None:  # keep test output clean
        return None

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.headers.get("X-Vault-Token") != VAULT_TOKEN:
            return self._reply(403, {"errors": ["permission denied"]})
        prefix = "/v1/"
        path = self.path.split("?", 1)[0][len(prefix):]
        mount, _, rest = path.partition("/data/")
        key = f"{mount}/{rest}"
        if key not in self.store:
            return self._reply(404, {"errors": []})
        meta = {"created_time": "2026-01-01T00:00:00Z", "deletion_time": "", "destroyed": False, "version": 1}
        return self._reply(200, {"data": {"data": self.store[key], "metadata": meta}})


@pytest.fixture
def vault(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, dict]]:
    """Returns the server's store: {"secret/<path>": {field: value}}."""
    store: dict[str, dict] = {}
    handler = type("Handler", (_VaultHandler,), {"store": store})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("VAULT_TOKEN", VAULT_TOKEN)
    yield store
    server.shutdown()
    server.server_close()
