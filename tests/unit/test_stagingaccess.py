"""Planning what of staging's own access the copy needs (pure; the round trip is in test_refresh.py)."""

from __future__ import annotations

import pytest

from bot.workflow.stagingaccess import (DefaultGrant, Grant, Outcome, Plan, Setting, Snapshot, describe,
                                        parse_setting, plan)

USERS = ("TABLE", "public", "users")
PUBLIC_SCHEMA = ("SCHEMA", "", "public")


def shown(p: Plan) -> list[str]:
    return [c.shown.as_string(None) for c in p.changes]


def run(p: Plan) -> list[str]:
    return [c.statement.as_string(None) for c in p.changes]


def test_a_setting_keeps_everything_after_the_first_equals_sign() -> None:
    assert parse_setting(None, "search_path=app, public") == Setting(None, "search_path", "app, public")
    assert parse_setting("app", "options=-c a=b") == Setting("app", "options", "-c a=b")


def test_settings_and_database_grants_name_the_copy_when_run_and_staging_when_shown() -> None:
    old = Snapshot(settings=frozenset({Setting(None, "search_path", "app, public"), Setting("app", "work_mem", "8MB")}),
                   grants=frozenset({Grant("DATABASE", "", "", "CONNECT", "app", False)}))
    p = plan(old, Snapshot(), "stg__refresh_1", "stg")
    assert run(p) == ['ALTER DATABASE "stg__refresh_1" SET "search_path" FROM CURRENT',
                      'ALTER ROLE "app" IN DATABASE "stg__refresh_1" SET "work_mem" FROM CURRENT',
                      'GRANT CONNECT ON DATABASE "stg__refresh_1" TO "app"']
    assert shown(p)[0] == 'ALTER DATABASE "stg" SET "search_path" FROM CURRENT'
    assert [c.on_server for c in p.changes] == [True, True, True]
    assert p.changes[0].set_first == Setting(None, "search_path", "app, public")


def test_only_what_the_copy_lacks_is_granted() -> None:
    same = Grant("SCHEMA", "", "public", "USAGE", None, False)
    old = Snapshot(grants=frozenset({same, Grant(*USERS, "SELECT", "app", True)}),
                   objects=frozenset({USERS, PUBLIC_SCHEMA}))
    copy = Snapshot(grants=frozenset({same}), objects=frozenset({USERS, PUBLIC_SCHEMA}))
    p = plan(old, copy, "n", "s")
    assert run(p) == ['GRANT SELECT ON TABLE "public"."users" TO "app" WITH GRANT OPTION']
    assert p.changes[0].on_server is False and p.gone == 0


def test_what_staging_revoked_is_revoked_on_the_copy_but_only_on_objects_both_have() -> None:
    public_usage = Grant("SCHEMA", "", "public", "USAGE", None, False)
    prod_only = Grant("SCHEMA", "", "reporting", "USAGE", None, False)
    database_temp = Grant("DATABASE", "", "", "TEMPORARY", None, False)
    old = Snapshot(objects=frozenset({PUBLIC_SCHEMA}))
    copy = Snapshot(grants=frozenset({public_usage, prod_only, database_temp}),
                    objects=frozenset({PUBLIC_SCHEMA, ("SCHEMA", "", "reporting")}))
    assert run(plan(old, copy, "n", "s")) == ['REVOKE TEMPORARY ON DATABASE "n" FROM PUBLIC',
                                              'REVOKE USAGE ON SCHEMA "public" FROM PUBLIC']


def test_a_grant_option_difference_is_one_grant_not_a_grant_and_a_revoke() -> None:
    old = Snapshot(grants=frozenset({Grant(*USERS, "SELECT", "app", True)}), objects=frozenset({USERS}))
    copy = Snapshot(grants=frozenset({Grant(*USERS, "SELECT", "app", False)}), objects=frozenset({USERS}))
    assert [c.what for c in plan(old, copy, "n", "s").changes] == ["grant"]


def test_grants_on_objects_the_copy_does_not_have_are_counted_not_tried() -> None:
    old = Snapshot(grants=frozenset({Grant("TABLE", "public", "stale", "SELECT", "app", False),
                                     Grant("SEQUENCE", "public", "stale_id_seq", "USAGE", "app", False)}),
                   objects=frozenset({("TABLE", "public", "stale"), ("SEQUENCE", "public", "stale_id_seq")}))
    p = plan(old, Snapshot(), "n", "s")
    assert p.changes == [] and p.gone == 2


def test_default_privileges_are_granted_for_their_owner_and_schema() -> None:
    old = Snapshot(defaults=frozenset({DefaultGrant("owner", "public", "TABLES", "SELECT", "app", False),
                                       DefaultGrant("owner", "", "SEQUENCES", "USAGE", None, False)}))
    assert run(plan(old, Snapshot(), "n", "s")) == [
        'ALTER DEFAULT PRIVILEGES FOR ROLE "owner" GRANT USAGE ON SEQUENCES TO PUBLIC',
        'ALTER DEFAULT PRIVILEGES FOR ROLE "owner" IN SCHEMA "public" GRANT SELECT ON TABLES TO "app"']


def test_column_function_procedure_type_and_domain_grants_name_their_object_in_its_own_syntax() -> None:
    name_update = Grant("COLUMN", "public", "users", "UPDATE", "app", False, member="name")
    total = Grant("FUNCTION", "public", "order_total", "EXECUTE", "app", False, member="bigint")
    archive = Grant("PROCEDURE", "public", "archive_orders", "EXECUTE", None, False, member="before date")
    state = Grant("TYPE", "public", "order_state", "USAGE", "app", False)
    positive = Grant("DOMAIN", "public", "positive", "USAGE", "app", True)
    old = Snapshot(grants=frozenset({name_update, total, state, positive}),
                   objects=frozenset({USERS, total.on, archive.on, state.on, positive.on}))
    copy = Snapshot(grants=frozenset({archive}), objects=old.objects)
    assert run(plan(old, copy, "n", "s")) == [
        'GRANT UPDATE ("name") ON TABLE "public"."users" TO "app"',
        'GRANT USAGE ON DOMAIN "public"."positive" TO "app" WITH GRANT OPTION',
        'GRANT EXECUTE ON FUNCTION "public"."order_total"(bigint) TO "app"',
        'GRANT USAGE ON TYPE "public"."order_state" TO "app"',
        'REVOKE EXECUTE ON PROCEDURE "public"."archive_orders"(before date) FROM PUBLIC']


def test_overloads_are_different_objects() -> None:
    """A grant on f(bigint) cannot be carried to a copy that only has f(text): counted, not tried."""
    on_bigint = Grant("FUNCTION", "public", "f", "EXECUTE", "app", False, member="bigint")
    old = Snapshot(grants=frozenset({on_bigint}), objects=frozenset({on_bigint.on}))
    copy = Snapshot(objects=frozenset({("FUNCTION", "public", "f(text)")}))
    p = plan(old, copy, "n", "s")
    assert p.changes == [] and p.gone == 1


def test_a_column_grant_is_carried_when_its_table_is() -> None:
    old = Snapshot(grants=frozenset({Grant("COLUMN", "public", "gone", "SELECT", "app", False, member="id")}))
    assert plan(old, Snapshot(objects=frozenset({USERS})), "n", "s").gone == 1


def test_a_global_revoke_of_a_built_in_default_is_carried() -> None:
    revoked = DefaultGrant("owner", "", "FUNCTIONS", "EXECUTE", None, False)
    p = plan(Snapshot(default_revokes=frozenset({revoked})), Snapshot(), "n", "s")
    assert run(p) == ['ALTER DEFAULT PRIVILEGES FOR ROLE "owner" REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC']
    assert [c.what for c in p.changes] == ["default privilege"]


def test_an_object_kind_the_catalog_query_never_returns_is_refused() -> None:
    odd = Grant("LANGUAGE", "", "plpgsql", "USAGE", "app", False)
    with pytest.raises(ValueError, match="unexpected object kind"):
        plan(Snapshot(grants=frozenset({odd}), objects=frozenset({odd.on})), Snapshot(objects=frozenset({odd.on})),
             "n", "s")


def test_names_are_quoted_so_a_strange_name_stays_one_identifier() -> None:
    odd = ("TABLE", "we\"ird", "ta ble; DROP TABLE x")
    old = Snapshot(grants=frozenset({Grant(*odd, "SELECT", "r\"x", False)}), objects=frozenset({odd}))
    assert run(plan(old, Snapshot(objects=frozenset({odd})), "n", "s")) == [
        'GRANT SELECT ON TABLE "we""ird"."ta ble; DROP TABLE x" TO "r""x"']


def test_a_privilege_the_catalog_should_never_hold_is_refused() -> None:
    old = Snapshot(grants=frozenset({Grant(*USERS, "SELECT; DROP", "app", False)}), objects=frozenset({USERS}))
    with pytest.raises(ValueError, match="unexpected privilege"):
        plan(old, Snapshot(objects=frozenset({USERS})), "n", "s")


def test_nothing_of_its_own_says_nothing() -> None:
    assert describe(Plan([], 0), Outcome()) is None


def test_describe_counts_what_was_carried_and_what_was_left_behind() -> None:
    old = Snapshot(grants=frozenset({Grant(*USERS, "SELECT", "app", False)}), objects=frozenset({USERS}))
    p = Plan(plan(old, Snapshot(objects=frozenset({USERS})), "n", "s").changes, gone=3)
    assert describe(p, Outcome(applied={"grant": 2, "setting": 1})) == (  # counted in WHATS order
        True, "carried staging's own access over to the copy: 1 setting, 2 grants; 3 grants on objects prod does "
              "not have were left behind")


def test_describe_names_at_most_three_failed_statements() -> None:
    failed = [(f"GRANT SELECT ON TABLE t{i} TO app", "permission denied") for i in range(5)]
    complete, message = describe(Plan([], 1), Outcome(failed=failed))
    assert complete is False
    assert message == ("nothing of staging's own access could be carried over; 1 grant on an object prod does not "
                       "have was left behind; could not apply 5 statements: GRANT SELECT ON TABLE t0 TO app "
                       "(permission denied); GRANT SELECT ON TABLE t1 TO app (permission denied); GRANT SELECT ON "
                       "TABLE t2 TO app (permission denied) and 2 more — run them on staging as a role allowed to "
                       "(a superuser or the objects' owner)")
