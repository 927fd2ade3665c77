ALTER TABLE orders ADD COLUMN currency char(3);
UPDATE orders SET currency = 'EUR' WHERE currency IS NULL;
