"""Background execution: the bot's own thread pool, separate from bolt's listener threads.

Slow work (refresh, validate, deploy) must never run on bolt's five listener
threads, or a few long runs would starve every other command. A job that
raises is reported through ``on_crash`` instead of dying silently in a
future nobody reads.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

log = logging.getLogger(__name__)


class Executor:
    def __init__(self, workers: int = 3, on_crash: Callable[[str, BaseException], None] | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="migrate-bot-run")
        self._on_crash = on_crash
        self._pending: set[Future] = set()
        self._lock = threading.Lock()

    def submit(self, key: str, job: Callable[[], None]) -> Future:
        def guarded() -> None:
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - the crash handler turns it into a run state
                log.error("job %s crashed: %s", key, type(exc).__name__)
                if self._on_crash:
                    self._on_crash(key, exc)

        future = self._pool.submit(guarded)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future) -> None:
        with self._lock:
            self._pending.discard(future)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every submitted job (and jobs they submit) finished; False on timeout."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                return True
            for future in pending:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    future.result(timeout=remaining)
                except TimeoutError:
                    return False

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
