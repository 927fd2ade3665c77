-- migrate:cleanup
ALTER TABLE users DROP COLUMN IF EXISTS legacy_flags;
