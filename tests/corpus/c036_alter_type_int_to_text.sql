ALTER TABLE accounts ALTER COLUMN external_ref TYPE text;
