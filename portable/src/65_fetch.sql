-- Fetching the key set with the http extension (pgsql-http), where it is installed: found in
-- the catalog (pg_extension), never through the caller's search_path. The native rules as far
-- as the http extension lets them be kept: https, or http to loopback only (the URL settings'
-- rule); outseta_auth.http_timeout and http_connect_timeout; a 64 KiB cap; the answer of a
-- redirect is refused (the http extension follows redirects itself: the request is made, its
-- keys are never used); Cache-Control max-age (at most a day), else jwks_cache_ttl; past
-- jwks_max_stale without a successful fetch, verification fails closed (58000). Fetched only
-- by the owner (outseta_refresh_jwks(), e.g. a pg_cron job), never from a caller's session:
-- the http extension's options are the session's (a proxy, TLS checks off), and a caller's
-- transaction would hold the owner's rows.

-- The schema of the http extension, or NULL when it is not installed.
CREATE OR REPLACE FUNCTION @extschema@._outseta_http_schema() RETURNS name
LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
    SELECT n.nspname FROM pg_catalog.pg_extension e
    JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'http'
$fn$;

-- Record a failed attempt (kept with the key set, shown by outseta_jwks_status()).
CREATE OR REPLACE FUNCTION @extschema@._outseta_fetch_failed(url text, cause text) RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE AS $fn$
    INSERT INTO @extschema@.outseta_auth_keyset AS s (source, digest, version, last_error)
    VALUES ('', '\x', 0, cause)
    ON CONFLICT (id) DO UPDATE SET last_error = excluded.last_error
$fn$;

-- Fetch the key set of a URL source now and store it; returns the number of usable keys, or
-- raises 58000 (jwks_unavailable) or 0A000 (no http extension). Owner only.
CREATE OR REPLACE FUNCTION @extschema@._outseta_fetch_jwks(st @extschema@.outseta_auth_state) RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    http name := @extschema@._outseta_http_schema();
    url text := st.source_label;
    status integer;
    body text;
    headers text[];
    max_age integer;
    ttl integer := @extschema@._outseta_setting('outseta_auth.jwks_cache_ttl')::integer;
    doc jsonb;
    cause text;
    n integer;
BEGIN
    IF st.source_kind IS DISTINCT FROM 'url' THEN
        RETURN (SELECT count(*) FROM @extschema@.outseta_auth_keys);
    END IF;
    IF http IS NULL THEN
        PERFORM @extschema@._outseta_raise('feature_not_supported',
            'fetching the JWKS needs the http extension',
            'CREATE EXTENSION http (on Supabase, in the schema extensions); or push the key set with outseta_set_jwks() from a cron job or a deploy step');
    END IF;
    BEGIN
        -- The http extension keeps options for the session (a proxy, TLS checks): start
        -- from its defaults, then set the timeouts.
        EXECUTE format('SELECT %I.http_reset_curlopt()', http);
        EXECUTE format('SELECT %1$I.http_set_curlopt(''CURLOPT_TIMEOUT_MS'', $1), %1$I.http_set_curlopt(''CURLOPT_CONNECTTIMEOUT_MS'', $2)', http)
            USING @extschema@._outseta_setting('outseta_auth.http_timeout'),
                  @extschema@._outseta_setting('outseta_auth.http_connect_timeout');
        EXECUTE format('SELECT r.status, r.content, ARRAY(SELECT lower(h.field) || '': '' || h.value FROM unnest(r.headers) h) FROM %I.http_get($1) r', http)
            INTO status, body, headers USING url;
    EXCEPTION WHEN query_canceled THEN
        RAISE;
    WHEN others THEN
        cause := 'request failed: ' || SQLERRM;
    END;
    IF cause IS NULL AND EXISTS (SELECT FROM unnest(headers) h WHERE h LIKE 'location: %') THEN
        cause := 'the server answered with a redirect, which is not followed';
    ELSIF cause IS NULL AND status <> 200 THEN
        cause := format('HTTP %s', status);
    ELSIF cause IS NULL AND octet_length(body) > 65536 THEN
        cause := format('the JWKS is larger than 65536 bytes (%s)', octet_length(body));
    END IF;
    IF cause IS NULL THEN
        doc := @extschema@._outseta_jsonb(body);
        IF doc IS NULL THEN
            cause := 'the JWKS is not valid JSON';
        END IF;
    END IF;
    IF cause IS NULL THEN
        SELECT least(max(m[1]::bigint), 86400)::integer INTO max_age
        FROM unnest(headers) h, regexp_matches(h, '^cache-control:.*max-age=([0-9]{1,9})', 'i') m;
        BEGIN
            n := @extschema@._outseta_store_keys(doc, url, clock_timestamp(),
                clock_timestamp() + make_interval(secs => coalesce(max_age, ttl)), url);
        EXCEPTION WHEN invalid_parameter_value THEN
            GET STACKED DIAGNOSTICS cause = PG_EXCEPTION_DETAIL;
        END;
    END IF;
    IF cause IS NOT NULL THEN
        PERFORM @extschema@._outseta_fetch_failed(url, cause);
        RETURN -1;
    END IF;
    PERFORM @extschema@._outseta_resolve();
    RETURN n;
END
$fn$;
