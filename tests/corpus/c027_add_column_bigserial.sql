ALTER TABLE events_log ADD COLUMN seq bigserial;
