-- orders_pkey is bloated after the 2024 purge
REINDEX TABLE orders;
