-- outseta_auth 0.1.0 -> 0.2.0 (ALTER EXTENSION outseta_auth UPDATE TO '0.2.0')
--
-- - outseta_jwks_status() gains the columns shared and refresh_pending (cluster-wide keys).
-- - New: outseta_try_current() and outseta_pre_request() (PostgREST's db-pre-request).
-- - New: outseta_profile() (Outseta's profile endpoint) and outseta_verify_webhook(text|bytea,
--   text) (webhook signatures).
-- Every other function keeps its signature, volatility and symbol; their behaviour comes
-- with the new library. Settings need no SQL (they are defined by the library).
--
-- Released scripts are never edited: once 0.2.0 is released, this file is listed in
-- sql/RELEASED.sha256 (checked by scripts/check-sql).

\echo Use "ALTER EXTENSION outseta_auth UPDATE TO '0.2.0'" to load this file. \quit

DROP FUNCTION outseta_jwks_status();
CREATE  FUNCTION "outseta_jwks_status"() RETURNS TABLE (
	"source" TEXT,  /* String */
	"keys" jsonb,  /* JsonB */
	"ignored_keys" jsonb,  /* JsonB */
	"fetched_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"expires_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"last_error" TEXT,  /* Option < String > */
	"fetch_count" bigint,  /* i64 */
	"shared" bool,  /* bool */
	"refresh_pending" bool,  /* bool */
	"token_cache_hits" bigint,  /* i64 */
	"token_cache_misses" bigint  /* i64 */
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'outseta_jwks_status_wrapper';

CREATE  FUNCTION "outseta_try_current"(

) RETURNS outseta_verify_result /* Option < :: pgrx :: heap_tuple :: PgHeapTuple < '_, :: pgrx :: pgbox ::
AllocatedByRust > > */
STRICT STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'outseta_try_current_wrapper';

CREATE FUNCTION outseta_pre_request() RETURNS void
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    r @extschema@.outseta_verify_result := @extschema@.outseta_try_current();
    role_name text;
    status int;
    www text;
BEGIN
    IF r.valid IS NULL THEN
        RETURN;  -- no token: the request stays on PostgREST's anonymous role
    END IF;
    IF r.valid THEN
        role_name := pg_catalog.current_setting('outseta_auth.authenticated_role');
        IF role_name <> '' THEN
            -- as SET LOCAL ROLE: PostgREST's authenticator must be a member of the role
            PERFORM pg_catalog.set_config('role', role_name, true);
        END IF;
        RETURN;
    END IF;
    IF r.error_code IN ('jwks_unavailable', 'profile_unavailable') THEN
        status := 503;
        www := NULL;
    ELSIF r.error_code = 'config_error' THEN
        status := 500;
        www := NULL;
    ELSE
        status := 401;
        -- RFC 6750: error_description is printable ASCII without double quote and
        -- backslash: keep 0x20-0x21, 0x23-0x5B and 0x5D-0x7E, drop everything else.
        www := pg_catalog.format('Bearer error="invalid_token", error_description="%s"',
            pg_catalog.left(pg_catalog.regexp_replace(r.error, '[^]-~ -!#-[]', '', 'g'), 200));
    END IF;
    RAISE SQLSTATE 'PGRST' USING
        MESSAGE = pg_catalog.json_build_object(
            'code', r.error_code,
            'message', r.error,
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
    'PostgREST db-pre-request: no token stays anonymous; a valid token switches to outseta_auth.authenticated_role; a bad token ends the request with HTTP 401 and WWW-Authenticate';

CREATE  FUNCTION "outseta_profile"() RETURNS jsonb /* Result < Option < RawJsonb > , ErrorReport > */
STRICT STABLE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'outseta_profile_wrapper';

CREATE  FUNCTION "outseta_verify_webhook"(
	"body" bytea, /* Option < & [u8] > */
	"signature" TEXT /* Option < & str > */
) RETURNS bool /* Result < bool, ErrorReport > */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'outseta_verify_webhook_bytea_wrapper';

CREATE  FUNCTION "outseta_verify_webhook"(
	"body" TEXT, /* Option < & str > */
	"signature" TEXT /* Option < & str > */
) RETURNS bool /* Result < bool, ErrorReport > */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'outseta_verify_webhook_text_wrapper';
