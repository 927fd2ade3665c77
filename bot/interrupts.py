"""SIGTERM leaves the way Ctrl-C does.

Kubernetes, systemd, CI timeouts and a plain `kill` send SIGTERM, whose default action ends the process
on the spot: no `finally` runs, so a refresh's half-built copy, the demo's clusters and a serve's running
runs are abandoned. Raising KeyboardInterrupt instead sends every stop through the one path that already
cleans up and says what happened. A stop that waits (``serve`` draining its runs) can itself be cut
short: the second signal leaves at once, as a kill would, but saying so.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import NoReturn


def sigterm_like_ctrl_c() -> None:
    """Call before anything that needs cleaning up has started; only the main thread may set handlers."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def second_stop_leaves_at_once(message: str) -> None:
    """While a stop is draining, a second Ctrl-C or SIGTERM means "now": say ``message`` and exit 130.

    Exits without running any more Python (``os._exit``): the drain is what is being abandoned, and
    waiting for the pool's threads at interpreter exit would be the same drain again. What was running
    stays ``running`` in the state store, and the next start marks it interrupted, as after a kill.
    """

    def leave(signum: int, frame: object) -> NoReturn:
        print(message, file=sys.stderr, flush=True)
        os._exit(130)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)
