ALTER TABLE orders
    ALTER COLUMN status SET DEFAULT 'pending',
    ALTER COLUMN created_at DROP NOT NULL;
