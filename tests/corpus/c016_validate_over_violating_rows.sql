-- orders_total_positive was added NOT VALID last week
ALTER TABLE orders VALIDATE CONSTRAINT orders_total_positive;
