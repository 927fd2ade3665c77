CREATE UNIQUE INDEX CONCURRENTLY legacy_payments_id_idx ON legacy_payments (id);
ALTER TABLE legacy_payments ADD CONSTRAINT legacy_payments_pkey PRIMARY KEY USING INDEX legacy_payments_id_idx;
