"""Throwaway local PostgreSQL clusters for the demo and the tests.

One module serves both so that `make demo` and `make test` start PostgreSQL
the same way: ``initdb`` + ``pg_ctl`` from the server binaries that
``pg_config --bindir`` names, on 127.0.0.1 with a port the kernel picked, a
superuser password (scram), and ``pg_stat_statements`` preloaded.

``initdb`` and ``pg_ctl`` refuse to run as root; when we are root, the server
binaries run as the ``postgres`` OS user on a data directory it owns, while
clients (tests, the bot) stay root and connect over TCP.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ToolMissing

SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "'all'",
    "max_connections": "60",
    "fsync": "off",  # throwaway clusters: durability buys nothing here
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


def bindir() -> Path:
    """The PostgreSQL server binaries' directory, or ToolMissing with the install command."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for path in candidates:
        if (path / "pg_ctl").exists() and (path / "initdb").exists():
            return path
    raise ToolMissing(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found.",
        "Install them: apt-get install -y postgresql postgresql-contrib.",
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(_as_server_user(cmd), capture_output=True, text=True, check=False, **kwargs)


@dataclass
class LocalCluster:
    name: str
    datadir: Path
    port: int
    password: str
    user: str = "postgres"

    def url(self, dbname: str = "postgres", *, user: str | None = None, password: str | None = None) -> str:
        who = user or self.user
        secret = self.password if password is None else password
        return f"postgresql://{who}:{secret}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        log = self.datadir.parent / f"{self.name}.log"
        result = _run([str(bindir() / "pg_ctl"), "-D", str(self.datadir), "-l", str(log), "-w", "-t", "60",
                       "-o", f"-p {self.port}", "start"])
        if result.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed for {self.name}: {result.stderr.strip()}\n{tail}")

    def stop(self, mode: str = "fast") -> None:
        _run([str(bindir() / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"])


def _prepare_dir(base: Path) -> None:
    base.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        # postgres must be able to traverse every parent of its data directory
        for parent in base.parents:
            if str(parent).startswith(tempfile.gettempdir()) or parent == base.parent:
                mode = parent.stat().st_mode
                parent.chmod(mode | 0o011)


def create_cluster(base: Path, name: str, password: str) -> LocalCluster:
    """initdb + configure + start a cluster under ``base/name``."""
    _prepare_dir(base)
    datadir = base / name
    pwfile = base / f".{name}.pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    pwfile.chmod(0o600)
    result = _run([str(bindir() / "initdb"), "-D", str(datadir), "-U", "postgres", f"--pwfile={pwfile}",
                   "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C.UTF-8"])
    pwfile.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed for {name}: {result.stderr.strip()}")
    settings = dict(SERVER_SETTINGS, unix_socket_directories=f"'{base}'")
    conf = "\n".join(f"{k} = {v}" for k, v in settings.items())
    with open(datadir / "postgresql.conf", "a", encoding="utf-8") as fh:
        fh.write(f"\n# migrate-bot throwaway cluster\n{conf}\n")
    for attempt in range(3):
        cluster = LocalCluster(name=name, datadir=datadir, port=free_port(), password=password)
        try:
            cluster.start()
            return cluster
        except RuntimeError:
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))  # the port was taken between choosing and binding
    raise AssertionError("unreachable")


def remove(base: Path, clusters: list[LocalCluster]) -> None:
    for cluster in clusters:
        cluster.stop(mode="immediate")
    shutil.rmtree(base, ignore_errors=True)
