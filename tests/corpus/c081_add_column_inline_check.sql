ALTER TABLE orders ADD COLUMN discount numeric(10,2) CHECK (discount >= 0);
