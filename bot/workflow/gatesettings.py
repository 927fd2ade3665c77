"""The gate settings a validation ran under, recorded with it, and whether a deploy's config is stricter.

A validation's verdict is only as strict as the settings it ran with: a gate
run with ``gate.lint = false`` or a 60 s lock budget passes what the team's
real config refuses. A pass is recorded with ``record(settings.gate)``; a
deploy compares that record with its own config, and ``weaker`` names each
setting in which the validation was looser — lint or the regression gate
off, a higher budget, a higher regression threshold, longer lock or statement
timeouts, fewer required extensions… (pure; no database, no clock).

Only settings that can turn a failure into a pass are recorded, each with the
direction in which it loosens the gate. A setting missing from a record (a
validation recorded before it existed) is not compared: unknown is not weaker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bot.config import Gate

VERSION = 1  # of the record's shape; a record of another shape is compared key by key all the same

HIGHER, LOWER, OFF, SUBSET, EMPTY = "higher", "lower", "off", "subset", "empty"


@dataclass(frozen=True)
class Setting:
    """One gate setting that can loosen the gate, and the direction in which it does."""

    key: str  # the [gate] key
    looser: str  # HIGHER | LOWER (a number), OFF (a switch), SUBSET (a list), EMPTY (a path)
    unit: str = ""
    zero_means: str = ""  # what 0 means for this number, if it is special
    zero_unlimited: bool = False  # 0 is no limit at all: the loosest value there is


SETTINGS: tuple[Setting, ...] = (
    Setting("lint", OFF),
    Setting("lock_budget_s", HIGHER, " s"),
    Setting("transaction_budget_s", HIGHER, " s"),
    Setting("migration_budget_s", HIGHER, " s"),
    Setting("lock_timeout_s", HIGHER, " s"),
    Setting("lock_retries", HIGHER, zero_means="no count limit", zero_unlimited=True),
    Setting("lock_wait_s", HIGHER, " s"),
    Setting("statement_timeout_s", HIGHER, " s", zero_means="none", zero_unlimited=True),
    Setting("idle_in_transaction_minutes", HIGHER, " min"),
    Setting("connections_needed", LOWER),
    Setting("required_extensions", SUBSET),
    Setting("perf_queries", LOWER, zero_means="the regression gate off"),
    Setting("perf_regression_pct", HIGHER, "%"),
    Setting("perf_min_calls", HIGHER),
    Setting("perf_measure", OFF),
    Setting("perf_workload", EMPTY),
)
_BY_KEY = {s.key: s for s in SETTINGS}


def record(gate: Gate) -> dict[str, Any]:
    """The compact record of ``gate``'s loosening settings, stored with a validation (JSON-ready)."""
    found: dict[str, Any] = {"v": VERSION}
    for s in SETTINGS:
        value = getattr(gate, s.key)
        found[s.key] = list(value) if isinstance(value, (list, tuple)) else value
    return found


def weaker(recorded: dict[str, Any] | None, current: dict[str, Any] | Gate) -> list[str]:
    """Each setting in which the validation (``recorded``) was weaker than ``current``, as
    "<setting as validated>, but this deploy's config has <setting now>"; [] when none or nothing recorded."""
    return [f"{was}, but this deploy's config has {now}" for was, now in differences(recorded, current)]


def differences(recorded: dict[str, Any] | None, current: dict[str, Any] | Gate) -> list[tuple[str, str]]:
    """(the setting as the validation had it, as ``current`` has it) for every loosening difference, in
    ``SETTINGS`` order."""
    if not recorded:
        return []
    now = record(current) if isinstance(current, Gate) else current
    out = []
    for s in SETTINGS:
        if s.key not in recorded or s.key not in now:
            continue
        was_value, now_value = recorded[s.key], now[s.key]
        try:
            looser = _looser(s, was_value, now_value)
        except (TypeError, ValueError):
            continue  # a value of an unexpected type: not comparable, so not said to be weaker
        if looser:
            out.append((describe(s.key, was_value), describe(s.key, now_value)))
    return out


def refusal(recorded: dict[str, Any] | None, current: dict[str, Any] | Gate) -> str | None:
    """The sentence a deploy gives when the validation ran under looser settings than its config; None if not.

    "the validation ran with lint off, but this deploy's config has lint on: validate again under this config"
    """
    found = differences(recorded, current)
    if not found:
        return None
    was = _and([w for w, _ in found])
    now = _and([n for _, n in found])
    return f"the validation ran with {was}, but this deploy's config has {now}: validate again under this config"


def describe(key: str, value: Any) -> str:
    """One setting as a person reads it: "lint off", "lock_budget_s 10 s", "perf_queries 0 (the regression gate off)"."""
    s = _BY_KEY.get(key)
    if s is None:
        return f"{key} {value}"
    if s.looser == OFF:
        return f"{key} {'on' if value else 'off'}"
    if s.looser == SUBSET:
        return f"{key} [{', '.join(str(v) for v in value)}]" if value else f"{key} [] (none)"
    if s.looser == EMPTY:
        return f'{key} "{value}"' if value else f'{key} "" (none)'
    number = f"{value:g}" if isinstance(value, float) else str(value)
    if s.zero_means and _number(value) == 0:
        return f"{key} 0 ({s.zero_means})"
    return f"{key} {number}{s.unit}"


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"not a number: {value!r}")
    return float(value)


def _limit(s: Setting, value: Any) -> float:
    """A number as a limit: 0 is no limit at all (the loosest) where the setting says so."""
    number = _number(value)
    return math.inf if s.zero_unlimited and number == 0 else number


def _looser(s: Setting, was: Any, now: Any) -> bool:
    """Was the validation's value looser than ``now``? TypeError/ValueError for values that do not compare."""
    if s.looser == HIGHER:
        return _limit(s, was) > _limit(s, now)
    if s.looser == LOWER:
        return _number(was) < _number(now)
    if s.looser == OFF:
        if not isinstance(was, bool) or not isinstance(now, bool):
            raise TypeError("not a switch")
        return now and not was
    if s.looser == SUBSET:
        if not isinstance(was, (list, tuple)) or not isinstance(now, (list, tuple)):
            raise TypeError("not a list")
        return bool(set(map(str, now)) - set(map(str, was)))
    if not isinstance(was, str) or not isinstance(now, str):
        raise TypeError("not a path")
    return not was and bool(now)  # EMPTY


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
