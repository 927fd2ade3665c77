"""Staging's own access — database settings and grants — carried from the old staging to the fresh copy.

A refresh restores prod's objects with ``--no-privileges`` (prod's roles need
not exist on the staging server), into a database created a minute ago. Left
there, every refresh would quietly take away what the staging team set up on
*their* database: the app role's CONNECT, its ``search_path`` and
``statement_timeout``, its grants on tables, the default privileges that let it
read tables created later. The staging app would break at the next refresh.

So before the swap the difference between the old staging and the copy is
computed (what the old one has and the copy lacks is granted, what the copy has
and the old one revoked is revoked) and applied to the copy. Grants on objects
that prod does not have (a table only staging had) cannot be carried and are
counted, not failed. Reading and planning are pure over snapshots; only
``snapshot`` and ``apply`` touch a server.

Not carried: column-level grants, grants on functions and types, and revokes
of the built-in defaults inside ``ALTER DEFAULT PRIVILEGES`` — rare on a
staging database, and each says so in the README.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from bot.pg import rows
from bot.workflow.dumpplan import plural
from bot.workflow.refreshdb import EXTENSION_MEMBERS, USER_SCHEMAS

PRIVILEGES = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "USAGE",
                        "CREATE", "CONNECT", "TEMPORARY", "EXECUTE", "MAINTAIN"})
DEFAULT_OBJECTS = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}

_GRANTEE = "CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END"

DATABASE_GRANTS_SQL = f"""
SELECT a.privilege_type AS privilege, {_GRANTEE} AS grantee, a.is_grantable AS grantable
FROM pg_database d CROSS JOIN LATERAL aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
WHERE d.datname = %s AND a.grantee <> d.datdba
"""
DATABASE_SETTINGS_SQL = """
SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END AS role, c.setting
FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase CROSS JOIN LATERAL unnest(s.setconfig) c(setting)
WHERE d.datname = %s
"""
# one row per object, plus one per privilege it grants to others (privilege NULL: the object grants nothing);
# an extension's own objects are left to the extension, which sets their grants when it is created
OBJECT_GRANTS_SQL = f"""
SELECT 'SCHEMA' AS kind, '' AS schema, n.nspname AS name, a.privilege_type AS privilege, {_GRANTEE} AS grantee,
       a.is_grantable AS grantable
FROM pg_namespace n LEFT JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
     ON a.grantee <> n.nspowner
WHERE {USER_SCHEMAS}
  AND n.oid NOT IN (SELECT objid FROM pg_depend WHERE classid = 'pg_namespace'::regclass AND deptype = 'e')
UNION ALL
SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, n.nspname, c.relname, a.privilege_type, {_GRANTEE},
       a.is_grantable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char",
                                                                     c.relowner))) a ON a.grantee <> c.relowner
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {USER_SCHEMAS} AND c.oid NOT IN ({EXTENSION_MEMBERS})
"""
DEFAULT_PRIVILEGES_SQL = f"""
SELECT pg_get_userbyid(d.defaclrole) AS owner, coalesce(n.nspname, '') AS schema, d.defaclobjtype AS objtype,
       a.privilege_type AS privilege, {_GRANTEE} AS grantee, a.is_grantable AS grantable
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
CROSS JOIN LATERAL aclexplode(d.defaclacl) a
WHERE a.grantee <> d.defaclrole
"""


@dataclass(frozen=True, order=True)
class Grant:
    """One privilege on one object; ``grantee`` None is PUBLIC. A DATABASE grant's object is "the database"."""

    kind: str  # DATABASE | SCHEMA | TABLE | SEQUENCE
    schema: str
    name: str
    privilege: str
    grantee: str | None
    grantable: bool


@dataclass(frozen=True, order=True)
class Setting:
    """``ALTER DATABASE … SET`` (role None) or ``ALTER ROLE … IN DATABASE … SET``."""

    role: str | None
    name: str
    value: str


@dataclass(frozen=True, order=True)
class DefaultGrant:
    """One entry of ``ALTER DEFAULT PRIVILEGES FOR ROLE owner [IN SCHEMA schema] GRANT …``."""

    owner: str
    schema: str
    objects: str  # TABLES | SEQUENCES | FUNCTIONS | TYPES | SCHEMAS
    privilege: str
    grantee: str | None
    grantable: bool


@dataclass(frozen=True)
class Snapshot:
    """Who may do what in one database, as the catalogs say."""

    settings: frozenset[Setting] = frozenset()
    grants: frozenset[Grant] = frozenset()
    defaults: frozenset[DefaultGrant] = frozenset()
    objects: frozenset[tuple[str, str, str]] = frozenset()  # (kind, schema, name) of every schema and relation


@dataclass(frozen=True)
class Change:
    """One statement to run; ``on_server`` ones (database level) run from the maintenance database."""

    statement: sql.Composable  # names the copy, as it is run before the swap
    shown: sql.Composable  # names staging, for a person to run by hand should the statement fail
    on_server: bool
    what: str  # "setting" | "database grant" | "grant" | "revoke" | "default privilege"
    set_first: Setting | None = None  # ALTER … SET x FROM CURRENT after set_config(x, value, true)


@dataclass
class Plan:
    changes: list[Change]
    gone: int  # grants on objects only the old staging had (a table prod does not have): nothing to grant them on


@dataclass
class Outcome:
    applied: dict[str, int] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (statement, error)


# --- reading --------------------------------------------------------------------------

def parse_setting(role: str | None, text: str) -> Setting:
    name, _, value = text.partition("=")
    return Setting(role, name, value)


def snapshot(server: psycopg.Connection, inside: psycopg.Connection, dbname: str) -> Snapshot:
    """``server``: any connection to the staging server; ``inside``: a connection to ``dbname`` itself."""
    settings = frozenset(parse_setting(r["role"], r["setting"]) for r in rows(server, DATABASE_SETTINGS_SQL, (dbname,)))
    grants = {Grant("DATABASE", "", "", r["privilege"], r["grantee"], r["grantable"])
              for r in rows(server, DATABASE_GRANTS_SQL, (dbname,))}
    found = rows(inside, OBJECT_GRANTS_SQL)
    grants |= {Grant(r["kind"], r["schema"], r["name"], r["privilege"], r["grantee"], r["grantable"])
               for r in found if r["privilege"] is not None}
    objects = frozenset((r["kind"], r["schema"], r["name"]) for r in found)
    defaults = frozenset(DefaultGrant(r["owner"], r["schema"], DEFAULT_OBJECTS.get(r["objtype"], ""), r["privilege"],
                                      r["grantee"], r["grantable"])
                         for r in rows(inside, DEFAULT_PRIVILEGES_SQL))
    return Snapshot(settings, frozenset(grants), defaults, objects)


# --- planning (pure) --------------------------------------------------------------------

def _target(kind: str, schema: str, name: str, dbname: str) -> sql.Composable:
    if kind == "DATABASE":
        return sql.SQL("DATABASE {}").format(sql.Identifier(dbname))
    if kind == "SCHEMA":
        return sql.SQL("SCHEMA {}").format(sql.Identifier(name))
    return sql.SQL("{} {}").format(sql.SQL(kind), sql.Identifier(schema, name))


def _grantee(grantee: str | None) -> sql.Composable:
    return sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee)


def _privilege(privilege: str) -> sql.Composable:
    if privilege not in PRIVILEGES:
        raise ValueError(f"unexpected privilege {privilege!r} in the catalog")
    return sql.SQL(privilege)


def grant_statement(g: Grant, dbname: str) -> sql.Composable:
    return sql.SQL("GRANT {} ON {} TO {}{}").format(
        _privilege(g.privilege), _target(g.kind, g.schema, g.name, dbname), _grantee(g.grantee),
        sql.SQL(" WITH GRANT OPTION") if g.grantable else sql.SQL(""))


def revoke_statement(g: Grant, dbname: str) -> sql.Composable:
    return sql.SQL("REVOKE {} ON {} FROM {}").format(
        _privilege(g.privilege), _target(g.kind, g.schema, g.name, dbname), _grantee(g.grantee))


def setting_statement(s: Setting, dbname: str) -> sql.Composable:
    """FROM CURRENT, after set_config() parsed the stored text: list values (search_path) keep their meaning."""
    if s.role is None:
        return sql.SQL("ALTER DATABASE {} SET {} FROM CURRENT").format(sql.Identifier(dbname), sql.Identifier(s.name))
    return sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} FROM CURRENT").format(
        sql.Identifier(s.role), sql.Identifier(dbname), sql.Identifier(s.name))


def default_statement(d: DefaultGrant) -> sql.Composable:
    in_schema = sql.SQL(" IN SCHEMA {}").format(sql.Identifier(d.schema)) if d.schema else sql.SQL("")
    return sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {}{} GRANT {} ON {} TO {}{}").format(
        sql.Identifier(d.owner), in_schema, _privilege(d.privilege), sql.SQL(d.objects), _grantee(d.grantee),
        sql.SQL(" WITH GRANT OPTION") if d.grantable else sql.SQL(""))


def plan(old: Snapshot, copy: Snapshot, copy_name: str, staging_name: str) -> Plan:
    """What makes ``copy`` grant what ``old`` granted; revokes only on objects both have."""
    changes: list[Change] = []
    for s in sorted(old.settings - copy.settings, key=lambda s: (s.role or "", s.name)):
        if s.name:
            changes.append(Change(setting_statement(s, copy_name), setting_statement(s, staging_name), True, "setting",
                                  set_first=s))
    both = (old.objects & copy.objects) | {("DATABASE", "", "")}
    gone = 0
    for g in sorted(old.grants - copy.grants, key=str):
        if g.kind != "DATABASE" and (g.kind, g.schema, g.name) not in copy.objects:
            gone += 1
            continue
        changes.append(Change(grant_statement(g, copy_name), grant_statement(g, staging_name), g.kind == "DATABASE",
                              "database grant" if g.kind == "DATABASE" else "grant"))
    for g in sorted(copy.grants - old.grants, key=str):
        if (g.kind, g.schema, g.name) in both and not _regranted(g, old.grants):
            changes.append(Change(revoke_statement(g, copy_name), revoke_statement(g, staging_name),
                                  g.kind == "DATABASE", "revoke"))
    for d in sorted(old.defaults - copy.defaults, key=str):
        if d.objects:
            changes.append(Change(default_statement(d), default_statement(d), False, "default privilege"))
    return Plan(changes, gone)


def _regranted(g: Grant, old: frozenset[Grant]) -> bool:
    """The old one has the same privilege with a different grant option: the GRANT above already covers it."""
    return any((o.kind, o.schema, o.name, o.privilege, o.grantee) == (g.kind, g.schema, g.name, g.privilege, g.grantee)
               for o in old)


# --- applying ------------------------------------------------------------------------------

def apply(changes: list[Change], server: psycopg.Connection, inside: psycopg.Connection) -> Outcome:
    """Each change in its own transaction: one that fails (a role gone, a privilege we lack) spoils no other."""
    outcome = Outcome()
    for change in changes:
        conn = server if change.on_server else inside
        try:
            with conn.transaction():
                if change.set_first is not None:
                    conn.execute("SELECT set_config(%s, %s, true)", (change.set_first.name, change.set_first.value))
                conn.execute(change.statement)
        except psycopg.Error as exc:
            outcome.failed.append((change.shown.as_string(conn), exc.diag.message_primary or str(exc)))
        else:
            outcome.applied[change.what] = outcome.applied.get(change.what, 0) + 1
    return outcome


# --- saying it ------------------------------------------------------------------------------

SHOWN_FAILURES = 3


def describe(planned: Plan, outcome: Outcome) -> tuple[bool, str] | None:
    """(all carried?, the report line's message), or None when the old staging had nothing of its own."""
    if not planned.changes and not planned.gone:
        return None
    carried = ", ".join(plural(n, what + "s") for what, n in outcome.applied.items())
    parts = [f"carried staging's own access over to the copy: {carried}" if carried
             else "nothing of staging's own access could be carried over"]
    if planned.gone:
        parts.append("1 grant on an object prod does not have was left behind" if planned.gone == 1 else
                     f"{planned.gone} grants on objects prod does not have were left behind")
    if not outcome.failed:
        return True, "; ".join(parts)
    shown = "; ".join(f"{statement} ({error})" for statement, error in outcome.failed[:SHOWN_FAILURES])
    more = f" and {len(outcome.failed) - SHOWN_FAILURES} more" if len(outcome.failed) > SHOWN_FAILURES else ""
    parts.append(f"could not apply {plural(len(outcome.failed), 'statements')}: {shown}{more} — run them on staging "
                 "as a role allowed to (a superuser or the objects' owner)")
    return False, "; ".join(parts)
