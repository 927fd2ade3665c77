ALTER TABLE orders ADD COLUMN metadata json;
