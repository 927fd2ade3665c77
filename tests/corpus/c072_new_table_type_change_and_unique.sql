CREATE TABLE coupons_v2 (id bigint PRIMARY KEY, code varchar(20) NOT NULL, discount integer);
ALTER TABLE coupons_v2 ALTER COLUMN discount TYPE numeric(5,2);
ALTER TABLE coupons_v2 ADD CONSTRAINT coupons_v2_code_key UNIQUE (code);
