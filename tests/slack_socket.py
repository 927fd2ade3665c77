"""Socket Mode for the Slack emulator: ``apps.connections.open`` and a WebSocket endpoint on the same port.

Why: Socket Mode is how most teams run a bot behind a firewall, and the SDK's
client does real work there (handshake, envelopes, acks, pings, reconnecting
on ``disconnect``). Testing it needs something on the other end of a real
WebSocket, the way Slack is: this hub hands out single-use tickets through
``apps.connections.open`` (app-level ``xapp-`` token only, as Slack insists),
upgrades ``GET /link/?ticket=…`` on the emulator's own HTTP server, greets
with ``hello``, pushes envelopes (``slash_commands``, ``events_api``,
``interactive``) and records the bot's acks.

The WebSocket framing (RFC 6455) is the small subset Slack uses: text, ping,
pong and close frames; the client's frames are masked, ours are not. Standalone
on purpose: imports nothing from ``bot``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import parse_qs, parse_qsl, urlsplit

log = logging.getLogger(__name__)

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


class Refused(Exception):
    """The hub said no (``error`` is Slack's error name)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


# --- frames ------------------------------------------------------------------------------------

def read_frame(stream: BinaryIO) -> tuple[int, bytes] | None:
    """One frame (opcode, unmasked payload), or None when the peer went away."""
    head = stream.read(2)
    if len(head) < 2:
        return None
    opcode, masked, length = head[0] & 0x0F, head[1] & 0x80, head[1] & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", stream.read(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", stream.read(8))
    mask = stream.read(4) if masked else b""
    data = stream.read(length)
    if len(data) < length:
        return None
    if masked:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return opcode, data


def frame(opcode: int, payload: bytes) -> bytes:
    """A final, unmasked frame (a server never masks)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


# --- the hub ------------------------------------------------------------------------------------

@dataclass
class Connection:
    ticket: str
    sock: socket.socket
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    open: bool = True

    def send_json(self, data: dict[str, Any]) -> None:
        with self.send_lock:
            self.sock.sendall(frame(TEXT, json.dumps(data).encode()))


class SocketModeHub:
    """Tickets, live connections, envelopes out and acks in; thread-safe."""

    def __init__(self, app_token: str, app_id: str = "A_TEST") -> None:
        self.app_token = app_token
        self.app_id = app_id
        self._changed = threading.Condition()
        self._tickets: set[str] = set()
        self._connections: list[Connection] = []
        self._acks: dict[str, dict[str, Any]] = {}
        self.opened = 0  # how many connections were ever opened (reconnects count)
        self._ids = itertools.count(1)

    # -- apps.connections.open ---------------------------------------------------------------
    def open_url(self, token: str | None, root_url: str) -> str:
        if token is None:
            raise Refused("not_authed")
        if not token.startswith("xapp-"):
            raise Refused("not_allowed_token_type")
        if token != self.app_token:
            raise Refused("invalid_auth")
        ticket = f"tk-{next(self._ids)}-{int(time.time() * 1000)}"
        with self._changed:
            self._tickets.add(ticket)
        return root_url.replace("http://", "ws://", 1) + f"/link/?ticket={ticket}&app_id={self.app_id}"

    # -- the WebSocket endpoint (called from the emulator's HTTP handler thread) ---------------
    def serve(self, path: str, headers: dict[str, str], rfile: BinaryIO, sock: socket.socket) -> None:
        """Handshake, hello, then read the bot's frames until it closes; returns when the socket is done."""
        lowered = {k.lower(): v for k, v in headers.items()}
        ticket = (parse_qs(urlsplit(path).query).get("ticket") or [""])[0]
        with self._changed:
            known = ticket in self._tickets
            self._tickets.discard(ticket)  # single use, like Slack's
        if not known or lowered.get("upgrade", "").lower() != "websocket" or "sec-websocket-key" not in lowered:
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        conn = Connection(ticket, sock)
        hello = {"type": "hello", "num_connections": 1, "connection_info": {"app_id": self.app_id},
                 "debug_info": {"host": "emulator", "approximate_connection_time": 18060}}
        # Registered before the client can read the 101 (its connect() returns then), so a test that looks
        # right after connecting sees the connection; the send lock keeps any envelope behind the hello.
        with conn.send_lock:
            with self._changed:
                self._connections.append(conn)
                self.opened += 1
                self._changed.notify_all()
            sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {accept_key(lowered['sec-websocket-key'])}\r\n\r\n").encode())
            sock.sendall(frame(TEXT, json.dumps(hello).encode()))
        try:
            self._read(conn, rfile)
        finally:
            with self._changed:
                conn.open = False
                self._changed.notify_all()

    def _read(self, conn: Connection, rfile: BinaryIO) -> None:
        while True:
            try:
                got = read_frame(rfile)
            except OSError:
                return
            if got is None:
                return
            opcode, data = got
            if opcode == PING:
                with conn.send_lock:
                    conn.sock.sendall(frame(PONG, data))
            elif opcode == CLOSE:
                with conn.send_lock:
                    conn.sock.sendall(frame(CLOSE, data[:2]))
                return
            elif opcode == TEXT:
                self._ack(json.loads(data))

    def _ack(self, message: dict[str, Any]) -> None:
        envelope_id = message.get("envelope_id")
        if envelope_id:
            with self._changed:
                self._acks[envelope_id] = message
                self._changed.notify_all()

    # -- what tests do -------------------------------------------------------------------------
    def live(self) -> list[Connection]:
        with self._changed:
            return [c for c in self._connections if c.open]

    def wait_connected(self, timeout: float = 30.0, *, opened_at_least: int = 1) -> Connection:
        """The newest open connection, once ``opened_at_least`` connections have ever been opened."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                live = [c for c in self._connections if c.open]
                if live and self.opened >= opened_at_least:
                    return live[-1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no Socket Mode connection (opened so far: {self.opened})")
                self._changed.wait(left)

    def send(self, kind: str, payload: dict[str, Any], *, accepts_response_payload: bool = False) -> str:
        """Push one envelope on the newest connection; returns its envelope_id."""
        envelope_id = f"env-{next(self._ids)}"
        self.wait_connected().send_json({"envelope_id": envelope_id, "type": kind, "payload": payload,
                                         "accepts_response_payload": accepts_response_payload,
                                         "retry_attempt": 0, "retry_reason": ""})
        return envelope_id

    def wait_ack(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while envelope_id not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"envelope {envelope_id} was never acknowledged")
                self._changed.wait(left)
            return self._acks[envelope_id]

    def close_all(self) -> None:
        """The emulator is stopping: drop every connection, as a network failure would."""
        for conn in self.live():
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def ask_to_reconnect(self) -> None:
        """What Slack sends before it recycles a connection: the client must open a new one."""
        self.wait_connected().send_json({"type": "disconnect", "reason": "refresh_requested",
                                         "debug_info": {"host": "emulator"}})


# --- payloads, from the HTTP-mode builders' bytes ---------------------------------------------------

def form_payload(body: bytes) -> dict[str, Any]:
    """A slash command's form body as the JSON object Socket Mode carries."""
    return dict(parse_qsl(body.decode()))


def interactive_payload(body: bytes) -> dict[str, Any]:
    """A block action's ``payload=<json>`` form body as the JSON object Socket Mode carries."""
    return json.loads(dict(parse_qsl(body.decode()))["payload"])
