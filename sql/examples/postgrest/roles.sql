-- PostgREST roles for the example schema; run as a superuser after outseta_app.sql.
--
--   authenticator  the role PostgREST logs in as; it can only switch to the two below
--   anon           requests without a (usable) token: may read, RLS shows nothing
--   authenticated  requests with a valid Outseta token (outseta_pre_request switches)
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticator') THEN
        CREATE ROLE authenticator LOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN;
    END IF;
END $$;
GRANT anon, authenticated TO authenticator;

GRANT USAGE ON SCHEMA public TO anon, authenticated;
GRANT SELECT ON todos, documents TO anon;
GRANT SELECT, INSERT, UPDATE, DELETE ON todos, documents TO authenticated;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO authenticated;

-- Who the database thinks the request is: GET /rpc/whoami
CREATE FUNCTION whoami() RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object('role', current_user, 'sub', outseta_sub(),
                             'account', outseta_account_uid())
$$;

-- The extension's PostgREST settings for this database (superuser-only settings).
DO $$ BEGIN
    EXECUTE format('ALTER DATABASE %I SET outseta_auth.authenticated_role = %L',
                   current_database(), 'authenticated');
    -- Same-origin requests (the page and the API on one origin) always use the cookie.
    -- List your frontend's origin(s) when it calls the API from another origin (or a proxy
    -- rewrites Host): a cookie sent with any other Origin is ignored (CSRF).
    EXECUTE format('ALTER DATABASE %I SET outseta_auth.cookie_origins = %L',
                   current_database(), 'https://app.example.com');
    -- Also accept the token in a header (a "Bearer " prefix is stripped).
    EXECUTE format('ALTER ROLE authenticator IN DATABASE %I SET outseta_auth.token_header = %L',
                   current_database(), 'x-outseta-token');
END $$;
-- And where the keys come from, e.g.:
--   ALTER DATABASE app SET outseta_auth.domain = 'myapp.outseta.com';
