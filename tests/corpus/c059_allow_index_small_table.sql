-- feature_flags has ~20 rows: a plain index build is instant
-- migrate:allow create-index-non-concurrent feature_flags holds 20 rows
CREATE INDEX feature_flags_name_idx ON feature_flags (name);
