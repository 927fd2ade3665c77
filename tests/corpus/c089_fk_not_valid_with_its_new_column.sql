ALTER TABLE orders
    ADD COLUMN coupon_user_id bigint,
    ADD CONSTRAINT orders_coupon_user_id_fkey FOREIGN KEY (coupon_user_id) REFERENCES users (id) NOT VALID;
CREATE INDEX CONCURRENTLY orders_coupon_user_id_idx ON orders (coupon_user_id);
