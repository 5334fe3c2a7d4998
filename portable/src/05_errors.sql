-- The one way to raise an error: the stable error code decides the SQLSTATE (as the native
-- edition's ErrorClass) and the hint; message and detail come from the failing step.
-- Messages never carry token, key or secret material.

CREATE OR REPLACE FUNCTION @extschema@._outseta_sqlstate(code text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT CASE
        WHEN code IN ('jwks_unavailable', 'profile_unavailable') THEN '58000'
        WHEN code = 'config_error' THEN '22023'
        WHEN code = 'permission_denied' THEN '42501'
        WHEN code = 'feature_not_supported' THEN '0A000'
        ELSE '28000'
    END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@._outseta_hint(code text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT CASE code
        WHEN 'malformed' THEN 'Pass the raw access token (three base64url parts separated by dots), without a "Bearer " prefix.'
        WHEN 'too_large' THEN 'Pass the raw access token (three base64url parts separated by dots), without a "Bearer " prefix.'
        WHEN 'algorithm_not_allowed' THEN 'Allowed algorithms are set by outseta_auth.algorithms (default RS256); none and HS* are never accepted.'
        WHEN 'unknown_kid' THEN 'The key may have been rotated away, or the token comes from another issuer; check outseta_auth.domain / outseta_auth.jwks_url.'
        WHEN 'expired' THEN 'Obtain a fresh access token from Outseta.'
        WHEN 'not_yet_valid' THEN 'Check the database server''s clock, or raise outseta_auth.leeway.'
        WHEN 'issued_in_future' THEN 'Check the database server''s clock, or raise outseta_auth.leeway.'
        WHEN 'issuer_mismatch' THEN 'Accepted issuers are set by outseta_auth.issuer.'
        WHEN 'audience_mismatch' THEN 'Accepted audiences are set by outseta_auth.audience; when it is empty and outseta_auth.domain is set, aud must be that domain. To accept another audience, list it in outseta_auth.audience.'
        WHEN 'jwks_unavailable' THEN 'Push the key set with outseta_set_jwks() (a cron job or a deploy step), or set outseta_auth.jwks to a literal key set with outseta_config_set().'
    END
$fn$;

-- The error text of an outcome as outseta_try_verify() shows it: message, then ": detail".
CREATE OR REPLACE FUNCTION @extschema@._outseta_error_text(o @extschema@._outseta_outcome) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT CASE WHEN o.detail IS NULL THEN o.message ELSE o.message || ': ' || o.detail END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@._outseta_raise(code text, message text, detail text) RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    shown @extschema@._outseta_outcome := @extschema@._outseta_for_caller(ROW(NULL, code, message, detail));
    state text := @extschema@._outseta_sqlstate(code);
    hint text := @extschema@._outseta_hint(code);
BEGIN
    message := shown.message;
    detail := shown.detail;
    -- DETAIL and HINT only when there is one (an empty one would still be printed).
    IF detail IS NOT NULL AND hint IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, DETAIL = detail, HINT = hint;
    ELSIF detail IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, DETAIL = detail;
    ELSIF hint IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, HINT = hint;
    ELSE
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message;
    END IF;
END
$fn$;

-- An outcome as the connected role may see it: without pg_monitor (PostgREST's
-- authenticator, an application role), an unavailable key set's or profile endpoint's URL
-- and cause are left out (and go to the server log); code, SQLSTATE and hint stay. (The
-- native edition asks of the current role; inside this edition's SECURITY DEFINER functions
-- that is the owner, so the session's role is asked.)
CREATE OR REPLACE FUNCTION @extschema@._outseta_for_caller(o @extschema@._outseta_outcome)
RETURNS @extschema@._outseta_outcome
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF o.code NOT IN ('jwks_unavailable', 'profile_unavailable')
            OR pg_has_role(session_user, 'pg_monitor', 'USAGE') THEN
        RETURN o;
    END IF;
    RAISE LOG 'outseta_auth_sql: %', @extschema@._outseta_error_text(o);
    RETURN ROW(NULL, o.code, CASE o.code WHEN 'jwks_unavailable' THEN 'could not load the JWKS'
                                  ELSE 'could not check the token with Outseta''s profile endpoint' END,
               'the cause is in the server log')::@extschema@._outseta_outcome;
END
$fn$;

-- An error outcome (helpers of the verification steps).
CREATE OR REPLACE FUNCTION @extschema@._outseta_fail(code text, message text, detail text DEFAULT NULL)
RETURNS @extschema@._outseta_outcome
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT ROW(NULL, code, message, detail)::@extschema@._outseta_outcome
$fn$;

-- Attacker-controlled text (kid, alg, iss) in a message: at most 64 characters, control
-- characters escaped, as the native edition's printable().
CREATE OR REPLACE FUNCTION @extschema@._outseta_printable(s text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    head text := left(s, 64);
    out text := '';
    c text;
BEGIN
    IF head ~ '[[:cntrl:]]' THEN
        FOREACH c IN ARRAY regexp_split_to_array(head, '') LOOP
            out := out || CASE
                WHEN c = E'\n' THEN '\n' WHEN c = E'\t' THEN '\t' WHEN c = E'\r' THEN '\r'
                WHEN c ~ '[[:cntrl:]]' THEN '\u{' || to_hex(ascii(c)) || '}'
                ELSE c END;
        END LOOP;
    ELSE
        out := head;
    END IF;
    IF length(s) > 64 THEN
        out := out || '...';
    END IF;
    RETURN out;
END
$fn$;
