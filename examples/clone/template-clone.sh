#!/usr/bin/env bash
# A migrate-bot clone script (refresh.method = "command"): copy a prod snapshot that lives on the staging
# server into the database migrate-bot asks for, and print where it is.
#
#   [refresh]
#   method = "command"
#   command = "/opt/migrate-bot/template-clone.sh"
#   timeout_s = 3600
#
# The contract (README, "Refresh through your clone engine"):
#   in    MIGRATE_BOT_TARGET_DB          the database to make (the bot drops it if anything fails)
#         MIGRATE_BOT_STAGING_HOST/PORT/USER, MIGRATE_BOT_MAINTENANCE_DB   where staging's server is
#         MIGRATE_BOT_STAGING_DB, MIGRATE_BOT_PROD_DB, MIGRATE_BOT_RUN_ID, MIGRATE_BOT_TIMEOUT_S, PGAPPNAME
#         No password: libpq finds it in ~/.pgpass ($PGPASSFILE), or fetch it here from your secret store.
#   out   the LAST line on stdout: the URL (or just the name) of the database made, without a password;
#         optionally, earlier, MIGRATE_BOT_DATA_AS_OF=<ISO 8601 time> — when the snapshot's data is from.
#         Everything else (stdout and stderr) is shown, redacted, in the refresh's report.
#   exit  0 = made; anything else = failed: nothing is swapped, MIGRATE_BOT_TARGET_DB is dropped.
#   time  refresh.timeout_s, then SIGTERM (and SIGKILL 5 s later) to this script's whole process group.
#
# This example's engine is the simplest there is: the snapshot is already a database on the staging server
# (CLONE_SOURCE_DB, default "<prod db>_snapshot" — say, restored there nightly by pgBackRest or WAL-G, or a
# promoted replica's database), and the copy is CREATE DATABASE … TEMPLATE. Put your engine's call where it
# says so: refresh the snapshot first, or make the copy with your engine instead, as long as the copy ends up
# on the staging server under the name migrate-bot asked for, owned by the staging user.
set -euo pipefail

target="${MIGRATE_BOT_TARGET_DB:?run me from migrate-bot: refresh.method = \"command\"}"
source_db="${CLONE_SOURCE_DB:-${MIGRATE_BOT_PROD_DB}_snapshot}"
export PGHOST="${MIGRATE_BOT_STAGING_HOST}" PGPORT="${MIGRATE_BOT_STAGING_PORT}" PGUSER="${MIGRATE_BOT_STAGING_USER}"
export PGDATABASE="${MIGRATE_BOT_MAINTENANCE_DB:-postgres}" PGCONNECT_TIMEOUT=10

# --- your engine here (e.g. `pgbackrest --stanza=main restore …` into the snapshot, then wait for it) ---

# A template must have no other sessions while it is copied: say who is on it, instead of PostgreSQL's
# "source database is being accessed by other users".
busy=$(psql -X -A -t -v ON_ERROR_STOP=1 -v db="$source_db" <<'SQL'
SELECT string_agg(format('pid %s %s (%s)', pid, coalesce(nullif(application_name, ''), backend_type), usename), ', ')
FROM pg_stat_activity WHERE datname = :'db' AND pid <> pg_backend_pid();
SQL
)
if [[ -n "$busy" ]]; then
    echo "snapshot ${source_db} is in use: ${busy}" >&2
    exit 3
fi

echo "copying snapshot ${source_db} into ${target}" >&2
started=$(date +%s)
psql -X -q -v ON_ERROR_STOP=1 -v target="$target" -v source="$source_db" <<'SQL'
CREATE DATABASE :"target" TEMPLATE :"source";
SQL
echo "copied in $(( $(date +%s) - started ))s" >&2

# When the snapshot's data is from, if your engine knows (here: an optional variable your restore job sets).
if [[ -n "${CLONE_SNAPSHOT_AT:-}" ]]; then
    echo "MIGRATE_BOT_DATA_AS_OF=${CLONE_SNAPSHOT_AT}"
fi
echo "postgresql://${PGUSER}@${PGHOST}:${PGPORT}/${target}"
