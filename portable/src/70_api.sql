-- The SQL API: the native edition's functions with the same names, arguments, result types,
-- strictness, volatility, SQLSTATEs and error codes. Parallel labels: the verify family and
-- the accessors are PARALLEL UNSAFE here (PARALLEL SAFE in the native edition): a miss
-- writes the verified-token table, which no parallel worker may do.

CREATE OR REPLACE FUNCTION @extschema@.outseta_auth_version() RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT '0.4.0'::text
$fn$;

-- The claims of a token, or raise its error.
CREATE OR REPLACE FUNCTION @extschema@._outseta_claims_of(token text) RETURNS jsonb
LANGUAGE plpgsql STRICT STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    o @extschema@._outseta_outcome := @extschema@._outseta_verdict(token);
BEGIN
    IF o.code IS NOT NULL THEN
        PERFORM @extschema@._outseta_raise(o.code, o.message, o.detail);
    END IF;
    RETURN o.claims;
END
$fn$;

-- A claim that is a JSON string, as text; else NULL (inlined where it is called).
CREATE OR REPLACE FUNCTION @extschema@._outseta_string(claims jsonb, name text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT CASE WHEN pg_catalog.jsonb_typeof(claims OPERATOR(pg_catalog.->) name) OPERATOR(pg_catalog.=) 'string'
                THEN claims OPERATOR(pg_catalog.->>) name END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.outseta_verify(token text) RETURNS jsonb
LANGUAGE plpgsql STRICT STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RETURN @extschema@._outseta_claims_of(token);
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@._outseta_result(o @extschema@._outseta_outcome)
RETURNS @extschema@.outseta_verify_result
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT CASE WHEN o.code IS NULL THEN ROW(true, o.claims, NULL, NULL)::@extschema@.outseta_verify_result
                ELSE ROW(false, NULL, o.code, @extschema@._outseta_error_text(@extschema@._outseta_for_caller(o)))::@extschema@.outseta_verify_result END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.outseta_try_verify(token text) RETURNS @extschema@.outseta_verify_result
LANGUAGE plpgsql STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RETURN @extschema@._outseta_result(CASE WHEN token IS NULL OR token = ''
        THEN @extschema@._outseta_fail('malformed', 'Outseta token is malformed', 'no token was given')
        ELSE @extschema@._outseta_verdict(token) END);
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.outseta_try_current() RETURNS @extschema@.outseta_verify_result
LANGUAGE plpgsql STRICT STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    o @extschema@._outseta_outcome := @extschema@._outseta_current_outcome(false);
BEGIN
    RETURN CASE WHEN NOT (o IS NULL) THEN @extschema@._outseta_result(o) END;
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.outseta_claims() RETURNS jsonb
LANGUAGE plpgsql STRICT STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RETURN (@extschema@._outseta_current_outcome(true)).claims;
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.outseta_claim(name text) RETURNS jsonb
LANGUAGE plpgsql STRICT STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RETURN (@extschema@._outseta_current_outcome(true)).claims -> name;
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.outseta_sub() RETURNS text
LANGUAGE plpgsql STRICT STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$ BEGIN RETURN @extschema@._outseta_string((@extschema@._outseta_current_outcome(true)).claims, 'sub'); END $fn$;

CREATE OR REPLACE FUNCTION @extschema@.outseta_account_uid() RETURNS text
LANGUAGE plpgsql STRICT STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$ BEGIN RETURN @extschema@._outseta_string((@extschema@._outseta_current_outcome(true)).claims, 'outseta:accountUid'); END $fn$;

CREATE OR REPLACE FUNCTION @extschema@.outseta_email() RETURNS text
LANGUAGE plpgsql STRICT STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$ BEGIN RETURN @extschema@._outseta_string((@extschema@._outseta_current_outcome(true)).claims, 'email'); END $fn$;

CREATE OR REPLACE FUNCTION @extschema@.outseta_name() RETURNS text
LANGUAGE plpgsql STRICT STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$ BEGIN RETURN @extschema@._outseta_string((@extschema@._outseta_current_outcome(true)).claims, 'name'); END $fn$;

CREATE OR REPLACE FUNCTION @extschema@.outseta_plan_uid() RETURNS text
LANGUAGE plpgsql STRICT STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$ BEGIN RETURN @extschema@._outseta_string((@extschema@._outseta_current_outcome(true)).claims, 'outseta:planUid'); END $fn$;

CREATE OR REPLACE FUNCTION @extschema@.outseta_subscription_uid() RETURNS text
LANGUAGE plpgsql STRICT STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$ BEGIN RETURN @extschema@._outseta_string((@extschema@._outseta_current_outcome(true)).claims, 'outseta:subscriptionUid'); END $fn$;

-- An array of strings; anything else (or any non-string member) is NULL.
CREATE OR REPLACE FUNCTION @extschema@.outseta_add_on_uids() RETURNS text[]
LANGUAGE plpgsql STRICT STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    a jsonb := (@extschema@._outseta_current_outcome(true)).claims -> 'outseta:addOnUids';
BEGIN
    RETURN CASE WHEN jsonb_typeof(a) = 'array' AND NOT jsonb_path_exists(a, '$[*] ? (@.type() != "string")')
                THEN ARRAY(SELECT jsonb_array_elements_text(a)) END;
END
$fn$;

-- Outseta sends "0"/"1"; JSON booleans, 0/1 and "true"/"false" (any case) are accepted too.
CREATE OR REPLACE FUNCTION @extschema@.outseta_is_primary() RETURNS boolean
LANGUAGE plpgsql STRICT STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    f jsonb := (@extschema@._outseta_current_outcome(true)).claims -> 'outseta:isPrimary';
BEGIN
    RETURN CASE
        WHEN jsonb_typeof(f) = 'string' AND (f #>> '{}' = '1' OR lower(f #>> '{}') = 'true') THEN true
        WHEN jsonb_typeof(f) = 'string' AND (f #>> '{}' = '0' OR lower(f #>> '{}') = 'false') THEN false
        WHEN jsonb_typeof(f) = 'boolean' THEN (f #>> '{}')::boolean
        WHEN jsonb_typeof(f) = 'number' AND f::text = '1' THEN true
        WHEN jsonb_typeof(f) = 'number' AND f::text = '0' THEN false
    END;
END
$fn$;

-- Verify a token and make it outseta_auth.token for the rest of the transaction; '' clears it.
CREATE OR REPLACE FUNCTION @extschema@.outseta_authenticate(token text) RETURNS jsonb
LANGUAGE plpgsql STRICT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    t text := btrim(token, E' \t\n\r\f\v');
BEGIN
    IF t <> '' THEN
        PERFORM @extschema@._outseta_claims_of(t);
    END IF;
    PERFORM set_config('outseta_auth.token', t, true);
    RETURN @extschema@.outseta_claims();
END
$fn$;

-- What outseta_pre_request() reads of the configuration (the table is the owner's).
CREATE OR REPLACE FUNCTION @extschema@._outseta_pre_request_settings(OUT role_name text, OUT set_claims boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    SELECT st.authenticated_role, st.pre_request_claims INTO role_name, set_claims
    FROM @extschema@.outseta_auth_state st;
END
$fn$;

-- PostgREST's db-pre-request hook, as the native edition's.
CREATE OR REPLACE FUNCTION @extschema@.outseta_pre_request() RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r @extschema@.outseta_verify_result := @extschema@.outseta_try_current();
    s record;
    status int;
    message text;
    www text;
BEGIN
    IF r.valid IS NULL THEN
        RETURN;  -- no token: the request stays on PostgREST's anonymous role and claims
    END IF;
    IF r.valid THEN
        s := @extschema@._outseta_pre_request_settings();
        IF s.role_name <> '' THEN
            -- as SET LOCAL ROLE: PostgREST's authenticator must be a member of the role
            PERFORM set_config('role', s.role_name, true);
        END IF;
        IF s.set_claims THEN
            -- For Supabase's auth.jwt()/auth.role(): the verified claims and the role now
            -- in effect, for this transaction only.
            PERFORM set_config('request.jwt.claims',
                (r.claims || jsonb_build_object('role', current_user::text))::text, true);
        END IF;
        RETURN;
    END IF;
    IF r.error_code IN ('jwks_unavailable', 'profile_unavailable', 'config_error') THEN
        -- The cause is for the server log and outseta_jwks_status(), not for anonymous clients.
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
        -- RFC 6750: error_description is printable ASCII without double quote and backslash.
        www := format('Bearer error="invalid_token", error_description="%s"',
            left(regexp_replace(r.error, '[^]-~ -!#-[]', '', 'g'), 200));
    END IF;
    RAISE SQLSTATE 'PGRST' USING
        MESSAGE = json_build_object(
            'code', r.error_code,
            'message', message,
            'details', NULL,
            'hint', CASE WHEN status = 401
                         THEN 'Sign in again to get a fresh Outseta access token.' END)::text,
        DETAIL = json_build_object(
            'status', status,
            'headers', CASE WHEN www IS NULL THEN json_build_object()
                            ELSE json_build_object('WWW-Authenticate', www) END)::text;
END
$fn$;

-- HMAC-SHA256 (RFC 2104) over the built-in sha256().
CREATE OR REPLACE FUNCTION @extschema@._outseta_hmac_sha256(key bytea, msg bytea) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    k bytea := CASE WHEN octet_length(key) > 64 THEN sha256(key) ELSE key END;
    ipad bytea;
    opad bytea;
    i integer;
BEGIN
    k := k || decode(repeat('00', 64 - octet_length(k)), 'hex');
    ipad := k;
    opad := k;
    FOR i IN 0..63 LOOP
        ipad := set_byte(ipad, i, get_byte(k, i) # 54);
        opad := set_byte(opad, i, get_byte(k, i) # 92);
    END LOOP;
    RETURN sha256(opad || sha256(ipad || msg));
END
$fn$;

-- Whether signature (x-hub-signature-256, with or without sha256=) is Outseta's HMAC-SHA256
-- of body under outseta_auth.webhook_secret; 22023 when no key is configured.
CREATE OR REPLACE FUNCTION @extschema@._outseta_webhook_check(body bytea, signature text) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    secret text := btrim(@extschema@._outseta_setting('outseta_auth.webhook_secret'));
    s text := btrim(signature);
BEGIN
    IF secret = '' THEN
        PERFORM @extschema@._outseta_raise('config_error', 'invalid value for outseta_auth.webhook_secret',
            'no webhook key is configured; set outseta_auth.webhook_secret (with outseta_config_set, as the owner) to the webhook key shown in Outseta');
    END IF;
    IF body IS NULL OR s IS NULL THEN
        RETURN false;
    END IF;
    IF lower(left(s, 7)) = 'sha256=' THEN
        s := substr(s, 8);
    END IF;
    IF s !~ '^[0-9A-Fa-f]{64}$' THEN
        RETURN false;
    END IF;
    -- Compared as digests of both sides, so that the time taken tells nothing of the key.
    RETURN sha256(decode(s, 'hex')) = sha256(@extschema@._outseta_hmac_sha256(decode(secret, 'hex'), body));
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.outseta_verify_webhook(body text, signature text) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RETURN @extschema@._outseta_webhook_check(convert_to(body, 'UTF8'), signature);
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.outseta_verify_webhook(body bytea, signature text) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RETURN @extschema@._outseta_webhook_check(body, signature);
END
$fn$;

-- Push a key set fetched outside the database (a cron job, a deploy step); owner only.
-- Returns the number of usable keys.
CREATE OR REPLACE FUNCTION @extschema@.outseta_set_jwks(jwks jsonb) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    st @extschema@.outseta_auth_state;
    n integer;
BEGIN
    SELECT * INTO st FROM @extschema@.outseta_auth_state;
    IF st.config_error IS NOT NULL THEN
        PERFORM @extschema@._outseta_raise('config_error', 'invalid value for outseta_auth.domain', st.config_error);
    ELSIF st.source_kind = 'literal' THEN
        PERFORM @extschema@._outseta_raise('config_error', 'invalid value for outseta_auth.jwks',
            'outseta_auth.jwks (a literal key set) is configured: pushed keys would not be used; reset it first');
    END IF;
    n := @extschema@._outseta_store_keys(jwks, st.source_label, clock_timestamp(),
        clock_timestamp() + make_interval(secs => @extschema@._outseta_setting('outseta_auth.jwks_cache_ttl')::integer),
        'outseta_set_jwks(jwks)');
    PERFORM @extschema@._outseta_resolve();
    RETURN n;
END
$fn$;

-- The key set in use (pg_monitor and the owner): one row, or none before any key set.
CREATE OR REPLACE FUNCTION @extschema@.outseta_jwks_status() RETURNS TABLE (
    source text, keys jsonb, ignored_keys jsonb, fetched_at timestamptz, expires_at timestamptz,
    last_error text, fetch_count bigint, shared boolean, refresh_pending boolean,
    token_cache_hits bigint, token_cache_misses bigint)
LANGUAGE sql STRICT VOLATILE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT st.source_label,
           coalesce((SELECT jsonb_agg(jsonb_build_object('kid', k.kid, 'alg',
                        coalesce(k.alg, CASE k.family WHEN 'Rsa' THEN 'RSA (any RS*/PS*)' WHEN 'EcP256' THEN 'ES256'
                                                       WHEN 'EcP384' THEN 'ES384' ELSE 'EdDSA' END)) ORDER BY k.ord)
                     FROM @extschema@.outseta_auth_keys k), '[]'),
           coalesce((SELECT jsonb_agg(jsonb_build_object('kid', i.kid, 'reason', i.reason) ORDER BY i.ord)
                     FROM @extschema@.outseta_auth_ignored_keys i), '[]'),
           ks.fetched_at, ks.expires_at, ks.last_error, coalesce(ks.fetch_count, 0),
           true,  -- one key set for every session of the database
           ks.expires_at IS NOT NULL AND ks.expires_at < clock_timestamp(),
           (SELECT count(*) FROM @extschema@.outseta_auth_verified), 0::bigint
    FROM @extschema@.outseta_auth_state st
    LEFT JOIN @extschema@.outseta_auth_keyset ks ON ks.source <> ''
    WHERE st.config_error IS NULL
$fn$;

-- Fetch the key set now (owner only): with the http extension; a literal key set is parsed
-- again. Returns the number of usable keys.
CREATE OR REPLACE FUNCTION @extschema@.outseta_refresh_jwks() RETURNS integer
LANGUAGE plpgsql STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    st @extschema@.outseta_auth_state;
BEGIN
    SELECT * INTO st FROM @extschema@.outseta_auth_state;
    IF st.config_error IS NOT NULL THEN
        PERFORM @extschema@._outseta_raise('config_error', 'invalid value for outseta_auth.domain', st.config_error);
    END IF;
    IF st.source_kind = 'literal' THEN
        RETURN (SELECT count(*) FROM @extschema@.outseta_auth_keys);
    END IF;
    RETURN @extschema@._outseta_fetch_jwks(st);
END
$fn$;

-- Outseta's profile endpoint for the current token: needs the http extension.
CREATE OR REPLACE FUNCTION @extschema@.outseta_profile() RETURNS jsonb
LANGUAGE plpgsql STRICT STABLE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF (@extschema@._outseta_current_outcome(true)).claims IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM @extschema@._outseta_raise('feature_not_supported',
        'outseta_profile() is not available in the portable edition yet', NULL);
    RETURN NULL;
END
$fn$;
