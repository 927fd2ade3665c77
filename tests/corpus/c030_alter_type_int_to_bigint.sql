-- owner ids will pass 2^31 next year
ALTER TABLE accounts ALTER COLUMN owner_id TYPE bigint;
