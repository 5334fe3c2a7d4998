-- Where the current request's token comes from (outseta_auth.token_sources, in order):
-- outseta_auth.token, the cookie in PostgREST's request.cookies, a header in
-- request.headers. Only the token is taken from them; it is then verified like any other.
-- request.* are placeholders any role can set: their text is refused over 64 KiB before it
-- is parsed.

-- The token setting, unless its value is a role or database default (pg_db_role_setting),
-- which would act for every later session of that role (for example behind a pooler).
CREATE OR REPLACE FUNCTION @extschema@._outseta_token_setting() RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    raw text := current_setting('outseta_auth.token', true);
    t text := btrim(raw, E' \t\n\r\f');
BEGIN
    IF t IS NULL OR t = '' THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_db_role_setting s
               WHERE s.setdatabase IN (0, (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database()))
                 AND s.setrole IN (0, (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = session_user))
                 AND ('outseta_auth.token=' || raw) = ANY (s.setconfig)) THEN
        RAISE WARNING 'outseta_auth.token is ignored: its value is a role or database default'
            USING DETAIL = 'Role and database defaults of the token are refused, so that no token can act for later sessions.',
                  HINT = 'ALTER ROLE ... RESET outseta_auth.token; use SET LOCAL in each transaction.';
        RETURN NULL;
    END IF;
    RETURN t;
END
$fn$;

-- A request setting's text, or raise too_large (28000) over 64 KiB.
CREATE OR REPLACE FUNCTION @extschema@._outseta_request_json(name text) RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    raw text := current_setting(name, true);
    j jsonb;
BEGIN
    IF raw IS NULL OR raw = '' THEN
        RETURN NULL;
    END IF;
    IF octet_length(raw) > 65536 THEN
        PERFORM @extschema@._outseta_raise('too_large',
            format('%s is too large to look for the Outseta token in', name),
            format('size=%s bytes, max=65536 bytes', octet_length(raw)));
    END IF;
    j := @extschema@._outseta_jsonb(raw);
    IF jsonb_typeof(j) IS DISTINCT FROM 'object' THEN
        RETURN NULL;  -- not an object: no member, an anonymous request (as native)
    END IF;
    RETURN j;
END
$fn$;

-- Whether the origin scheme://host[:port] names the authority host[:port] of a Host header.
CREATE OR REPLACE FUNCTION @extschema@._outseta_same_authority(origin text, host text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    rest text;
    default_port text;
BEGIN
    IF left(origin, 8) = 'https://' THEN
        rest := substr(origin, 9); default_port := '443';
    ELSIF left(origin, 7) = 'http://' THEN
        rest := substr(origin, 8); default_port := '80';
    ELSE
        RETURN false;
    END IF;
    IF rest = '' OR strpos(rest, '/') > 0 OR btrim(host) = '' THEN
        RETURN false;
    END IF;
    RETURN @extschema@._outseta_authority(rest, default_port) = @extschema@._outseta_authority(host, default_port);
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@._outseta_authority(a text, default_port text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    x text := lower(btrim(a));
    i integer := length(x) - strpos(reverse(x), ':') + 1;
    h text := x;
    port text := '';
BEGIN
    IF strpos(x, ':') > 0 AND strpos(substr(x, i), ']') = 0 THEN
        h := left(x, i - 1);
        port := substr(x, i + 1);
    END IF;
    IF port = '' OR port = default_port THEN
        RETURN h;
    END IF;
    RETURN h || ':' || port;
END
$fn$;

-- The CSRF rule for the cookie (the native edition's cookie_allowed): never cross-site; a
-- listed origin; otherwise same-origin only: an Origin naming the request's Host (and the
-- scheme X-Forwarded-Proto names, when the proxy sets it), or no Origin, which for a method
-- that changes data needs Sec-Fetch-Site: same-origin.
CREATE OR REPLACE FUNCTION @extschema@._outseta_cookie_allowed(headers jsonb, origins text[], method text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    site text := btrim(coalesce(CASE WHEN jsonb_typeof(headers->'sec-fetch-site') = 'string' THEN headers->>'sec-fetch-site' END, ''));
    origin text := CASE WHEN jsonb_typeof(headers->'origin') = 'string' THEN rtrim(btrim(headers->>'origin'), '/') END;
    host text := CASE WHEN jsonb_typeof(headers->'host') = 'string' THEN headers->>'host' END;
    changes_data boolean := coalesce(btrim(method), '') <> '' AND upper(btrim(method)) NOT IN ('GET', 'HEAD', 'OPTIONS');
BEGIN
    IF headers IS NULL THEN
        RETURN true;
    END IF;
    IF lower(site) = 'cross-site' THEN
        RETURN false;
    END IF;
    IF origin IS NOT NULL AND lower(origin) = ANY (SELECT lower(o) FROM unnest(origins) o) THEN
        RETURN true;
    END IF;
    IF lower(site) = 'same-site' THEN
        RETURN false;
    END IF;
    IF origin IS NULL THEN
        RETURN NOT changes_data OR lower(site) = 'same-origin';
    END IF;
    RETURN host IS NOT NULL AND @extschema@._outseta_same_authority(origin, host)
        -- every entry of X-Forwarded-Proto (a proxy appends its own to the client's)
        AND NOT EXISTS (SELECT FROM unnest(string_to_array(coalesce(headers->>'x-forwarded-proto', ''), ',')) p
                        WHERE btrim(p) <> '' AND lower(left(origin, length(btrim(p)) + 3)) <> lower(btrim(p)) || '://');
END
$fn$;

-- The current request's token, or NULL, by the resolved rules in st. The role-default check
-- of outseta_auth.token (a catalog read) is made when check_defaults: the callers skip it
-- when the session's memo already holds this token, which only a checked token gets into.
CREATE OR REPLACE FUNCTION @extschema@._outseta_token_from(st @extschema@.outseta_auth_state, check_defaults boolean)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    source text;
    t text;
    j jsonb;
BEGIN
    FOREACH source IN ARRAY st.token_sources LOOP
        t := NULL;
        IF source = 'setting' THEN
            t := nullif(btrim(current_setting('outseta_auth.token', true), E' \t\n\r\f'), '');
            IF t IS NOT NULL AND check_defaults THEN
                t := @extschema@._outseta_token_setting();
            END IF;
        ELSIF source = 'cookie' THEN
            j := @extschema@._outseta_request_json('request.cookies');
            t := CASE WHEN jsonb_typeof(j -> st.token_cookie) = 'string'
                      THEN nullif(btrim(j ->> st.token_cookie), '') END;
            -- The cookie given twice with different values (jsonb keeps the last): neither.
            IF t IS NOT NULL AND (SELECT count(DISTINCT e.value::text)
                                  FROM json_each(current_setting('request.cookies', true)::json) e
                                  WHERE e.key = st.token_cookie) > 1 THEN
                t := NULL;
            END IF;
            IF t IS NOT NULL AND NOT @extschema@._outseta_cookie_allowed(
                    @extschema@._outseta_request_json('request.headers'), st.cookie_origins,
                    current_setting('request.method', true)) THEN
                t := NULL;
            END IF;
            -- A header the rule reads given twice with different values: refused, not guessed.
            IF t IS NOT NULL AND EXISTS (
                    SELECT FROM json_each(nullif(current_setting('request.headers', true), '')::json) e
                    WHERE e.key IN ('sec-fetch-site', 'origin', 'host', 'x-forwarded-proto')
                    GROUP BY e.key HAVING count(DISTINCT e.value::text) > 1) THEN
                t := NULL;
            END IF;
        ELSIF source = 'header' AND st.token_header <> '' THEN
            j := @extschema@._outseta_request_json('request.headers');
            t := CASE WHEN jsonb_typeof(j -> st.token_header) = 'string' THEN btrim(j ->> st.token_header) END;
            IF lower(left(t, 7)) = 'bearer ' THEN
                t := btrim(substr(t, 8));
            END IF;
            t := nullif(t, '');
        END IF;
        IF t IS NOT NULL THEN
            RETURN t;
        END IF;
    END LOOP;
    RETURN NULL;
END
$fn$;
