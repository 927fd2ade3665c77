DROP VIEW order_totals;
CREATE VIEW order_totals AS
    SELECT user_id, count(*) AS orders, sum(total) AS total, max(created_at) AS last_order_at
    FROM orders GROUP BY user_id;
