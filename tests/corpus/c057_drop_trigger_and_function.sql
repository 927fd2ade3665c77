DROP TRIGGER orders_audit ON orders;
DROP FUNCTION orders_audit_fn();
