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

Covered: database settings and grants; grants and revokes on schemas, tables,
views, sequences, columns, functions, procedures, types and domains; default
privileges, including global revokes of the built-in ones (``ALTER DEFAULT
PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC``). Not covered: large
objects, languages, foreign servers — rare on a staging database; the README
says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from bot.pg import rows
from bot.workflow.dumpplan import plural
from bot.workflow.refreshdb import EXTENSION_MEMBERS, USER_SCHEMAS, extension_members

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
# One row per object, plus one per privilege it grants to others (privilege NULL: the object grants nothing).
# ``member`` is a function's argument list or a column's name; columns are no objects of their own (their table is).
OBJECT_GRANTS_SQL = f"""
SELECT 'SCHEMA' AS kind, '' AS schema, n.nspname AS name, '' AS member, a.privilege_type AS privilege,
       {_GRANTEE} AS grantee, a.is_grantable AS grantable
FROM pg_namespace n LEFT JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
     ON a.grantee <> n.nspowner
WHERE {USER_SCHEMAS} AND n.oid NOT IN ({extension_members('pg_namespace')})
UNION ALL
SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, n.nspname, c.relname, '', a.privilege_type,
       {_GRANTEE}, a.is_grantable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char",
                                                                     c.relowner))) a ON a.grantee <> c.relowner
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {USER_SCHEMAS} AND c.oid NOT IN ({EXTENSION_MEMBERS})
UNION ALL
SELECT 'COLUMN', n.nspname, c.relname, att.attname, a.privilege_type, {_GRANTEE}, a.is_grantable
FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(att.attacl) a
WHERE att.attacl IS NOT NULL AND att.attnum > 0 AND NOT att.attisdropped AND a.grantee <> c.relowner
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {USER_SCHEMAS} AND c.oid NOT IN ({EXTENSION_MEMBERS})
UNION ALL
SELECT CASE WHEN p.prokind = 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, n.nspname, p.proname,
       pg_get_function_identity_arguments(p.oid), a.privilege_type, {_GRANTEE}, a.is_grantable
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
LEFT JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a ON a.grantee <> p.proowner
WHERE {USER_SCHEMAS} AND p.oid NOT IN ({extension_members('pg_proc')})
UNION ALL
SELECT CASE WHEN t.typtype = 'd' THEN 'DOMAIN' ELSE 'TYPE' END, n.nspname, t.typname, '', a.privilege_type,
       {_GRANTEE}, a.is_grantable
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN LATERAL aclexplode(coalesce(t.typacl, acldefault('T', t.typowner))) a ON a.grantee <> t.typowner
WHERE (t.typtype IN ('b', 'd', 'e', 'r') OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
  AND {USER_SCHEMAS} AND t.oid NOT IN ({extension_members('pg_type')})
  AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid)
"""
DEFAULT_PRIVILEGES_SQL = f"""
SELECT pg_get_userbyid(d.defaclrole) AS owner, coalesce(n.nspname, '') AS schema, d.defaclobjtype AS objtype,
       a.privilege_type AS privilege, {_GRANTEE} AS grantee, a.is_grantable AS grantable
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
CROSS JOIN LATERAL aclexplode(d.defaclacl) a
WHERE a.grantee <> d.defaclrole
"""
# A global entry (no schema) replaces the built-in defaults, so what it lacks of them was revoked
# (``ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC``); acldefault() spells sequences 's'.
DEFAULT_REVOKES_SQL = """
SELECT pg_get_userbyid(d.defaclrole) AS owner, '' AS schema, d.defaclobjtype AS objtype,
       a.privilege_type AS privilege, CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END AS grantee,
       false AS grantable
FROM pg_default_acl d
CROSS JOIN LATERAL aclexplode(acldefault(CASE WHEN d.defaclobjtype = 'S' THEN 's' ELSE d.defaclobjtype END::"char",
                                         d.defaclrole)) a
WHERE d.defaclnamespace = 0
  AND NOT EXISTS (SELECT 1 FROM aclexplode(d.defaclacl) b
                  WHERE b.grantee = a.grantee AND b.privilege_type = a.privilege_type)
"""


@dataclass(frozen=True, order=True)
class Grant:
    """One privilege on one object; ``grantee`` None is PUBLIC. A DATABASE grant's object is "the database"."""

    kind: str  # DATABASE | SCHEMA | TABLE | SEQUENCE | COLUMN | FUNCTION | PROCEDURE | TYPE | DOMAIN
    schema: str
    name: str
    privilege: str
    grantee: str | None
    grantable: bool
    member: str = ""  # COLUMN: the column; FUNCTION, PROCEDURE: the argument list, as the server prints it

    @property
    def on(self) -> tuple[str, str, str]:
        """The object it is on, as ``Snapshot.objects`` names it: a column's is its table, a function's has its
        arguments (overloads are different objects)."""
        if self.kind == "COLUMN":
            return ("TABLE", self.schema, self.name)
        if self.member:
            return (self.kind, self.schema, f"{self.name}({self.member})")
        return (self.kind, self.schema, self.name)


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
    objects: frozenset[tuple[str, str, str]] = frozenset()  # ``Grant.on`` of every object that can have grants
    default_revokes: frozenset[DefaultGrant] = frozenset()  # built-in defaults a global entry took away


WHATS = ("setting", "database grant", "grant", "revoke", "default privilege")  # the order the report counts them in


@dataclass(frozen=True)
class Change:
    """One statement to run; ``on_server`` ones (database level) run from the maintenance database."""

    statement: sql.Composable  # names the copy, as it is run before the swap
    shown: sql.Composable  # names staging, for a person to run by hand should the statement fail
    on_server: bool
    what: str  # one of WHATS
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
    found = [Grant(r["kind"], r["schema"], r["name"], r["privilege"], r["grantee"], r["grantable"], r["member"])
             for r in rows(inside, OBJECT_GRANTS_SQL)]
    grants |= {g for g in found if g.privilege is not None}
    objects = frozenset(g.on for g in found)
    return Snapshot(settings, frozenset(grants), _defaults(inside, DEFAULT_PRIVILEGES_SQL), objects,
                    _defaults(inside, DEFAULT_REVOKES_SQL))


def _defaults(inside: psycopg.Connection, query: str) -> frozenset[DefaultGrant]:
    return frozenset(DefaultGrant(r["owner"], r["schema"], DEFAULT_OBJECTS.get(r["objtype"], ""), r["privilege"],
                                  r["grantee"], r["grantable"])
                     for r in rows(inside, query))


# --- planning (pure) --------------------------------------------------------------------

KINDS = frozenset({"DATABASE", "SCHEMA", "TABLE", "SEQUENCE", "COLUMN", "FUNCTION", "PROCEDURE", "TYPE", "DOMAIN"})


def _target(g: Grant, dbname: str) -> sql.Composable:
    if g.kind not in KINDS:
        raise ValueError(f"unexpected object kind {g.kind!r}")
    if g.kind == "DATABASE":
        return sql.SQL("DATABASE {}").format(sql.Identifier(dbname))
    if g.kind == "SCHEMA":
        return sql.SQL("SCHEMA {}").format(sql.Identifier(g.name))
    if g.kind == "COLUMN":
        return sql.SQL("TABLE {}").format(sql.Identifier(g.schema, g.name))
    if g.kind in ("FUNCTION", "PROCEDURE"):
        # the argument list is pg_get_function_identity_arguments() of the staging server itself: its own
        # quoting of names and types, so it is passed through as SQL
        return sql.SQL("{} {}({})").format(sql.SQL(g.kind), sql.Identifier(g.schema, g.name), sql.SQL(g.member))
    return sql.SQL("{} {}").format(sql.SQL(g.kind), sql.Identifier(g.schema, g.name))


def _grantee(grantee: str | None) -> sql.Composable:
    return sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee)


def _privilege(privilege: str) -> sql.Composable:
    if privilege not in PRIVILEGES:
        raise ValueError(f"unexpected privilege {privilege!r} in the catalog")
    return sql.SQL(privilege)


def _privileges(g: Grant) -> sql.Composable:
    if g.kind == "COLUMN":
        return sql.SQL("{} ({})").format(_privilege(g.privilege), sql.Identifier(g.member))
    return _privilege(g.privilege)


def grant_statement(g: Grant, dbname: str) -> sql.Composable:
    return sql.SQL("GRANT {} ON {} TO {}{}").format(
        _privileges(g), _target(g, dbname), _grantee(g.grantee),
        sql.SQL(" WITH GRANT OPTION") if g.grantable else sql.SQL(""))


def revoke_statement(g: Grant, dbname: str) -> sql.Composable:
    return sql.SQL("REVOKE {} ON {} FROM {}").format(_privileges(g), _target(g, dbname), _grantee(g.grantee))


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


def default_revoke_statement(d: DefaultGrant) -> sql.Composable:
    return sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} REVOKE {} ON {} FROM {}").format(
        sql.Identifier(d.owner), _privilege(d.privilege), sql.SQL(d.objects), _grantee(d.grantee))


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
        if g.kind != "DATABASE" and g.on not in copy.objects:
            gone += 1
            continue
        changes.append(Change(grant_statement(g, copy_name), grant_statement(g, staging_name), g.kind == "DATABASE",
                              "database grant" if g.kind == "DATABASE" else "grant"))
    for g in sorted(copy.grants - old.grants, key=str):
        if g.on in both and not _regranted(g, old.grants):
            changes.append(Change(revoke_statement(g, copy_name), revoke_statement(g, staging_name),
                                  g.kind == "DATABASE", "revoke"))
    for d in sorted(old.defaults - copy.defaults, key=str):
        if d.objects:
            changes.append(Change(default_statement(d), default_statement(d), False, "default privilege"))
    for d in sorted(old.default_revokes - copy.default_revokes, key=str):
        if d.objects:
            changes.append(Change(default_revoke_statement(d), default_revoke_statement(d), False, "default privilege"))
    return Plan(changes, gone)


def _regranted(g: Grant, old: frozenset[Grant]) -> bool:
    """The old one has the same privilege with a different grant option: the GRANT above already covers it."""
    return any((o.kind, o.schema, o.name, o.member, o.privilege, o.grantee)
               == (g.kind, g.schema, g.name, g.member, g.privilege, g.grantee) for o in old)


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
    carried = ", ".join(plural(outcome.applied[what], what + "s") for what in WHATS if what in outcome.applied)
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
