-- Orders whose user no longer exists keep their history but lose the dangling link,
-- then the FK is validated (SHARE UPDATE EXCLUSIVE: reads and writes go on).
UPDATE orders o SET user_id = NULL
WHERE o.user_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = o.user_id);
ALTER TABLE orders VALIDATE CONSTRAINT orders_user_id_fkey;
