-- A small app schema for the demo: users and their orders.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS citext;
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE TABLE users (
    id         bigserial PRIMARY KEY,
    email      citext NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id         bigserial PRIMARY KEY,
    user_id    bigint,
    total      numeric(12, 2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO users (email) SELECT 'user' || g || '@example.com' FROM generate_series(1, 2000) g;
INSERT INTO orders (user_id, total) SELECT 1 + (g % 2000), (g % 500) + 0.99 FROM generate_series(1, 20000) g;
-- three orders whose user was deleted long ago: the FK in 01-orphaned-fk trips over them
INSERT INTO orders (user_id, total) VALUES (900001, 10), (900002, 20), (900003, 30);
