-- migrate:cleanup
DROP TRIGGER IF EXISTS orders_audit ON orders;
DROP FUNCTION IF EXISTS orders_audit_fn();
DROP VIEW IF EXISTS active_users;
DROP SEQUENCE IF EXISTS invoice_numbers;
