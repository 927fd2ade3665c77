"""Static migration lint (bot.migrations.lint): rules, directives, positions, corpus.

Pure tests: no database. Every rule has at least one dangerous case (fires,
with its severity, and a fix that uses the statement's own names) and one
safe case (does not fire).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bot.migrations.lint import RULES, Finding, LintSyntaxError, lint_paths, lint_sql

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
EXPECTED = tomllib.loads((CORPUS / "expected.toml").read_text(encoding="utf-8"))

USERS_SCHEMA = """
CREATE TABLE users (
    id bigint PRIMARY KEY, email text, name varchar(100), price numeric(10,2), created_at timestamp,
    network cidr, code char(10), flags varbit(8), bits bit(8), body text, nick varchar
);
"""


def rules_of(sql: str, **kwargs: object) -> set[str]:
    """Rule ids the lint reports for ``sql``."""
    return {f.rule for f in lint_sql(sql, **kwargs)}


def finding(sql: str, rule: str, **kwargs: object) -> Finding:
    """The first finding of ``rule`` (fails the test if there is none)."""
    found = [f for f in lint_sql(sql, **kwargs) if f.rule == rule]
    assert found, f"{rule} not reported; got {sorted(rules_of(sql, **kwargs))}"
    return found[0]


def is_blocked(findings: list[Finding]) -> bool:
    """The gate's rule: an unsuppressed blocker fails it."""
    return any(f.allowed_reason is None and f.severity == "blocker" for f in findings)


# (id, sql, rule, severity, names the fix must mention, lint_sql kwargs)
DANGEROUS = [
    ("create-index", "CREATE INDEX idx_orders_user_id ON orders (user_id);", "create-index-non-concurrent", "blocker",
     ["CREATE INDEX CONCURRENTLY idx_orders_user_id ON orders (user_id)"], {}),
    ("create-unique-index-quoted", 'CREATE UNIQUE INDEX "Users_Email" ON "App"."Users" ("eMail");', "create-index-non-concurrent",
     "blocker", ['CREATE UNIQUE INDEX CONCURRENTLY "Users_Email" ON "App"."Users" ("eMail")'], {}),
    ("drop-index", "DROP INDEX orders_status_idx;", "drop-index-non-concurrent", "blocker",
     ["DROP INDEX CONCURRENTLY orders_status_idx;"], {}),
    ("drop-index-if-exists-schema", "DROP INDEX IF EXISTS app.orders_status_idx;", "drop-index-non-concurrent", "blocker",
     ["DROP INDEX CONCURRENTLY IF EXISTS app.orders_status_idx;"], {}),
    ("reindex-table", "REINDEX TABLE orders;", "reindex-non-concurrent", "blocker", ["REINDEX TABLE CONCURRENTLY orders;"], {}),
    ("reindex-index", "REINDEX INDEX orders_pkey;", "reindex-non-concurrent", "blocker", ["REINDEX INDEX CONCURRENTLY orders_pkey;"], {}),
    ("detach-partition", "ALTER TABLE events DETACH PARTITION events_2023;", "detach-partition-non-concurrent", "blocker",
     ["ALTER TABLE events DETACH PARTITION events_2023 CONCURRENTLY;"], {}),
    ("concurrently-in-begin", "BEGIN;\nCREATE INDEX CONCURRENTLY orders_a_idx ON orders (a);\nCOMMIT;", "concurrently-in-transaction",
     "blocker", ["CREATE INDEX CONCURRENTLY orders_a_idx ON orders (a);"], {}),
    ("concurrently-in-start-transaction", "START TRANSACTION;\nDROP INDEX CONCURRENTLY orders_a_idx;\nEND;",
     "concurrently-in-transaction", "blocker", ["DROP INDEX CONCURRENTLY orders_a_idx"], {}),
    ("foreign-key", "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users(id);",
     "add-foreign-key-without-not-valid", "blocker",
     ["ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;\n"
      "-- then, in a separate migration:\nALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;"], {}),
    ("foreign-key-if-exists-only", "ALTER TABLE IF EXISTS ONLY public.orders ADD FOREIGN KEY (user_id) REFERENCES users (id);",
     "add-foreign-key-without-not-valid", "blocker",
     ["ALTER TABLE IF EXISTS ONLY public.orders ADD CONSTRAINT orders_user_id_fkey FOREIGN KEY (user_id)",
      "VALIDATE CONSTRAINT orders_user_id_fkey"], {}),
    ("inline-references-with-default", "ALTER TABLE orders ADD COLUMN coupon_id bigint DEFAULT 1 REFERENCES coupons (id);",
     "add-foreign-key-without-not-valid", "blocker",
     ["ADD COLUMN coupon_id bigint DEFAULT 1;", "FOREIGN KEY (coupon_id) REFERENCES coupons (id) NOT VALID",
      "VALIDATE CONSTRAINT orders_coupon_id_fkey"], {}),
    ("inline-references-beside-table-fk", "ALTER TABLE orders ADD COLUMN coupon_id bigint REFERENCES coupons (id),\n"
     "  ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;",
     "add-foreign-key-without-not-valid", "blocker", ["FOREIGN KEY (coupon_id) REFERENCES coupons (id) NOT VALID"], {}),
    ("fk-on-column-added-earlier", "ALTER TABLE orders ADD COLUMN coupon_id bigint;\n"
     "ALTER TABLE orders ADD CONSTRAINT orders_coupon_fk FOREIGN KEY (coupon_id) REFERENCES coupons (id);",
     "add-foreign-key-without-not-valid", "blocker",
     ["ADD COLUMN coupon_id <type> REFERENCES coupons (id);",
      "ADD CONSTRAINT orders_coupon_fk FOREIGN KEY (coupon_id) REFERENCES coupons (id) NOT VALID;"], {}),
    ("set-not-null-on-column-added-earlier", "ALTER TABLE orders ADD COLUMN currency text DEFAULT 'EUR';\n"
     "ALTER TABLE orders ALTER COLUMN currency SET NOT NULL;", "set-not-null-without-check", "blocker",
     ["ADD COLUMN currency <type> NOT NULL DEFAULT <value>;", "CHECK (currency IS NOT NULL) NOT VALID"], {}),
    ("check", "ALTER TABLE orders ADD CONSTRAINT orders_total_positive CHECK (total >= 0);", "add-check-without-not-valid",
     "blocker", ["ADD CONSTRAINT orders_total_positive CHECK (total >= 0) NOT VALID;",
                 "ALTER TABLE orders VALIDATE CONSTRAINT orders_total_positive;"], {}),
    ("validate-same-file", "ALTER TABLE orders ADD CONSTRAINT c1 CHECK (total >= 0) NOT VALID;\n"
     "ALTER TABLE orders VALIDATE CONSTRAINT c1;", "validate-constraint-same-migration", "blocker",
     ["ALTER TABLE orders VALIDATE CONSTRAINT c1;"], {}),
    ("set-not-null", "ALTER TABLE users ALTER COLUMN email SET NOT NULL;", "set-not-null-without-check", "blocker",
     ["ALTER TABLE users ADD CONSTRAINT users_email_not_null CHECK (email IS NOT NULL) NOT VALID;",
      "UPDATE users SET email = <value> WHERE email IS NULL;", "ALTER TABLE users VALIDATE CONSTRAINT users_email_not_null;",
      "ALTER TABLE users ALTER COLUMN email SET NOT NULL;", "ALTER TABLE users DROP CONSTRAINT users_email_not_null;"], {}),
    ("set-not-null-after-unrelated-validate", "ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;\n"
     "ALTER TABLE orders ALTER COLUMN status SET NOT NULL;", "set-not-null-without-check", "blocker",
     ["CHECK (status IS NOT NULL) NOT VALID"], {}),
    ("not-null-no-default", "ALTER TABLE users ADD COLUMN plan text NOT NULL;", "add-column-not-null-without-default",
     "blocker", ["ALTER TABLE users ADD COLUMN plan text NOT NULL DEFAULT <value>;"], {}),
    ("uuid-default", "ALTER TABLE users ADD COLUMN public_id uuid DEFAULT gen_random_uuid();", "add-column-volatile-default",
     "blocker", ["ALTER TABLE users ADD COLUMN public_id uuid;", "ALTER COLUMN public_id SET DEFAULT gen_random_uuid();",
                 "UPDATE users SET public_id = gen_random_uuid() WHERE public_id IS NULL;"], {}),
    ("uuid-default-not-null", "ALTER TABLE users ADD COLUMN public_id uuid NOT NULL DEFAULT gen_random_uuid();",
     "add-column-volatile-default", "blocker",
     ["ALTER TABLE users ADD COLUMN public_id uuid;", "ALTER TABLE users ALTER COLUMN public_id SET NOT NULL;"], {}),
    ("clock-timestamp-default", "ALTER TABLE orders ADD COLUMN seen_at timestamptz DEFAULT clock_timestamp();",
     "add-column-volatile-default", "blocker", ["SET DEFAULT clock_timestamp()", "orders"], {}),
    ("random-default", "ALTER TABLE users ADD COLUMN bucket float8 DEFAULT random();", "add-column-volatile-default",
     "blocker", ["SET DEFAULT random()"], {}),
    ("uuid-v4-default", "ALTER TABLE users ADD COLUMN token uuid DEFAULT uuid_generate_v4();", "add-column-volatile-default",
     "blocker", ["SET DEFAULT uuid_generate_v4()"], {}),
    ("nextval-default", "ALTER TABLE users ADD COLUMN n bigint DEFAULT nextval('users_n_seq');", "add-column-volatile-default",
     "blocker", ["nextval('users_n_seq')"], {}),
    ("unknown-function-default", "ALTER TABLE users ADD COLUMN code text DEFAULT make_code();", "add-column-volatile-default",
     "warning", ["SET DEFAULT make_code()"], {}),
    ("any-default-before-pg11", "ALTER TABLE users ADD COLUMN plan text DEFAULT 'free';", "add-column-volatile-default",
     "blocker", ["ALTER TABLE users ADD COLUMN plan text;"], {"server_version_num": 100000}),
    ("bigserial", "ALTER TABLE events_log ADD COLUMN seq bigserial;", "add-column-serial-or-identity", "blocker",
     ["CREATE SEQUENCE events_log_seq_seq;", "ALTER TABLE events_log ADD COLUMN seq bigint;"], {}),
    ("identity", "ALTER TABLE accounts ADD COLUMN account_no bigint GENERATED ALWAYS AS IDENTITY;",
     "add-column-serial-or-identity", "blocker", ["ALTER TABLE accounts ADD COLUMN account_no bigint;"], {}),
    ("generated-stored", "ALTER TABLE orders ADD COLUMN total_cents bigint GENERATED ALWAYS AS (total * 100) STORED;",
     "add-column-generated-stored", "blocker",
     ["ALTER TABLE orders ADD COLUMN total_cents bigint;", "UPDATE orders SET total_cents = total * 100"], {}),
    ("type-bigint", "ALTER TABLE accounts ALTER COLUMN owner_id TYPE bigint;", "alter-column-type-rewrite", "blocker",
     ["ALTER TABLE accounts ADD COLUMN owner_id_new bigint;", "ALTER TABLE accounts RENAME COLUMN owner_id_new TO owner_id;"], {}),
    ("set-data-type", "ALTER TABLE accounts ALTER COLUMN owner_id SET DATA TYPE bigint;", "alter-column-type-rewrite",
     "blocker", ["owner_id_new bigint"], {}),
    ("type-using", "ALTER TABLE orders ALTER COLUMN status TYPE text USING status::text;", "alter-column-type-rewrite",
     "blocker", ["UPDATE orders SET status_new = CAST(status AS text)"], {}),
    ("char-to-text", "ALTER TABLE users ALTER COLUMN code TYPE text;", "alter-column-type-rewrite", "blocker",
     ["users", "code_new text"], {"schema_sql": USERS_SCHEMA}),
    ("varchar-shrink", "ALTER TABLE users ALTER COLUMN name TYPE varchar(20);", "alter-column-type-rewrite", "blocker",
     ["name_new varchar(20)"], {"schema_sql": USERS_SCHEMA}),
    ("text-to-varchar-n", "ALTER TABLE users ALTER COLUMN body TYPE varchar(50);", "alter-column-type-rewrite", "blocker",
     ["body_new varchar(50)"], {"schema_sql": USERS_SCHEMA}),
    ("numeric-scale-change", "ALTER TABLE users ALTER COLUMN price TYPE numeric(12,4);", "alter-column-type-rewrite",
     "blocker", ["price_new numeric(12, 4)"], {"schema_sql": USERS_SCHEMA}),
    ("inet-to-cidr", "ALTER TABLE users ALTER COLUMN network TYPE cidr;", "alter-column-type-rewrite", "blocker",
     ["network_new cidr"], {"schema_sql": USERS_SCHEMA.replace("network cidr", "network inet")}),
    ("timestamptz-before-pg12", "ALTER TABLE users ALTER COLUMN created_at TYPE timestamptz;", "alter-column-type-rewrite",
     "blocker", ["created_at_new timestamptz"], {"schema_sql": USERS_SCHEMA, "server_version_num": 110000}),
    ("timestamptz-utc", "ALTER TABLE users ALTER COLUMN created_at TYPE timestamptz;", "alter-column-type-timezone",
     "warning", ["SET TimeZone = 'UTC';", "ALTER TABLE users ALTER COLUMN created_at TYPE timestamptz;"],
     {"schema_sql": USERS_SCHEMA}),
    ("type-unknown-source", "ALTER TABLE users ALTER COLUMN name TYPE text;", "alter-column-type-unverified", "warning",
     ["attrelid = 'users'::regclass AND attname = 'name'"], {}),
    ("unique", "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);", "add-unique-constraint-in-place",
     "blocker", ["CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email);",
                 "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_key;"], {}),
    ("primary-key", "ALTER TABLE legacy_payments ADD PRIMARY KEY (id);", "add-unique-constraint-in-place", "blocker",
     ["CREATE UNIQUE INDEX CONCURRENTLY legacy_payments_pkey ON legacy_payments (id);",
      "ADD CONSTRAINT legacy_payments_pkey PRIMARY KEY USING INDEX legacy_payments_pkey;"], {}),
    ("exclude", "ALTER TABLE room_bookings ADD CONSTRAINT no_overlap EXCLUDE USING gist (during WITH &&);",
     "add-unique-constraint-in-place", "blocker", ["ALTER TABLE room_bookings ADD CONSTRAINT no_overlap EXCLUDE USING gist"], {}),
    ("inline-unique", "ALTER TABLE users ADD COLUMN handle text UNIQUE;", "add-unique-constraint-in-place", "blocker",
     ["ALTER TABLE users ADD COLUMN handle text;", "CREATE UNIQUE INDEX CONCURRENTLY users_handle_key ON users (handle);"], {}),
    ("pk-using-index-nullable", "CREATE UNIQUE INDEX CONCURRENTLY payments_id_idx ON legacy_payments (id);\n"
     "ALTER TABLE legacy_payments ADD CONSTRAINT legacy_payments_pkey PRIMARY KEY USING INDEX payments_id_idx;",
     "add-primary-key-nullable-columns", "warning",
     ["ALTER TABLE legacy_payments ADD CONSTRAINT legacy_payments_id_not_null CHECK (id IS NOT NULL) NOT VALID;",
      "PRIMARY KEY USING INDEX payments_id_idx"], {}),
    ("json-add-column", "ALTER TABLE orders ADD COLUMN metadata json;", "prefer-jsonb", "warning",
     ["ALTER TABLE orders ADD COLUMN metadata jsonb;"], {}),
    ("json-create-table", "CREATE TABLE webhooks (id bigint PRIMARY KEY, payload json NOT NULL);", "prefer-jsonb", "warning",
     ["CREATE TABLE webhooks (id bigint PRIMARY KEY, payload jsonb NOT NULL);"], {}),
    ("json-alter-type", "ALTER TABLE orders ALTER COLUMN metadata TYPE json;", "prefer-jsonb", "warning",
     ["ALTER TABLE orders ALTER COLUMN metadata TYPE jsonb;"], {}),
    ("vacuum-full", "VACUUM FULL orders;", "vacuum-full", "blocker", ["pg_repack --table=orders"], {}),
    ("vacuum-full-options", "VACUUM (FULL, ANALYZE) public.orders;", "vacuum-full", "blocker", ["pg_repack --table=public.orders"], {}),
    ("cluster", "CLUSTER orders USING orders_created_idx;", "cluster", "blocker",
     ["pg_repack --table=orders --order-by=<columns of orders_created_idx>"], {}),
    ("truncate-cascade", "TRUNCATE sessions, devices CASCADE;", "truncate-cascade", "blocker", ["TRUNCATE sessions, devices;"], {}),
    ("attach-range-partition", "ALTER TABLE events ATTACH PARTITION events_2027 FOR VALUES FROM ('2027-01-01') TO "
     "('2028-01-01');", "attach-partition-scan", "warning",
     ["ALTER TABLE events_2027 ADD CONSTRAINT events_2027_bounds CHECK (<partition key> IS NOT NULL AND "
      "<partition key> >= '2027-01-01' AND <partition key> < '2028-01-01') NOT VALID;",
      "ALTER TABLE events_2027 VALIDATE CONSTRAINT events_2027_bounds;",
      "ALTER TABLE events ATTACH PARTITION events_2027 FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');",
      "ALTER TABLE events_2027 DROP CONSTRAINT events_2027_bounds;"], {}),
    ("attach-list-partition", "ALTER TABLE app.orders ATTACH PARTITION app.orders_eu FOR VALUES IN ('de', 'fr');",
     "attach-partition-scan", "warning", ["<partition key> IN ('de', 'fr')", "ALTER TABLE app.orders_eu VALIDATE"], {}),
    ("set-unlogged", "ALTER TABLE events SET UNLOGGED;", "alter-table-rewrite", "blocker",
     ["-- migrate:allow alter-table-rewrite <why events can be unavailable", "ALTER TABLE events SET UNLOGGED;"], {}),
    ("set-logged-schema", "ALTER TABLE app.events SET LOGGED;", "alter-table-rewrite", "blocker",
     ["ALTER TABLE app.events SET LOGGED;"], {}),
    ("set-tablespace", "ALTER TABLE orders SET TABLESPACE fast_ssd;", "alter-table-rewrite", "blocker",
     ["pg_repack --table=orders --tablespace=fast_ssd --moveidx"], {}),
    ("set-access-method", "ALTER TABLE orders SET ACCESS METHOD heap;", "alter-table-rewrite", "blocker",
     ["ALTER TABLE orders SET ACCESS METHOD heap;"], {}),
    ("refresh-matview", "REFRESH MATERIALIZED VIEW reporting.daily_totals;", "refresh-matview-non-concurrent", "blocker",
     ["CREATE UNIQUE INDEX CONCURRENTLY daily_totals_refresh_key ON reporting.daily_totals",
      "REFRESH MATERIALIZED VIEW CONCURRENTLY reporting.daily_totals;"], {}),
    ("rename-column", "ALTER TABLE users RENAME COLUMN name TO full_name;", "rename-column", "blocker",
     ["ALTER TABLE users ADD COLUMN full_name", "UPDATE users SET full_name = name WHERE full_name IS NULL;",
      "ALTER TABLE users DROP COLUMN name;"], {}),
    ("rename-table", "ALTER TABLE accounts RENAME TO customers;", "rename-table", "blocker",
     ["ALTER TABLE accounts RENAME TO customers;", "CREATE VIEW accounts AS SELECT * FROM customers;"], {}),
    ("rename-view", "ALTER VIEW active_users RENAME TO recent_users;", "rename-table", "blocker",
     ["CREATE VIEW active_users AS SELECT * FROM recent_users;"], {}),
    ("rename-schema", "ALTER SCHEMA billing RENAME TO invoicing;", "rename-schema", "blocker",
     ["-- migrate:cleanup\nALTER SCHEMA billing RENAME TO invoicing;"], {}),
    ("rename-enum-value", "ALTER TYPE order_state RENAME VALUE 'canceled' TO 'cancelled';", "rename-enum-value", "blocker",
     ["ALTER TYPE order_state ADD VALUE IF NOT EXISTS 'cancelled';", "WHERE <column> = 'canceled'"], {}),
    ("rename-enum-value-quote", "ALTER TYPE mood RENAME VALUE 'don''t' TO 'do not';", "rename-enum-value", "blocker",
     ["WHERE <column> = 'don''t'"], {}),
    ("rename-column-known-type", "ALTER TABLE users RENAME COLUMN name TO full_name;", "rename-column", "blocker",
     ["ALTER TABLE users ADD COLUMN full_name varchar(100);"], {"schema_sql": USERS_SCHEMA}),
    ("drop-column", "ALTER TABLE users DROP COLUMN legacy_flags;", "drop-column", "blocker",
     ["-- migrate:cleanup\nALTER TABLE users DROP COLUMN legacy_flags;"], {}),
    ("drop-table", "DROP TABLE IF EXISTS sessions;", "drop-table", "blocker", ["DROP TABLE IF EXISTS sessions;"], {}),
    ("drop-schema", "DROP SCHEMA billing CASCADE;", "drop-schema", "blocker", ["DROP SCHEMA billing CASCADE;"], {}),
    ("drop-type", "DROP TYPE order_state;", "drop-type", "blocker", ["DROP TYPE order_state;"], {}),
    ("drop-domain", "DROP DOMAIN email_address;", "drop-type", "blocker", ["DROP DOMAIN email_address;"], {}),
    ("drop-function", "DROP FUNCTION orders_audit_fn();", "drop-function", "blocker", ["orders_audit_fn"], {}),
    ("drop-procedure", "DROP PROCEDURE archive_orders(integer);", "drop-function", "blocker", ["archive_orders"], {}),
    ("drop-view", "DROP VIEW active_users;", "drop-view", "blocker", ["DROP VIEW active_users;"], {}),
    ("drop-materialized-view", "DROP MATERIALIZED VIEW sales_daily;", "drop-view", "blocker",
     ["DROP MATERIALIZED VIEW sales_daily;"], {}),
    ("drop-sequence", "DROP SEQUENCE invoice_numbers;", "drop-sequence", "blocker", ["DROP SEQUENCE invoice_numbers;"], {}),
    ("drop-trigger", "DROP TRIGGER orders_audit ON orders;", "drop-trigger", "blocker", ["DROP TRIGGER orders_audit ON orders;"], {}),
    ("enum-add-value-pg11", "ALTER TYPE order_state ADD VALUE 'refunded';", "enum-add-value-in-transaction", "blocker",
     ["-- migrate:no-transaction\nALTER TYPE order_state ADD VALUE 'refunded';"], {"server_version_num": 110000}),
    ("enum-add-value-explicit-begin-pg11", "-- migrate:no-transaction\nBEGIN;\nALTER TYPE order_state ADD VALUE 'refunded';\nCOMMIT;",
     "enum-add-value-in-transaction", "blocker", ["ALTER TYPE order_state ADD VALUE 'refunded';"], {"server_version_num": 110000}),
    ("alter-then-update", "ALTER TABLE orders ADD COLUMN note text;\nUPDATE orders SET note = '';",
     "statements-after-access-exclusive", "warning", ["SET lock_timeout", "ALTER TABLE orders ADD COLUMN note text;"], {}),
    ("lock-table-then-update", "LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE;\nUPDATE accounts SET balance_cents = 0;",
     "statements-after-access-exclusive", "warning", ["LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE;"], {}),
    ("fk-without-index", "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;",
     "foreign-key-without-index", "warning", ["CREATE INDEX CONCURRENTLY orders_user_id_idx ON orders (user_id);"], {}),
    ("fk-without-index-new-table", "CREATE TABLE payments (id bigint PRIMARY KEY, order_id bigint REFERENCES orders (id));",
     "foreign-key-without-index", "warning", ["CREATE INDEX payments_order_id_idx ON payments (order_id);"], {}),
    ("allow-without-reason", "-- migrate:allow create-index-non-concurrent\nCREATE INDEX i ON tiny (a);", "directive-invalid",
     "warning", ["-- migrate:allow <rule-id>"], {}),
]

# (id, sql, rule that must NOT fire, lint_sql kwargs)
SAFE = [
    ("index-concurrently", "CREATE INDEX CONCURRENTLY idx_orders_user_id ON orders (user_id);", "create-index-non-concurrent", {}),
    ("index-on-new-table", "CREATE TABLE audit (id bigint, order_id bigint);\nCREATE INDEX audit_order_idx ON audit (order_id);",
     "create-index-non-concurrent", {}),
    ("index-on-new-quoted-table", 'CREATE TABLE app."Audit" (id bigint);\nCREATE INDEX a_idx ON app."Audit" (id);',
     "create-index-non-concurrent", {}),
    ("drop-index-concurrently", "DROP INDEX CONCURRENTLY IF EXISTS orders_status_idx;", "drop-index-non-concurrent", {}),
    ("drop-index-created-here", "CREATE TABLE t (a int);\nCREATE INDEX t_a ON t (a);\nDROP INDEX t_a;", "drop-index-non-concurrent", {}),
    ("reindex-concurrently", "REINDEX INDEX CONCURRENTLY orders_pkey;", "reindex-non-concurrent", {}),
    ("detach-concurrently", "ALTER TABLE events DETACH PARTITION events_2023 CONCURRENTLY;", "detach-partition-non-concurrent", {}),
    ("concurrently-outside-begin", "CREATE INDEX CONCURRENTLY a_idx ON orders (a);\nCREATE INDEX CONCURRENTLY b_idx ON orders (b);",
     "concurrently-in-transaction", {}),
    ("concurrently-after-commit", "BEGIN;\nUPDATE flags SET enabled = true;\nCOMMIT;\nCREATE INDEX CONCURRENTLY a_idx ON orders (a);",
     "concurrently-in-transaction", {}),
    ("fk-not-valid", "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;",
     "add-foreign-key-without-not-valid", {}),
    ("inline-references-new-column", "ALTER TABLE orders ADD COLUMN coupon_id bigint REFERENCES coupons (id);",
     "add-foreign-key-without-not-valid", {}),
    ("inline-references-two-new-columns", "ALTER TABLE orders ADD COLUMN a bigint REFERENCES coupons (id),\n"
     "  ADD COLUMN b bigint REFERENCES users (id) ON DELETE SET NULL;", "add-foreign-key-without-not-valid", {}),
    ("fk-on-new-table", "CREATE TABLE items (id bigint, order_id bigint);\n"
     "ALTER TABLE items ADD CONSTRAINT items_order_fk FOREIGN KEY (order_id) REFERENCES orders (id);",
     "add-foreign-key-without-not-valid", {}),
    ("check-not-valid", "ALTER TABLE orders ADD CONSTRAINT orders_total_positive CHECK (total >= 0) NOT VALID;",
     "add-check-without-not-valid", {}),
    ("check-on-new-table", "CREATE TABLE t (a int);\nALTER TABLE t ADD CONSTRAINT t_a CHECK (a > 0);", "add-check-without-not-valid", {}),
    ("validate-alone", "ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;", "validate-constraint-same-migration", {}),
    ("set-not-null-after-validate", "ALTER TABLE users VALIDATE CONSTRAINT users_email_not_null;\n"
     "ALTER TABLE users ALTER COLUMN email SET NOT NULL;", "set-not-null-without-check", {}),
    ("set-not-null-valid-check-in-schema", "ALTER TABLE users ALTER COLUMN email SET NOT NULL;", "set-not-null-without-check",
     {"schema_sql": "CREATE TABLE users (email text, CONSTRAINT users_email_nn CHECK (email IS NOT NULL));"}),
    ("set-not-null-on-new-table", "CREATE TABLE t (a int);\nALTER TABLE t ALTER COLUMN a SET NOT NULL;", "set-not-null-without-check", {}),
    ("not-null-with-default", "ALTER TABLE users ADD COLUMN plan text NOT NULL DEFAULT 'free';",
     "add-column-not-null-without-default", {}),
    ("not-null-on-new-table", "CREATE TABLE t (a int);\nALTER TABLE t ADD COLUMN b int NOT NULL;",
     "add-column-not-null-without-default", {}),
    ("now-default", "ALTER TABLE orders ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();", "add-column-volatile-default", {}),
    ("current-timestamp-default", "ALTER TABLE users ADD COLUMN seen_at timestamptz DEFAULT CURRENT_TIMESTAMP;",
     "add-column-volatile-default", {}),
    ("constant-default", "ALTER TABLE users ADD COLUMN prefs jsonb NOT NULL DEFAULT '{}'::jsonb;", "add-column-volatile-default", {}),
    ("volatile-default-new-table", "CREATE TABLE t (a int);\nALTER TABLE t ADD COLUMN token uuid DEFAULT gen_random_uuid();",
     "add-column-volatile-default", {}),
    ("serial-in-create-table", "CREATE TABLE t (id bigserial PRIMARY KEY);", "add-column-serial-or-identity", {}),
    ("plain-bigint-column", "ALTER TABLE events_log ADD COLUMN seq bigint;", "add-column-serial-or-identity", {}),
    ("generated-on-new-table", "CREATE TABLE t (a int);\nALTER TABLE t ADD COLUMN b int GENERATED ALWAYS AS (a * 2) STORED;",
     "add-column-generated-stored", {}),
    ("varchar-to-text", "ALTER TABLE users ALTER COLUMN name TYPE text;", "alter-column-type-rewrite", {"schema_sql": USERS_SCHEMA}),
    ("varchar-widen", "ALTER TABLE users ALTER COLUMN name TYPE varchar(200);", "alter-column-type-rewrite",
     {"schema_sql": USERS_SCHEMA}),
    ("varchar-drop-length", "ALTER TABLE users ALTER COLUMN name TYPE varchar;", "alter-column-type-rewrite",
     {"schema_sql": USERS_SCHEMA}),
    ("numeric-widen", "ALTER TABLE users ALTER COLUMN price TYPE numeric(12,2);", "alter-column-type-rewrite",
     {"schema_sql": USERS_SCHEMA}),
    ("numeric-unconstrained", "ALTER TABLE users ALTER COLUMN price TYPE numeric;", "alter-column-type-rewrite",
     {"schema_sql": USERS_SCHEMA}),
    ("text-to-varchar", "ALTER TABLE users ALTER COLUMN body TYPE varchar;", "alter-column-type-rewrite", {"schema_sql": USERS_SCHEMA}),
    ("cidr-to-inet", "ALTER TABLE users ALTER COLUMN network TYPE inet;", "alter-column-type-rewrite", {"schema_sql": USERS_SCHEMA}),
    ("varbit-widen", "ALTER TABLE users ALTER COLUMN flags TYPE varbit(16);", "alter-column-type-rewrite",
     {"schema_sql": USERS_SCHEMA}),
    ("bit-to-varbit", "ALTER TABLE users ALTER COLUMN bits TYPE bit varying(8);", "alter-column-type-rewrite",
     {"schema_sql": USERS_SCHEMA}),
    ("timestamptz-pg12", "ALTER TABLE users ALTER COLUMN created_at TYPE timestamptz;", "alter-column-type-rewrite",
     {"schema_sql": USERS_SCHEMA}),
    ("same-char-type", "ALTER TABLE users ALTER COLUMN code TYPE character(10);", "alter-column-type-rewrite",
     {"schema_sql": USERS_SCHEMA}),
    ("type-known-from-file", "ALTER TABLE users ADD COLUMN nick2 varchar(20);\nALTER TABLE users ALTER COLUMN nick2 TYPE varchar(40);",
     "alter-column-type-rewrite", {}),
    ("type-change-new-table", "CREATE TABLE t (a int);\nALTER TABLE t ALTER COLUMN a TYPE bigint;", "alter-column-type-rewrite", {}),
    ("timezone-not-involved", "ALTER TABLE users ALTER COLUMN name TYPE text;", "alter-column-type-timezone",
     {"schema_sql": USERS_SCHEMA}),
    ("type-known-not-unverified", "ALTER TABLE users ALTER COLUMN name TYPE text;", "alter-column-type-unverified",
     {"schema_sql": USERS_SCHEMA}),
    ("unique-using-index", "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_idx;",
     "add-unique-constraint-in-place", {}),
    ("unique-on-new-table", "CREATE TABLE t (a int);\nALTER TABLE t ADD CONSTRAINT t_a_key UNIQUE (a);",
     "add-unique-constraint-in-place", {}),
    ("pk-using-index-not-null-in-schema", "CREATE UNIQUE INDEX CONCURRENTLY p_idx ON legacy_payments (id);\n"
     "ALTER TABLE legacy_payments ADD CONSTRAINT p_pkey PRIMARY KEY USING INDEX p_idx;", "add-primary-key-nullable-columns",
     {"schema_sql": "CREATE TABLE legacy_payments (id bigint NOT NULL);"}),
    ("pk-using-index-after-set-not-null", "ALTER TABLE users VALIDATE CONSTRAINT users_id_nn;\n"
     "ALTER TABLE users ALTER COLUMN uid SET NOT NULL;\nCREATE UNIQUE INDEX CONCURRENTLY u_idx ON users (uid);\n"
     "ALTER TABLE users ADD PRIMARY KEY USING INDEX u_idx;", "add-primary-key-nullable-columns", {}),
    ("jsonb", "ALTER TABLE orders ADD COLUMN metadata jsonb;", "prefer-jsonb", {}),
    ("plain-vacuum", "VACUUM (ANALYZE) orders;", "vacuum-full", {}),
    ("vacuum-full-false", "VACUUM (FULL false) orders;", "vacuum-full", {}),
    ("cluster-new-table", "CREATE TABLE t (a int PRIMARY KEY);\nCLUSTER t USING t_pkey;", "cluster", {}),
    ("truncate-restrict", "TRUNCATE sessions;", "truncate-cascade", {}),
    ("attach-new-table", "CREATE TABLE events_2027 (LIKE events);\n"
     "ALTER TABLE events ATTACH PARTITION events_2027 FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');",
     "attach-partition-scan", {}),
    ("attach-after-validated-check", "ALTER TABLE events_2027 VALIDATE CONSTRAINT events_2027_bounds;\n"
     "ALTER TABLE events ATTACH PARTITION events_2027 FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');",
     "attach-partition-scan", {}),
    ("set-unlogged-new-table", "CREATE TABLE staging_rows (a int);\nALTER TABLE staging_rows SET UNLOGGED;",
     "alter-table-rewrite", {}),
    ("set-fillfactor", "ALTER TABLE orders SET (fillfactor = 90);", "alter-table-rewrite", {}),
    ("refresh-matview-concurrently", "REFRESH MATERIALIZED VIEW CONCURRENTLY daily_totals;", "refresh-matview-non-concurrent",
     {}),
    ("refresh-new-matview", "CREATE MATERIALIZED VIEW mv AS SELECT 1 AS a WITH NO DATA;\nREFRESH MATERIALIZED VIEW mv;",
     "refresh-matview-non-concurrent", {}),
    ("rename-new-table-column", "CREATE TABLE t (a int);\nALTER TABLE t RENAME COLUMN a TO b;", "rename-column", {}),
    ("rename-constraint", "ALTER TABLE orders RENAME CONSTRAINT orders_fk TO orders_user_fk;", "rename-column", {}),
    ("rename-new-table", "CREATE TABLE t (a int);\nALTER TABLE t RENAME TO t2;", "rename-table", {}),
    ("rename-index", "ALTER INDEX orders_idx RENAME TO orders_user_idx;", "rename-table", {}),
    ("rename-new-schema", "CREATE SCHEMA reporting;\nALTER SCHEMA reporting RENAME TO analytics;", "rename-schema", {}),
    ("rename-value-new-enum", "CREATE TYPE mood AS ENUM ('sad');\nALTER TYPE mood RENAME VALUE 'sad' TO 'blue';",
     "rename-enum-value", {}),
    ("drop-column-added-here", "ALTER TABLE users ADD COLUMN tmp int;\nALTER TABLE users DROP COLUMN tmp;", "drop-column", {}),
    ("drop-table-created-here", "CREATE TABLE tmp_import (a int);\nDROP TABLE tmp_import;", "drop-table", {}),
    ("drop-schema-created-here", "CREATE SCHEMA scratch;\nDROP SCHEMA scratch;", "drop-schema", {}),
    ("drop-type-created-here", "CREATE TYPE mood AS ENUM ('sad');\nDROP TYPE mood;", "drop-type", {}),
    ("drop-function-created-here", "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';\nDROP FUNCTION f();",
     "drop-function", {}),
    ("drop-view-created-here", "CREATE VIEW v AS SELECT 1;\nDROP VIEW v;", "drop-view", {}),
    ("drop-sequence-created-here", "CREATE SEQUENCE s;\nDROP SEQUENCE s;", "drop-sequence", {}),
    ("drop-trigger-created-here", "CREATE TRIGGER trg BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION f();\n"
     "DROP TRIGGER trg ON orders;", "drop-trigger", {}),
    ("enum-add-value-pg12", "ALTER TYPE order_state ADD VALUE 'refunded';", "enum-add-value-in-transaction", {}),
    ("enum-add-value-no-transaction-pg11", "-- migrate:no-transaction\nALTER TYPE order_state ADD VALUE 'refunded';",
     "enum-add-value-in-transaction", {"server_version_num": 110000}),
    ("enum-add-value-up-transaction-false-pg11", "-- migrate:up transaction:false\nALTER TYPE order_state ADD VALUE 'x';",
     "enum-add-value-in-transaction", {"server_version_num": 110000}),
    ("enum-add-value-after-own-commit-pg11", "BEGIN;\nSELECT 1;\nCOMMIT;\nALTER TYPE order_state ADD VALUE 'x';",
     "enum-add-value-in-transaction", {"server_version_num": 110000}),
    ("single-alter", "ALTER TABLE orders ADD COLUMN note text;", "statements-after-access-exclusive", {}),
    ("alter-in-file-with-vacuum", "VACUUM (ANALYZE) orders;\nALTER TABLE orders ADD COLUMN note text;\nUPDATE orders SET note = '';",
     "statements-after-access-exclusive", {}),
    ("alter-in-no-transaction-file", "-- migrate:no-transaction\nALTER TABLE orders ADD COLUMN note text;\nUPDATE orders SET note = '';",
     "statements-after-access-exclusive", {}),
    ("alter-new-table-then-more", "CREATE TABLE t (a int);\nALTER TABLE t ADD COLUMN b int;\nINSERT INTO t VALUES (1, 2);",
     "statements-after-access-exclusive", {}),
    ("lock-share-mode", "LOCK TABLE accounts IN SHARE MODE;\nUPDATE accounts SET balance_cents = 0;",
     "statements-after-access-exclusive", {}),
    ("fk-with-index-after", "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;\n"
     "CREATE INDEX CONCURRENTLY orders_user_idx ON orders (user_id, created_at);", "foreign-key-without-index", {}),
    ("fk-composite-index-any-order", "CREATE TABLE t (a int, b int, PRIMARY KEY (b, a), FOREIGN KEY (a, b) REFERENCES p (x, y));",
     "foreign-key-without-index", {}),
    ("fk-index-in-schema", "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;",
     "foreign-key-without-index", {"schema_sql": "CREATE TABLE orders (user_id bigint);\nCREATE INDEX o_u ON orders (user_id);"}),
    ("valid-allow", "-- migrate:allow create-index-non-concurrent tiny table\nCREATE INDEX i ON tiny (a);", "directive-invalid", {}),
    ("other-tool-directive", "-- migrate:up\nCREATE TABLE t (a int);", "directive-invalid", {}),
]


def _params(table: list[tuple]) -> list:
    return [pytest.param(*case[1:], id=case[0]) for case in table]


@pytest.mark.parametrize(("sql", "rule", "severity", "names", "kwargs"), _params(DANGEROUS))
def test_dangerous_statement_reports_rule_with_severity(sql: str, rule: str, severity: str, names: list, kwargs: dict) -> None:
    assert finding(sql, rule, **kwargs).severity == severity


@pytest.mark.parametrize(("sql", "rule", "severity", "names", "kwargs"), _params(DANGEROUS))
def test_fix_uses_the_statements_own_names(sql: str, rule: str, severity: str, names: list, kwargs: dict) -> None:
    fix = finding(sql, rule, **kwargs).fix
    assert [n for n in names if n not in fix] == [], fix


@pytest.mark.parametrize(("sql", "rule", "severity", "names", "kwargs"), _params(DANGEROUS))
def test_message_is_one_line(sql: str, rule: str, severity: str, names: list, kwargs: dict) -> None:
    assert "\n" not in finding(sql, rule, **kwargs).message


@pytest.mark.parametrize(("sql", "rule", "kwargs"), _params(SAFE))
def test_safe_statement_does_not_report_rule(sql: str, rule: str, kwargs: dict) -> None:
    assert rule not in rules_of(sql, **kwargs)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_has_a_dangerous_case(rule: str) -> None:
    assert rule in {case[2] for case in DANGEROUS}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_has_a_safe_case(rule: str) -> None:
    assert rule in {case[2] for case in SAFE}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_rule_registry_entry_is_well_formed(rule: str) -> None:
    severity, description = RULES[rule]
    assert severity in ("blocker", "warning") and description and "\n" not in description
    assert rule == rule.lower() and " " not in rule and "_" not in rule


def test_message_names_the_table_and_column() -> None:
    message = finding("ALTER TABLE users ALTER COLUMN email SET NOT NULL;", "set-not-null-without-check").message
    assert "users.email" in message


def test_volatile_default_fix_never_adds_a_not_null_column_without_default() -> None:
    fix = finding("ALTER TABLE users ADD COLUMN public_id uuid NOT NULL DEFAULT gen_random_uuid();", "add-column-volatile-default").fix
    assert "ADD COLUMN public_id uuid NOT NULL" not in fix


def test_default_volatility_comes_from_the_function_not_the_text() -> None:
    assert "add-column-volatile-default" not in rules_of("ALTER TABLE t ADD COLUMN note text DEFAULT 'random()';")


# -- directives -------------------------------------------------------------

ALLOWED_INDEX = "-- migrate:allow create-index-non-concurrent feature_flags has 20 rows\nCREATE INDEX ff_idx ON feature_flags (name);"


def test_allow_directive_carries_its_reason() -> None:
    assert finding(ALLOWED_INDEX, "create-index-non-concurrent").allowed_reason == "feature_flags has 20 rows"


def test_allowed_finding_does_not_block_the_gate() -> None:
    assert not is_blocked(lint_sql(ALLOWED_INDEX))


def test_allowed_finding_keeps_its_severity() -> None:
    assert finding(ALLOWED_INDEX, "create-index-non-concurrent").severity == "blocker"


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("CREATE INDEX ff_idx -- migrate:allow create-index-non-concurrent tiny\n ON feature_flags (name);", id="inside"),
        pytest.param("CREATE INDEX ff_idx ON feature_flags (name); -- migrate:allow create-index-non-concurrent tiny", id="trailing"),
        pytest.param("/* migrate:allow create-index-non-concurrent tiny */\nCREATE INDEX ff_idx ON feature_flags (name);", id="c-comment"),
        pytest.param("/*\n * why: tiny table\n * migrate:allow create-index-non-concurrent tiny\n */\nCREATE INDEX ff_idx ON ff (name);", id="block"),
        pytest.param("-- migrate:allow drop-column,create-index-non-concurrent tiny\nCREATE INDEX ff_idx ON ff (name);", id="rule-list"),
    ],
)
def test_allow_directive_positions(sql: str) -> None:
    assert finding(sql, "create-index-non-concurrent").allowed_reason == "tiny"


def test_allow_directive_applies_to_its_statement_only() -> None:
    sql = ALLOWED_INDEX + "\nCREATE INDEX orders_idx ON orders (status);"
    assert is_blocked(lint_sql(sql))


def test_allow_directive_applies_to_its_rule_only() -> None:
    sql = "-- migrate:allow drop-column not the right rule\nCREATE INDEX i ON orders (status);"
    assert finding(sql, "create-index-non-concurrent").allowed_reason is None


def test_allow_without_reason_does_not_suppress() -> None:
    sql = "-- migrate:allow create-index-non-concurrent\nCREATE INDEX i ON orders (status);"
    assert finding(sql, "create-index-non-concurrent").allowed_reason is None


def test_allow_with_unknown_rule_is_reported() -> None:
    sql = "-- migrate:allow create-index-concurrently typo in the id\nCREATE INDEX i ON orders (status);"
    assert "create-index-concurrently" in finding(sql, "directive-invalid").message


def test_directive_finding_points_at_the_comment_line() -> None:
    sql = "SELECT 1;\n\n-- migrate:allow nope because\nCREATE INDEX i ON orders (status);"
    assert finding(sql, "directive-invalid").line == 3


CLEANUP_CASES = [
    pytest.param("ALTER TABLE users DROP COLUMN legacy_flags;", "drop-column", id="drop-column"),
    pytest.param("DROP TABLE sessions;", "drop-table", id="drop-table"),
    pytest.param("DROP FUNCTION orders_audit_fn();", "drop-function", id="drop-function"),
    pytest.param("ALTER TABLE users RENAME COLUMN name TO legacy_name;", "rename-column", id="rename-column"),
    pytest.param("ALTER TABLE accounts RENAME TO customers;", "rename-table", id="rename-table"),
    pytest.param("ALTER TYPE order_state RENAME VALUE 'canceled' TO 'cancelled';", "rename-enum-value", id="rename-enum-value"),
]


@pytest.mark.parametrize(("sql", "rule"), CLEANUP_CASES)
def test_cleanup_directive_turns_renames_and_drops_into_warnings(sql: str, rule: str) -> None:
    assert finding("-- migrate:cleanup\n" + sql, rule).severity == "warning"


@pytest.mark.parametrize(("sql", "rule"), CLEANUP_CASES)
def test_cleanup_argument_true_without_directive(sql: str, rule: str) -> None:
    assert finding(sql, rule, cleanup=True).severity == "warning"


def test_cleanup_directive_after_the_last_statement_counts() -> None:
    sql = "ALTER TABLE users DROP COLUMN legacy_flags;\n\n-- migrate:cleanup\n"
    assert finding(sql, "drop-column").severity == "warning"


@pytest.mark.parametrize(
    "comment",
    [pytest.param("/* migrate:cleanup */", id="c-comment"), pytest.param("SELECT 1; -- migrate:cleanup", id="trailing")],
)
def test_file_directives_count_only_on_a_line_of_their_own(comment: str) -> None:
    sql = f"{comment}\nALTER TABLE users DROP COLUMN legacy_flags;"
    assert finding(sql, "drop-column").severity == "blocker"


def test_cleanup_argument_false_overrides_directive() -> None:
    sql = "-- migrate:cleanup\nALTER TABLE users DROP COLUMN legacy_flags;"
    assert finding(sql, "drop-column", cleanup=False).severity == "blocker"


def test_cleanup_does_not_relax_lock_rules() -> None:
    sql = "-- migrate:cleanup\nDROP INDEX orders_status_idx;"
    assert finding(sql, "drop-index-non-concurrent").severity == "blocker"


# -- positions and statement text ---------------------------------------------

POSITIONS = (
    "-- héllo wörld: ünïcode before the statements ✓\n"  # 1
    "/* a block comment\n"  # 2
    "   spanning lines — 国家 */\n"  # 3
    "\n"  # 4
    "CREATE INDEX i ON \"Ørders\" (a); -- trailing é\n"  # 5
    "SELECT 'ééé';\n"  # 6
    "-- migrate:allow drop-column gone since v2 — ok\n"  # 7
    "ALTER TABLE users\n"  # 8
    "  DROP COLUMN legacy;\n"  # 9
)


@pytest.mark.parametrize(("rule", "line"), [("create-index-non-concurrent", 5), ("drop-column", 8)])
def test_line_numbers_count_comments_and_non_ascii_text(rule: str, line: int) -> None:
    assert finding(POSITIONS, rule).line == line


def test_statement_text_excludes_surrounding_comments() -> None:
    assert finding(POSITIONS, "create-index-non-concurrent").statement == 'CREATE INDEX i ON "Ørders" (a)'


def test_statement_text_of_multiline_statement() -> None:
    assert finding(POSITIONS, "drop-column").statement == "ALTER TABLE users\n  DROP COLUMN legacy"


def test_allow_reason_keeps_non_ascii_text() -> None:
    assert finding(POSITIONS, "drop-column").allowed_reason == "gone since v2 — ok"


def test_last_statement_without_semicolon() -> None:
    assert finding("SELECT 1;\nDROP TABLE sessions -- bye\n", "drop-table").statement == "DROP TABLE sessions"


def test_long_statement_is_shortened() -> None:
    columns = ", ".join(f"column_number_{i}" for i in range(40))
    assert len(finding(f"CREATE INDEX i ON orders ({columns});", "create-index-non-concurrent").statement) <= 200


def test_path_is_carried() -> None:
    assert finding("DROP TABLE sessions;", "drop-table", path="m/001.sql").path == "m/001.sql"


def test_to_dict_has_the_report_keys() -> None:
    data = finding("DROP TABLE sessions;", "drop-table", path="m/001.sql").to_dict()
    assert set(data) == {"file", "line", "statement", "rule", "severity", "message", "fix", "allowed_reason"}


def test_findings_are_in_file_order() -> None:
    sql = "DROP TABLE a;\nALTER TABLE b DROP COLUMN c;\nVACUUM FULL d;"
    assert [f.line for f in lint_sql(sql, cleanup=False) if f.rule != "statements-after-access-exclusive"] == [1, 2, 3]


def test_empty_file_has_no_findings() -> None:
    assert lint_sql("-- nothing to do\n") == []


# -- syntax errors --------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "line"),
    [
        pytest.param("SELEC 1;", 1, id="first-line"),
        pytest.param("SELECT 1;\n-- é ü 国家\nALTER TABLE users ADD COLUMN;\n", 3, id="after-non-ascii"),
        pytest.param("CREATE TABLE t (\n  a int,\n  b int,,\n);", 3, id="inside-statement"),
    ],
)
def test_syntax_error_carries_its_line(sql: str, line: int) -> None:
    with pytest.raises(LintSyntaxError) as caught:
        lint_sql(sql)
    assert caught.value.line == line


def test_syntax_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        lint_sql("ALTER TABLE;")


# -- paths ------------------------------------------------------------------------


def test_lint_paths_reads_a_directory_with_its_layout_and_sorts(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "002_b.sql").write_text("DROP TABLE b;\n", encoding="utf-8")  # not a migration of this folder
    (tmp_path / "002_a.sql").write_text("DROP TABLE a2;\n", encoding="utf-8")
    (tmp_path / "001_a.sql").write_text("SELECT 1;\nDROP TABLE a;\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("DROP TABLE c;", encoding="utf-8")
    found = lint_paths([str(tmp_path)])
    assert [(Path(f.path).name, f.line) for f in found] == [("001_a.sql", 2), ("002_a.sql", 1)]


def test_lint_paths_accepts_files(tmp_path: Path) -> None:
    (tmp_path / "001.sql").write_text("DROP TABLE a;\n", encoding="utf-8")
    assert [f.rule for f in lint_paths([str(tmp_path / "001.sql")])] == ["drop-table"]


def test_syntax_error_message_names_the_line() -> None:
    with pytest.raises(LintSyntaxError, match=r"^line 2: syntax error"):
        lint_sql("SELECT 1;\nDROP TABL a;\n")


def test_lint_paths_syntax_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("SELECT 1;\nDROP TABL a;\n", encoding="utf-8")
    with pytest.raises(LintSyntaxError) as caught:
        lint_paths([str(tmp_path)])
    assert (caught.value.path.endswith("001_a.sql"), caught.value.line) == (True, 2)


# -- corpus -----------------------------------------------------------------------

STATIC_ENTRIES = sorted(name for name, spec in EXPECTED.items() if not spec["needs_db"])


def test_corpus_is_large_and_balanced() -> None:
    verdicts = [spec["verdict"] for spec in EXPECTED.values()]
    assert len(verdicts) >= 60 and min(verdicts.count("block"), verdicts.count("pass")) >= 25


def test_every_corpus_file_has_an_expected_entry() -> None:
    assert sorted(p.stem for p in CORPUS.glob("*.sql")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_entry_is_complete(name: str) -> None:
    spec = EXPECTED[name]
    assert spec["verdict"] in ("block", "pass") and set(spec["rules"]) <= set(RULES) and spec["setup"].strip()


def corpus_findings(name: str) -> list[Finding]:
    """The entry's findings; after its `before` migration when it has one (one pending set)."""
    from bot.migrations.lint import lint_file
    from bot.migrations.lint_parse import parsed_or_raise
    from bot.migrations.lint_types import Ctx

    text = (CORPUS / f"{name}.sql").read_text(encoding="utf-8")
    if "before" not in EXPECTED[name]:
        return lint_sql(text)
    ctx = Ctx()
    lint_file(parsed_or_raise(EXPECTED[name]["before"]), ctx, same_set=True)
    return lint_file(parsed_or_raise(text), ctx, same_set=True)


@pytest.mark.parametrize("name", STATIC_ENTRIES)
def test_corpus_verdict_matches_expected(name: str) -> None:
    assert ("block" if is_blocked(corpus_findings(name)) else "pass") == EXPECTED[name]["verdict"]


@pytest.mark.parametrize("name", STATIC_ENTRIES)
def test_corpus_rules_match_expected(name: str) -> None:
    assert sorted({f.rule for f in corpus_findings(name)}) == sorted(EXPECTED[name]["rules"])


# -- the pending set: one model, one pass, each file on its own ----------------------------------------------

from bot.migrations import sqlfile  # noqa: E402
from bot.migrations.source import build  # noqa: E402
from bot.workflow.lintgate import lint_checks, overrule  # noqa: E402
from bot.workflow.report import Check, Status  # noqa: E402
from bot.workflow.scans import StatementEvidence, TableEvidence, TableSize  # noqa: E402


def migrations(*texts: str) -> list:
    return [build(f"{i:04d}", f"m{i}", f"{i:04d}_m{i}.sql", text) for i, text in enumerate(texts, 1)]


def gate_blockers(*texts: str, schema_sql: str = "") -> list[tuple[str, str]]:
    return [(c.migration, c.name) for c in lint_checks(migrations(*texts), schema_sql) if c.status is Status.BLOCKER]


def test_files_without_a_final_semicolon_are_never_joined() -> None:
    """Issue 10: two files ending without `;` made the gate's lint crash with a syntax error at a made-up line."""
    checks = lint_checks(migrations("CREATE TABLE a (id int)", "SELECT 1", "DROP TABLE sessions"))
    assert [(c.migration, c.name) for c in checks] == [("0001_m1", "lint.0001_m1"), ("0002_m2", "lint.0002_m2"),
                                                      ("0003_m3", "lint.drop-table")]


@pytest.mark.parametrize("sql", [
    "-- migrate:no-transaction\nALTER TABLE orders ADD CONSTRAINT c1 CHECK (total >= 0) NOT VALID;\n"
    "ALTER TABLE orders VALIDATE CONSTRAINT c1;",
    "BEGIN;\nALTER TABLE orders ADD CONSTRAINT c1 CHECK (total >= 0) NOT VALID;\nCOMMIT;\n"
    "BEGIN;\nALTER TABLE orders VALIDATE CONSTRAINT c1;\nCOMMIT;",
    "BEGIN;\nALTER TABLE orders ADD CONSTRAINT c1 CHECK (total >= 0) NOT VALID;\nCOMMIT;\n"
    "ALTER TABLE orders VALIDATE CONSTRAINT c1;",
], ids=["no-transaction-file", "own-blocks", "after-own-commit"])
def test_validate_in_its_own_transaction_is_the_safe_pattern(sql: str) -> None:
    assert "validate-constraint-same-migration" not in rules_of(sql)


def test_validate_inside_the_same_own_block_is_flagged() -> None:
    sql = "BEGIN;\nALTER TABLE orders ADD CONSTRAINT c1 CHECK (total >= 0) NOT VALID;\n" \
          "ALTER TABLE orders VALIDATE CONSTRAINT c1;\nCOMMIT;"
    assert finding(sql, "validate-constraint-same-migration").line == 3


def test_validate_in_a_later_migration_of_the_set_is_not_flagged() -> None:
    assert gate_blockers("ALTER TABLE orders ADD CONSTRAINT c1 CHECK (total >= 0) NOT VALID;",
                         "ALTER TABLE orders VALIDATE CONSTRAINT c1;") == []


SET_TABLE = "CREATE TABLE coupons (id bigint PRIMARY KEY, user_id bigint, code text);"


@pytest.mark.parametrize("later", [
    "CREATE INDEX coupons_user_idx ON coupons (user_id);",
    "CREATE UNIQUE INDEX coupons_code_key ON coupons (code);",
    "ALTER TABLE coupons ADD CONSTRAINT coupons_user_fk FOREIGN KEY (user_id) REFERENCES users (id);",
    "ALTER TABLE coupons ADD CONSTRAINT coupons_code_key UNIQUE (code);",
    "ALTER TABLE coupons ALTER COLUMN code SET NOT NULL;",
    "ALTER TABLE coupons ADD COLUMN plan text NOT NULL;",
    "ALTER TABLE coupons ALTER COLUMN user_id TYPE text;",
    "ALTER TABLE coupons RENAME COLUMN code TO voucher;",
    "DROP TABLE coupons;",
], ids=["index", "unique-index", "fk", "unique", "set-not-null", "not-null-column", "type", "rename", "drop"])
def test_a_table_created_earlier_in_the_pending_set_is_new_for_the_later_migrations(later: str) -> None:
    assert gate_blockers(SET_TABLE, later) == []


def test_create_table_if_not_exists_of_an_existing_table_is_not_new() -> None:
    found = gate_blockers("CREATE TABLE IF NOT EXISTS orders (id bigint);", "CREATE INDEX o_idx ON orders (status);",
                          schema_sql="CREATE TABLE orders (id bigint, status text);")
    assert found == [("0002_m2", "lint.create-index-non-concurrent")]


def test_lint_dir_lints_each_file_as_the_next_deploy_after_the_history(tmp_path: Path) -> None:
    """A table from an earlier file is on prod, with rows, when a later file indexes it; unless asked for one set."""
    (tmp_path / "0001_coupons.sql").write_text(SET_TABLE, encoding="utf-8")
    (tmp_path / "0002_idx.sql").write_text("CREATE INDEX coupons_user_idx ON coupons (user_id);", encoding="utf-8")
    assert [f.rule for f in lint_paths([str(tmp_path)])] == ["create-index-non-concurrent"]
    assert lint_paths([str(tmp_path)], same_set=True) == []


def test_lint_dir_knows_columns_from_earlier_files(tmp_path: Path) -> None:
    (tmp_path / "0001_users.sql").write_text("CREATE TABLE users (id bigint, name varchar(100));", encoding="utf-8")
    (tmp_path / "0002_wider.sql").write_text("ALTER TABLE users ALTER COLUMN name TYPE varchar(200);", encoding="utf-8")
    assert lint_paths([str(tmp_path)]) == []  # known varchar(100) -> varchar(200): no rewrite, nothing unverified


@pytest.mark.parametrize(("sql", "expected"), [
    ("DROP VIEW active_users;\nCREATE VIEW active_users AS SELECT id FROM users WHERE active;", set()),
    ("DROP VIEW IF EXISTS active_users;\nCREATE OR REPLACE VIEW active_users AS SELECT 1 AS id;", set()),
    ("DROP MATERIALIZED VIEW daily;\nCREATE MATERIALIZED VIEW daily AS SELECT 1 AS n;", set()),
    ("DROP FUNCTION total(int);\nCREATE FUNCTION total(int) RETURNS bigint LANGUAGE sql AS 'SELECT 1::bigint';", set()),
    ("DROP TRIGGER audit ON orders;\nCREATE TRIGGER audit AFTER UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION f();",
     set()),
    ("DROP VIEW active_users, old_users;\nCREATE VIEW active_users AS SELECT 1 AS id;", {"drop-view"}),
    ("-- migrate:no-transaction\nDROP VIEW active_users;\nCREATE VIEW active_users AS SELECT 1 AS id;", {"drop-view"}),
    ("BEGIN;\nDROP VIEW active_users;\nCOMMIT;\nCREATE VIEW active_users AS SELECT 1 AS id;", {"drop-view"}),
], ids=["view", "view-if-exists-or-replace", "matview", "function", "trigger", "one-of-two-not-recreated",
        "autocommit-window", "other-transaction"])
def test_drop_then_create_again_in_the_same_transaction_is_not_a_destructive_drop(sql: str, expected: set) -> None:
    assert {f.rule for f in lint_sql(sql) if f.severity == "blocker"} == expected


def test_drop_view_cascade_recreated_warns_about_its_dependents() -> None:
    f = finding("DROP VIEW active_users CASCADE;\nCREATE VIEW active_users AS SELECT 1 AS id;", "drop-view")
    assert f.severity == "warning" and "CASCADE also drops whatever depends on it" in f.message


def test_lint_time_is_linear_in_the_history(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted, not timed: each file is parsed once when read; linting the set parses nothing again."""
    calls: list[str] = []
    real = sqlfile.parse_sql
    monkeypatch.setattr(sqlfile, "parse_sql", lambda text: calls.append(text) or real(text))
    for n in (20, 40):
        calls.clear()
        built = migrations(*[f"CREATE TABLE t{i} (id int);\nCREATE INDEX t{i}_idx ON t{i} (id)" for i in range(n)])
        assert len(calls) == n
        lint_checks(built, schema_sql="CREATE TABLE users (id bigint);")
        assert len(calls) == n + 1  # the schema description, once


# -- layouts: what a forward migration is, for lint DIR as for the gate -----------------------------------------


@pytest.mark.parametrize(("files", "linted"), [
    ({"000001_users.up.sql": "CREATE TABLE users (id int);", "000001_users.down.sql": "DROP TABLE users;",
      "000002_idx.up.sql": "CREATE INDEX CONCURRENTLY users_id_idx ON users (id);",
      "000002_idx.down.sql": "DROP INDEX users_id_idx;"}, ["000001_users.up.sql", "000002_idx.up.sql"]),
    ({"20240101_a.sql": "-- migrate:up\nCREATE TABLE a (id int);\n-- migrate:down\nDROP TABLE a;\n"},
     ["20240101_a.sql"]),
    ({"V1__a.sql": "CREATE TABLE a (id int);", "U1__a.sql": "DROP TABLE a;", "R__views.sql": "DROP VIEW v;"},
     ["V1__a.sql"]),
    ({"20240101_a/migration.sql": "CREATE TABLE a (id int);", "20240101_a/down.sql": "DROP TABLE a;"},
     ["migration.sql"]),
], ids=["golang-migrate", "dbmate", "flyway", "prisma"])
def test_lint_dir_lints_forward_migrations_only(tmp_path: Path, files: dict[str, str], linted: list[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fix_pg import write_migrations

    seen: list[str] = []
    import bot.migrations.lint as lint_module

    real = lint_module.lint_file
    monkeypatch.setattr(lint_module, "lint_file", lambda parsed, ctx, **kw: seen.append(kw["path"]) or real(
        parsed, ctx, **kw))
    root = write_migrations(tmp_path / "m", files)
    assert [f for f in lint_paths([str(root)]) if f.severity == "blocker"] == []  # every down drops something
    assert [Path(p).name for p in seen] == linted


# -- the trace's measurements overrule static guesses (pure) ---------------------------------------------------


def _blocker(line: int = 2) -> Check:
    return Check("lint.create-index-non-concurrent", Status.BLOCKER, "0001_m: CREATE INDEX …", migration="0001_m",
                 details={"line": line, "rule": "create-index-non-concurrent"})


def _evidence(rows: int | None = 0, existed: bool = False, line: int = 2) -> StatementEvidence:
    return StatementEvidence("0001_m", line, (TableEvidence("dyn", "dyn", rows, existed),), 0.001)


@pytest.mark.parametrize(("evidence", "prod", "status"), [
    ([_evidence()], {}, Status.WARNING),
    ([_evidence(rows=None)], {}, Status.BLOCKER),
    ([_evidence(rows=3)], {}, Status.BLOCKER),
    ([_evidence(existed=True)], {}, Status.BLOCKER),
    ([_evidence()], {"dyn": TableSize(rows=0, bytes=8192)}, Status.BLOCKER),
    ([_evidence(line=3)], {}, Status.BLOCKER),
    ([], {}, Status.BLOCKER),
], ids=["empty-and-absent", "rows-unknown", "has-rows", "existed-before-the-set", "on-prod", "other-statement",
        "not-measured"])
def test_overrule_downgrades_only_what_the_trace_disproved(evidence: list, prod: dict, status: Status) -> None:
    (check,) = overrule([_blocker()], evidence, prod)
    assert check.status is status


def test_overrule_keeps_other_checks_and_their_order() -> None:
    others = [Check("trace.scan", Status.BLOCKER, "x", migration="0001_m", details={"line": 2}),
              Check("lint.prefer-jsonb", Status.WARNING, "y", migration="0001_m", details={"line": 2})]
    checks = [others[0], _blocker(), others[1]]
    assert [c.status for c in overrule(checks, [_evidence()], {})] == [Status.BLOCKER, Status.WARNING, Status.WARNING]
