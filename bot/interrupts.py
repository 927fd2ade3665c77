"""SIGTERM leaves the way Ctrl-C does.

Kubernetes, systemd, CI timeouts and a plain `kill` send SIGTERM, whose default action ends the process
on the spot: no `finally` runs, so a refresh's half-built copy, the demo's clusters and a serve's running
runs are abandoned. Raising KeyboardInterrupt instead sends every stop through the one path that already
cleans up and says what happened.
"""

from __future__ import annotations

import signal
import threading
from typing import NoReturn


def sigterm_like_ctrl_c() -> None:
    """Call before anything that needs cleaning up has started; only the main thread may set handlers."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt
