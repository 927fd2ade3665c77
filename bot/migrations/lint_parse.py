"""The lint's view of a migration file: the statement model, and the error for SQL that does not parse.

Parsing, comments, directives and transactions live in ``bot.migrations.sqlfile``
— the one model the applier, the trace and the pre-checks read too — so lint
and applier always agree on how a file runs. This module keeps the names the
rules import (``Stmt``) and turns a parse failure into ``LintSyntaxError``.
"""

from __future__ import annotations

from pglast import ast
from pglast.parser import ParseError

from bot.migrations.sqlfile import Directive, ParsedFile, Statement, directives, parse_file, parse_statements

__all__ = ["Directive", "LintSyntaxError", "Stmt", "directives", "parse", "parsed_or_raise"]

Stmt = Statement


class LintSyntaxError(ValueError):
    """The SQL does not parse; ``line`` is 1-based, ``path`` set when known."""

    def __init__(self, message: str, line: int, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.path = path


def parsed_or_raise(sql: str) -> ParsedFile:
    """The statement model of ``sql``, or LintSyntaxError with the 1-based line of the error."""
    parsed = parse_file(sql)
    if parsed.error is not None:
        line = parsed.error_line or 1
        raise LintSyntaxError(f"line {line}: {parsed.error}", line)
    return parsed


def parse(sql: str) -> list[ast.Node]:
    """Parse trees of DDL describing a database (not a migration), or LintSyntaxError."""
    try:
        return parse_statements(sql)
    except ParseError as exc:
        message, index = (exc.args + (0,))[:2]
        line = sql.count("\n", 0, max(0, min(int(index or 0), len(sql)))) + 1
        raise LintSyntaxError(f"line {line}: {message}", line) from None
