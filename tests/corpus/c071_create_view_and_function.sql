CREATE OR REPLACE VIEW active_users AS
    SELECT id, email FROM users WHERE email IS NOT NULL;
CREATE OR REPLACE FUNCTION user_count() RETURNS bigint
    LANGUAGE sql STABLE AS $$ SELECT count(*) FROM users $$;
