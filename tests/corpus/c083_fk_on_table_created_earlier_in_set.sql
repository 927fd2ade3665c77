ALTER TABLE coupons ADD CONSTRAINT coupons_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id);
CREATE INDEX coupons_user_id_idx ON coupons (user_id);
