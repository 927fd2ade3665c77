-- Orders: audit log table + dashboard index
CREATE TABLE order_audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id bigint NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    change jsonb NOT NULL
);
CREATE INDEX order_audit_order_id_idx ON order_audit (order_id);
CREATE INDEX orders_status_created_idx ON orders (status, created_at);
