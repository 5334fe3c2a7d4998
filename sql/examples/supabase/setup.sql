-- outseta_auth on self-hosted Supabase: run once as a superuser (supabase_admin) in the
-- project's database, after the image has the extension (Dockerfile beside this file).
-- Then give PostgREST the pre-request (docker-compose, `rest` service):
--     PGRST_DB_PRE_REQUEST: public.outseta_pre_request
-- and send the Outseta token from the frontend in the x-outseta-token header:
--     createClient(SUPABASE_URL, SUPABASE_ANON_KEY,
--                  { global: { headers: { 'x-outseta-token': await Outseta.getAccessToken() } } })
-- Policies written for the exchange function (auth.jwt() ->> 'sub') stay as they are.
CREATE EXTENSION IF NOT EXISTS outseta_auth;
DO $$ BEGIN
    -- Where the keys come from, and the aud check: your Outseta domain.
    EXECUTE format('ALTER DATABASE %I SET outseta_auth.domain = %L',
                   current_database(), 'myapp.outseta.com');
    -- A valid Outseta token switches the request to Supabase's authenticated role ...
    EXECUTE format('ALTER DATABASE %I SET outseta_auth.authenticated_role = %L',
                   current_database(), 'authenticated');
    -- ... and its verified claims become request.jwt.claims, read by auth.jwt()/auth.role().
    EXECUTE format('ALTER DATABASE %I SET outseta_auth.pre_request_claims = on',
                   current_database());
    -- The header the frontend sends the token in (a "Bearer " prefix is stripped).
    EXECUTE format('ALTER ROLE authenticator IN DATABASE %I SET outseta_auth.token_header = %L',
                   current_database(), 'x-outseta-token');
END $$;
