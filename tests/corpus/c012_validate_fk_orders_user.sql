-- orders_user_fk was added NOT VALID in the previous migration
ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;
