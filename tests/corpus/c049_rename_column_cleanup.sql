-- migrate:cleanup
-- every reader switched to display_name in release 2024.06
ALTER TABLE users RENAME COLUMN name TO legacy_name;
