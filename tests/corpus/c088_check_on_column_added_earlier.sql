ALTER TABLE orders ADD COLUMN discount numeric(10,2);
ALTER TABLE orders ADD CONSTRAINT orders_discount_nonnegative CHECK (discount >= 0);
