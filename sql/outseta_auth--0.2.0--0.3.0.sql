-- outseta_auth 0.2.0 -> 0.3.0 (ALTER EXTENSION outseta_auth UPDATE)
--
-- - outseta_pre_request(): with the new superuser setting outseta_auth.pre_request_claims
--   on, a verified token's claims (plus "role") become request.jwt.claims for the
--   transaction, so Supabase's auth.jwt()/auth.role() and their policies work unchanged.
-- - outseta_pre_request(): 503/500 bodies carry the error code and a generic message; the
--   cause (JWKS URL, network error) goes to the server log.
-- - outseta_jwks_status() (sources, URLs, errors of every database) is for pg_monitor and
--   superusers: EXECUTE revoked from PUBLIC.
-- - outseta_shared_slots() (new): the cluster's shared slots in use (JWKS, profile
--   requests, verified tokens), for pg_monitor and superusers.
-- Every other function keeps its signature, volatility and symbol.
CREATE OR REPLACE FUNCTION outseta_pre_request() RETURNS void
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    r @extschema@.outseta_verify_result := @extschema@.outseta_try_current();
    role_name text;
    status int;
    message text;
    www text;
BEGIN
    IF r.valid IS NULL THEN
        RETURN;  -- no token: the request stays on PostgREST's anonymous role and claims
    END IF;
    IF r.valid THEN
        role_name := pg_catalog.current_setting('outseta_auth.authenticated_role');
        IF role_name <> '' THEN
            -- as SET LOCAL ROLE: PostgREST's authenticator must be a member of the role
            PERFORM pg_catalog.set_config('role', role_name, true);
        END IF;
        IF pg_catalog.current_setting('outseta_auth.pre_request_claims')::boolean THEN
            -- For Supabase's auth.jwt()/auth.role(): the verified claims and the role now
            -- in effect, for this transaction only.
            PERFORM pg_catalog.set_config('request.jwt.claims',
                (r.claims OPERATOR(pg_catalog.||)
                 pg_catalog.jsonb_build_object('role', current_user::text))::text, true);
        END IF;
        RETURN;
    END IF;
    IF r.error_code IN ('jwks_unavailable', 'profile_unavailable', 'config_error') THEN
        -- The cause (URLs, network errors) is for the server log and outseta_jwks_status(),
        -- not for anonymous clients.
        RAISE LOG 'outseta_pre_request: % (%)', r.error_code, r.error;
        IF r.error_code = 'config_error' THEN
            status := 500;
            message := 'the server''s token verification is misconfigured';
        ELSE
            status := 503;
            message := 'token verification is unavailable; try again shortly';
        END IF;
        www := NULL;
    ELSE
        status := 401;
        message := r.error;
        -- RFC 6750: error_description is printable ASCII without double quote and
        -- backslash: keep 0x20-0x21, 0x23-0x5B and 0x5D-0x7E, drop everything else.
        www := pg_catalog.format('Bearer error="invalid_token", error_description="%s"',
            pg_catalog.left(pg_catalog.regexp_replace(r.error, '[^]-~ -!#-[]', '', 'g'), 200));
    END IF;
    RAISE SQLSTATE 'PGRST' USING
        MESSAGE = pg_catalog.json_build_object(
            'code', r.error_code,
            'message', message,
            'details', NULL,
            'hint', CASE WHEN status = 401
                         THEN 'Sign in again to get a fresh Outseta access token.' END)::text,
        DETAIL = pg_catalog.json_build_object(
            'status', status,
            'headers', CASE WHEN www IS NULL THEN pg_catalog.json_build_object()
                            ELSE pg_catalog.json_build_object('WWW-Authenticate', www) END)::text;
END
$fn$;
COMMENT ON FUNCTION outseta_pre_request() IS
    'PostgREST db-pre-request: no token stays anonymous; a valid token switches to outseta_auth.authenticated_role (and, with outseta_auth.pre_request_claims, sets request.jwt.claims); a bad token ends the request with HTTP 401 and WWW-Authenticate';

REVOKE EXECUTE ON FUNCTION outseta_jwks_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outseta_jwks_status() TO pg_monitor;

CREATE  FUNCTION "outseta_shared_slots"() RETURNS TABLE (
	"area" TEXT,  /* String */
	"in_use" INT,  /* i32 */
	"slots" INT,  /* i32 */
	"bytes" bigint,  /* i64 */
	"hits" bigint  /* core::option::Option<i64> */
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'outseta_shared_slots_wrapper';
REVOKE EXECUTE ON FUNCTION outseta_shared_slots() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outseta_shared_slots() TO pg_monitor;
