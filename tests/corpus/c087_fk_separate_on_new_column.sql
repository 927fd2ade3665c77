ALTER TABLE orders ADD COLUMN coupon_user_id bigint;
ALTER TABLE orders ADD CONSTRAINT orders_coupon_user_id_fkey
    FOREIGN KEY (coupon_user_id) REFERENCES users (id);
