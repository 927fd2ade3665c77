"""The live progress line on a run's parent message (pure)."""

from __future__ import annotations

import pytest

from bot.runs.execution import progress_line


@pytest.mark.parametrize(
    ("kind", "data", "line"),
    [
        ("step", {"step": "apply", "env": "staging", "count": 3}, "now: apply on staging (3 migration(s))"),
        ("step", {"step": "preflight"}, "now: preflight"),
        ("migration_finished", {"migration": "0002_idx", "ok": True, "seconds": 1.26}, "now: 0002_idx applied in 1.3s"),
        ("migration_finished", {"migration": "0003_fk", "ok": False, "seconds": 0.2}, "now: 0003_fk failed in 0.2s"),
        ("statement", {"migration": "0002_idx", "line": 4, "seconds": 0.1}, ""),
    ],
)
def test_progress_line(kind: str, data: dict, line: str) -> None:
    assert progress_line(kind, data) == line
