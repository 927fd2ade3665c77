DROP TYPE order_state;
DROP SCHEMA billing CASCADE;
