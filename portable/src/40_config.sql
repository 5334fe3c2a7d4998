-- The configuration: a table only the owner can read or write, changed with
-- outseta_config_set() / outseta_config_reset(), listed by outseta_config(). Without a
-- loaded library, outseta_auth.* settings are placeholders any role can SET, so nothing that
-- decides trust is read from them; only outseta_auth.token stays a setting.

-- Every setting the native edition has (but the token), with its default and kind.
CREATE OR REPLACE FUNCTION @extschema@._outseta_settings(
    OUT setting text, OUT default_value text, OUT kind text, OUT min_value integer, OUT max_value integer)
RETURNS SETOF record
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    VALUES
        ('outseta_auth.domain', '', 'text', NULL::integer, NULL::integer),
        ('outseta_auth.jwks_url', '', 'text', NULL, NULL),
        ('outseta_auth.jwks', '', 'text', NULL, NULL),
        ('outseta_auth.algorithms', 'RS256', 'text', NULL, NULL),
        ('outseta_auth.issuer', '', 'text', NULL, NULL),
        ('outseta_auth.audience', '', 'text', NULL, NULL),
        ('outseta_auth.leeway', '30', 'int', 0, 3600),
        ('outseta_auth.jwks_cache_ttl', '300', 'int', 1, 86400),
        ('outseta_auth.jwks_refresh_min_interval', '30', 'int', 0, 3600),
        ('outseta_auth.jwks_max_stale', '86400', 'int', 60, 2592000),
        ('outseta_auth.http_timeout', '5000', 'int', 100, 60000),
        ('outseta_auth.http_connect_timeout', '2000', 'int', 100, 60000),
        ('outseta_auth.token_sources', 'setting,cookie,header', 'text', NULL, NULL),
        ('outseta_auth.token_cookie', 'Outseta.nocode.accessToken', 'text', NULL, NULL),
        ('outseta_auth.token_header', '', 'text', NULL, NULL),
        ('outseta_auth.cookie_origins', '', 'text', NULL, NULL),
        ('outseta_auth.authenticated_role', '', 'text', NULL, NULL),
        ('outseta_auth.pre_request_claims', 'off', 'bool', NULL, NULL),
        ('outseta_auth.profile_url', '', 'text', NULL, NULL),
        ('outseta_auth.profile_ttl', '60', 'int', 1, 86400),
        ('outseta_auth.profile_check', 'off', 'bool', NULL, NULL),
        ('outseta_auth.webhook_secret', '', 'secret', NULL, NULL)
$fn$;

-- A comma list: items trimmed, empty items dropped.
CREATE OR REPLACE FUNCTION @extschema@._outseta_comma_list(t text) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT coalesce(array_agg(btrim(x) ORDER BY i), '{}')
    FROM unnest(string_to_array(t, ',')) WITH ORDINALITY AS u(x, i)
    WHERE btrim(x) <> ''
$fn$;

-- The URL rules of the native edition: at most 1024 bytes, https anywhere, http to loopback.
CREATE OR REPLACE FUNCTION @extschema@._outseta_url_problem(url text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    scheme text;
    authority text;
    host text;
BEGIN
    IF octet_length(url) > 1024 THEN
        RETURN format('the URL is %s bytes long; at most 1024 are accepted', octet_length(url));
    END IF;
    IF strpos(url, '://') = 0 THEN
        RETURN format('"%s" is not an absolute URL', url);
    END IF;
    scheme := lower(split_part(url, '://', 1));
    authority := substring(substr(url, strpos(url, '://') + 3) FROM '^[^/?#]*');
    IF strpos(authority, '@') > 0 THEN
        RETURN 'URLs with user info are not accepted';
    END IF;
    IF left(authority, 1) = '[' THEN
        host := split_part(substr(authority, 2), ']', 1);
    ELSIF strpos(authority, ':') > 0 THEN
        host := regexp_replace(authority, ':[^:]*$', '');
    ELSE
        host := authority;
    END IF;
    IF host = '' THEN
        RETURN format('"%s" has no host', url);
    END IF;
    IF scheme = 'https' THEN
        RETURN NULL;
    ELSIF scheme = 'http' THEN
        IF lower(host) = 'localhost' OR host = '::1' OR host ~ '^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$'
                OR host ~* '^::ffff:127\.' THEN
            RETURN NULL;
        END IF;
        RETURN format('plain http is allowed only for loopback hosts (127.0.0.0/8, ::1, localhost), not "%s"; use https', host);
    END IF;
    RETURN format('unsupported URL scheme "%s"', scheme);
END
$fn$;

-- The JWKS URL of an Outseta domain, or raise 22023.
CREATE OR REPLACE FUNCTION @extschema@._outseta_domain_url(domain text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    d text := rtrim(btrim(domain), '/');
    url text;
    problem text;
BEGIN
    IF d = '' OR d !~ '^[A-Za-z0-9.:-]+$' THEN
        PERFORM @extschema@._outseta_raise('config_error', 'invalid value for outseta_auth.domain',
            format('"%s" is not a host name; write it like myapp.outseta.com, without https:// or a path', domain));
    END IF;
    url := 'https://' || d || '/.well-known/jwks';
    problem := @extschema@._outseta_url_problem(url);
    IF problem IS NOT NULL THEN
        PERFORM @extschema@._outseta_raise('config_error', 'invalid value for outseta_auth.domain', problem);
    END IF;
    RETURN url;
END
$fn$;

-- Check a value for a setting as the native check hooks do (22023, the same messages) and
-- return it as stored. Limits of the portable edition are refused here too.
CREATE OR REPLACE FUNCTION @extschema@._outseta_validate(name text, value text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    s record;
    item text;
    items text[];
    seen text[] := '{}';
    problem text;
    n bigint;
    lower_value text := lower(btrim(value));
BEGIN
    SELECT * INTO s FROM @extschema@._outseta_settings() x WHERE x.setting = name;
    IF NOT FOUND THEN
        IF name = 'outseta_auth.token' THEN
            PERFORM @extschema@._outseta_raise('config_error', 'outseta_auth.token is not a configuration setting',
                'The token belongs to each transaction: SET LOCAL outseta_auth.token, or outseta_authenticate(token).');
        END IF;
        RAISE EXCEPTION USING ERRCODE = '42704',
            MESSAGE = format('unrecognized configuration parameter "%s"', name),
            HINT = 'SELECT setting FROM outseta_config() lists them.';
    END IF;
    IF s.kind = 'int' THEN
        IF btrim(value) !~ '^[+-]?[0-9]{1,9}$' THEN
            PERFORM @extschema@._outseta_raise('config_error',
                format('invalid value for parameter "%s": "%s"', name, value), NULL);
        END IF;
        n := btrim(value)::bigint;
        IF n < s.min_value OR n > s.max_value THEN
            PERFORM @extschema@._outseta_raise('config_error',
                format('%s is outside the valid range for parameter "%s" (%s .. %s)', n, name, s.min_value, s.max_value), NULL);
        END IF;
        RETURN n::text;
    ELSIF s.kind = 'bool' THEN
        IF lower_value IN ('on', 'true', 'yes', '1', 't', 'y') THEN
            IF name = 'outseta_auth.profile_check' THEN
                -- Never a silent difference: the portable edition has no profile check yet.
                PERFORM @extschema@._outseta_raise('config_error', 'invalid value for ' || name,
                    'the portable edition (outseta_auth_sql) has no profile check yet; use the native extension for it');
            END IF;
            RETURN 'on';
        ELSIF lower_value IN ('off', 'false', 'no', '0', 'f', 'n') THEN
            RETURN 'off';
        END IF;
        PERFORM @extschema@._outseta_raise('config_error', format('parameter "%s" requires a Boolean value', name), NULL);
    END IF;
    -- Text settings: empty (blank) always means unset, as in the native check hooks.
    IF btrim(value) = '' THEN
        RETURN value;
    END IF;
    IF name = 'outseta_auth.domain' THEN
        PERFORM @extschema@._outseta_domain_url(value);
    ELSIF name IN ('outseta_auth.jwks_url', 'outseta_auth.profile_url') THEN
        problem := @extschema@._outseta_url_problem(btrim(value));
        IF problem IS NOT NULL THEN
            PERFORM @extschema@._outseta_raise('config_error', 'invalid value for ' || name, problem);
        END IF;
    ELSIF name = 'outseta_auth.algorithms' THEN
        FOREACH item IN ARRAY @extschema@._outseta_comma_list(value) LOOP
            IF lower(item) = 'none' OR lower(item) LIKE 'hs%' THEN
                PERFORM @extschema@._outseta_raise('config_error', 'invalid value for ' || name,
                    format('"%s" is never allowed: Outseta signs with public-key algorithms', item));
            END IF;
            IF @extschema@._outseta_alg_family(item) IS NULL THEN
                PERFORM @extschema@._outseta_raise('config_error', 'invalid value for ' || name,
                    format('unknown algorithm "%s"; known: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA', item));
            END IF;
            IF item NOT IN ('RS256', 'RS384', 'RS512') THEN
                PERFORM @extschema@._outseta_raise('config_error', 'invalid value for ' || name,
                    format('the portable edition (outseta_auth_sql) verifies RS256, RS384 and RS512 only, not "%s"; use the native extension for it', item));
            END IF;
        END LOOP;
    ELSIF name = 'outseta_auth.token_sources' THEN
        FOREACH item IN ARRAY @extschema@._outseta_comma_list(value) LOOP
            IF item NOT IN ('setting', 'cookie', 'header') THEN
                PERFORM @extschema@._outseta_raise('config_error', 'invalid value for ' || name,
                    format('unknown source "%s"; use a comma list of setting, cookie, header', @extschema@._outseta_printable(item)));
            END IF;
            IF item = ANY (seen) THEN
                PERFORM @extschema@._outseta_raise('config_error', 'invalid value for ' || name,
                    format('"%s" is listed twice', item));
            END IF;
            seen := seen || item;
        END LOOP;
    ELSIF name = 'outseta_auth.cookie_origins' THEN
        FOREACH item IN ARRAY @extschema@._outseta_comma_list(value) LOOP
            item := rtrim(item, '/');
            IF item !~ '^https?://[A-Za-z0-9.:\[\]-]+$' THEN
                PERFORM @extschema@._outseta_raise('config_error', 'invalid value for ' || name,
                    format('"%s" is not an origin; write it as a browser sends it, e.g. https://app.example.com', @extschema@._outseta_printable(item)));
            END IF;
        END LOOP;
    ELSIF name = 'outseta_auth.webhook_secret' THEN
        IF btrim(value) !~ '^[0-9A-Fa-f]{64}$' THEN
            PERFORM @extschema@._outseta_raise('config_error', 'invalid value for ' || name,
                format('the webhook key must be 64 hexadecimal characters (as Outseta shows it); the value given has %s characters', length(btrim(value))));
        END IF;
    END IF;
    -- outseta_auth.jwks is checked by parsing it (outseta_config_set stores its keys).
    RETURN value;
END
$fn$;

-- A setting's value in effect: the stored one, else the default.
CREATE OR REPLACE FUNCTION @extschema@._outseta_setting(name text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
    SELECT coalesce((SELECT c.value FROM @extschema@.outseta_auth_config c WHERE c.setting = name),
                    (SELECT s.default_value FROM @extschema@._outseta_settings() s WHERE s.setting = name))
$fn$;

-- Resolve the configuration once per change into outseta_auth_state, and empty the
-- verified-token table when anything a verdict depends on changed.
CREATE OR REPLACE FUNCTION @extschema@._outseta_resolve() RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    domain text := btrim(@extschema@._outseta_setting('outseta_auth.domain'));
    literal text := btrim(@extschema@._outseta_setting('outseta_auth.jwks'));
    url text := btrim(@extschema@._outseta_setting('outseta_auth.jwks_url'));
    audiences text[] := @extschema@._outseta_comma_list(@extschema@._outseta_setting('outseta_auth.audience'));
    kind text;
    label text;
    problem text;
    ks record;
    st @extschema@.outseta_auth_state;
    old_trust bytea;
BEGIN
    IF literal <> '' THEN
        kind := 'literal';
        label := 'outseta_auth.jwks (literal)';
    ELSIF url <> '' THEN
        kind := 'url';
        label := url;
    ELSIF domain <> '' THEN
        kind := 'url';
        label := @extschema@._outseta_domain_url(domain);
    ELSE
        problem := 'no key source is configured: set outseta_auth.domain (or outseta_auth.jwks_url, or outseta_auth.jwks)';
    END IF;
    IF cardinality(audiences) = 0 AND rtrim(domain, '/') <> '' THEN
        audiences := ARRAY[lower(rtrim(domain, '/'))];
    END IF;
    SELECT * INTO ks FROM @extschema@.outseta_auth_keyset;
    st.id := true;
    st.algorithms := @extschema@._outseta_comma_list(@extschema@._outseta_setting('outseta_auth.algorithms'));
    st.issuers := @extschema@._outseta_comma_list(@extschema@._outseta_setting('outseta_auth.issuer'));
    st.audiences := audiences;
    st.leeway := @extschema@._outseta_setting('outseta_auth.leeway')::integer;
    st.source_kind := kind;
    st.source_label := label;
    st.config_error := problem;
    st.max_stale := @extschema@._outseta_setting('outseta_auth.jwks_max_stale')::integer;
    st.keys_until := CASE
        WHEN ks.source IS NULL OR ks.source = '' THEN '-infinity'::double precision
        WHEN ks.fetched_at IS NULL THEN 'infinity'::double precision
        ELSE extract(epoch FROM ks.fetched_at) + st.max_stale END;
    st.token_sources := @extschema@._outseta_comma_list(@extschema@._outseta_setting('outseta_auth.token_sources'));
    st.token_cookie := @extschema@._outseta_setting('outseta_auth.token_cookie');
    st.token_header := lower(btrim(@extschema@._outseta_setting('outseta_auth.token_header')));
    st.cookie_origins := ARRAY(SELECT rtrim(o, '/') FROM unnest(@extschema@._outseta_comma_list(
        @extschema@._outseta_setting('outseta_auth.cookie_origins'))) o);
    st.authenticated_role := btrim(@extschema@._outseta_setting('outseta_auth.authenticated_role'));
    st.pre_request_claims := @extschema@._outseta_setting('outseta_auth.pre_request_claims') = 'on';
    st.trust := sha256(convert_to(pg_catalog.jsonb_build_array('outseta_auth_sql trust 1',
        st.algorithms, st.issuers, st.audiences, st.leeway, kind, label,
        encode(ks.digest, 'hex'), ks.source)::text, 'UTF8'));
    st.memo_key := coalesce((SELECT s.memo_key FROM @extschema@.outseta_auth_state s),
        sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text || clock_timestamp()::text, 'UTF8')));
    SELECT trust INTO old_trust FROM @extschema@.outseta_auth_state;
    INSERT INTO @extschema@.outseta_auth_state VALUES (st.*)
    ON CONFLICT (id) DO UPDATE SET algorithms = excluded.algorithms, issuers = excluded.issuers,
        audiences = excluded.audiences, leeway = excluded.leeway, source_kind = excluded.source_kind,
        source_label = excluded.source_label, config_error = excluded.config_error,
        max_stale = excluded.max_stale, keys_until = excluded.keys_until,
        token_sources = excluded.token_sources, token_cookie = excluded.token_cookie,
        token_header = excluded.token_header, cookie_origins = excluded.cookie_origins,
        authenticated_role = excluded.authenticated_role, pre_request_claims = excluded.pre_request_claims,
        trust = excluded.trust;
    IF old_trust IS DISTINCT FROM st.trust THEN
        DELETE FROM @extschema@.outseta_auth_verified;
    END IF;
END
$fn$;

-- Set a setting (owner only): validated as the native check hook validates it.
CREATE OR REPLACE FUNCTION @extschema@.outseta_config_set(setting text, value text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    stored text := @extschema@._outseta_validate(setting,
        coalesce(value, @extschema@._outseta_null_value(setting)));
    before_source text[] := ARRAY[@extschema@._outseta_setting('outseta_auth.jwks'),
        @extschema@._outseta_setting('outseta_auth.jwks_url'), @extschema@._outseta_setting('outseta_auth.domain')];
BEGIN
    INSERT INTO @extschema@.outseta_auth_config AS c VALUES (outseta_config_set.setting, stored)
    ON CONFLICT ON CONSTRAINT outseta_auth_config_pkey DO UPDATE SET value = excluded.value;
    PERFORM @extschema@._outseta_source_changed(before_source);
    PERFORM @extschema@._outseta_resolve();
END
$fn$;

-- A NULL value is refused (never taken for "unset" silently).
CREATE OR REPLACE FUNCTION @extschema@._outseta_null_value(setting text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM @extschema@._outseta_raise('config_error', format('invalid value for %s', setting),
        'the value is NULL; outseta_config_reset(setting) restores the default');
    RETURN NULL;
END
$fn$;

-- Back to the default (owner only).
CREATE OR REPLACE FUNCTION @extschema@.outseta_config_reset(setting text) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    before_source text[] := ARRAY[@extschema@._outseta_setting('outseta_auth.jwks'),
        @extschema@._outseta_setting('outseta_auth.jwks_url'), @extschema@._outseta_setting('outseta_auth.domain')];
BEGIN
    IF NOT EXISTS (SELECT FROM @extschema@._outseta_settings() s WHERE s.setting = outseta_config_reset.setting) THEN
        PERFORM @extschema@._outseta_validate(setting, '');  -- raises: unknown, or the token
    END IF;
    DELETE FROM @extschema@.outseta_auth_config c WHERE c.setting = outseta_config_reset.setting;
    PERFORM @extschema@._outseta_source_changed(before_source);
    PERFORM @extschema@._outseta_resolve();
END
$fn$;

-- When the key source changed, the key set of the old one is no longer trusted: a literal
-- is parsed again, fetched or pushed keys must be pushed or fetched again.
CREATE OR REPLACE FUNCTION @extschema@._outseta_source_changed(before_source text[]) RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    literal text := btrim(@extschema@._outseta_setting('outseta_auth.jwks'));
BEGIN
    IF before_source = ARRAY[@extschema@._outseta_setting('outseta_auth.jwks'),
            @extschema@._outseta_setting('outseta_auth.jwks_url'), @extschema@._outseta_setting('outseta_auth.domain')] THEN
        RETURN;
    END IF;
    IF literal <> '' THEN
        PERFORM @extschema@._outseta_store_keys(@extschema@._outseta_jwks_doc(literal),
            'outseta_auth.jwks (literal)', NULL, NULL, 'outseta_auth.jwks');
    ELSE
        DELETE FROM @extschema@.outseta_auth_keys;
        DELETE FROM @extschema@.outseta_auth_ignored_keys;
        UPDATE @extschema@.outseta_auth_keyset SET source = '', digest = '\x', version = version + 1,
            fetched_at = NULL, expires_at = NULL, last_error = NULL;
    END IF;
END
$fn$;

-- A key set's text as jsonb, or raise 22023 (not JSON).
CREATE OR REPLACE FUNCTION @extschema@._outseta_jwks_doc(t text) RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    j jsonb := @extschema@._outseta_jsonb(t);
BEGIN
    IF j IS NULL THEN
        PERFORM @extschema@._outseta_raise('config_error', 'invalid value for outseta_auth.jwks',
            'the JWKS is not valid JSON');
    END IF;
    RETURN j;
END
$fn$;

-- Every setting with its value; the webhook secret shows as (hidden) when set.
CREATE OR REPLACE FUNCTION @extschema@.outseta_config(OUT setting text, OUT value text, OUT is_default boolean)
RETURNS SETOF record
LANGUAGE sql STABLE SECURITY DEFINER PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT s.setting,
           CASE WHEN s.kind = 'secret' AND coalesce(btrim(c.value), '') <> '' THEN '(hidden)'
                WHEN s.kind = 'secret' THEN ''
                ELSE coalesce(c.value, s.default_value) END,
           c.value IS NULL
    FROM @extschema@._outseta_settings() s
    LEFT JOIN @extschema@.outseta_auth_config c ON c.setting = s.setting
    ORDER BY s.setting
$fn$;
