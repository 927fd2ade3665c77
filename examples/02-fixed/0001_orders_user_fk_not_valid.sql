-- The FK's column gets an index first, built without blocking writes
-- (this file runs statement by statement: CONCURRENTLY cannot run in a transaction).
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_user_id_idx ON orders (user_id);
-- New rows are checked at once; existing rows are validated in the next migration.
ALTER TABLE orders
    ADD CONSTRAINT orders_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;
