"""How the bot logs: one line per record, as text for a terminal or as JSON for a log pipeline.

JSON lines carry the run a thread works for (the same run id that names the
run's database sessions), so a log search for ``r-3f9a1c02`` finds every
line of that run across steps. Redaction happens before formatting (the
redacting filter on each handler), so neither form can carry a secret.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from bot.pg import current_run
from bot.redact import install_logging_redaction

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(), "level": record.levelname,
                "logger": record.name, "message": record.getMessage()}
        run_id = current_run()
        if run_id:
            line["run_id"] = run_id
        if record.exc_info and record.exc_info[1] is not None:
            line["error"] = type(record.exc_info[1]).__name__
        return json.dumps(line, ensure_ascii=False)


def configure(*, verbose: bool, json_lines: bool) -> None:
    """Root logging to stderr (unless something, e.g. a test runner, set handlers up already), then the
    redacting filter on every handler."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
        root.addHandler(handler)
        root.setLevel(logging.INFO if verbose else logging.WARNING)
    install_logging_redaction()
