-- Encodings, as strict as the native edition's: base64url (RFC 7515: no padding, no
-- whitespace, no other alphabet, no non-zero trailing bits), UTF-8, JSON, big numbers.
-- None of these raises on bad input: they return NULL, and the caller names the error.

-- Strict base64url, or NULL.
CREATE OR REPLACE FUNCTION @extschema@._outseta_b64url(s text) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    rest integer := length(s) % 4;
BEGIN
    IF s !~ '^[A-Za-z0-9_-]*$' OR rest = 1 THEN
        RETURN NULL;
    END IF;
    -- The last character's unused low bits must be zero (one accepted encoding per value).
    IF rest = 2 AND strpos('AQgw', right(s, 1)) = 0 THEN
        RETURN NULL;
    END IF;
    IF rest = 3 AND strpos('AEIMQUYcgkosw048', right(s, 1)) = 0 THEN
        RETURN NULL;
    END IF;
    RETURN decode(replace(replace(s, '-', '+'), '_', '/') || repeat('=', (4 - rest) % 4), 'base64');
END
$fn$;

-- Bytes as text when they are well-formed UTF-8 without NUL, else NULL (never raises:
-- the test runs on the hex form: ASCII, then the multi-byte forms of RFC 3629).
CREATE OR REPLACE FUNCTION @extschema@._outseta_utf8(b bytea) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    h text := encode(b, 'hex');
BEGIN
    IF h ~ '^([1-7][0-9a-f]|0[1-9a-f])*$' THEN
        RETURN convert_from(b, 'UTF8');
    END IF;
    IF h ~ ('^(?:[1-7][0-9a-f]|0[1-9a-f]'
            '|(?:c[2-9a-f]|d[0-9a-f])[89ab][0-9a-f]'
            '|e0[ab][0-9a-f][89ab][0-9a-f]'
            '|(?:e[1-9a-c]|e[ef])[89ab][0-9a-f][89ab][0-9a-f]'
            '|ed[89][0-9a-f][89ab][0-9a-f]'
            '|f0[9ab][0-9a-f](?:[89ab][0-9a-f]){2}'
            '|f[1-3](?:[89ab][0-9a-f]){3}'
            '|f48[0-9a-f](?:[89ab][0-9a-f]){2})*$') THEN
        RETURN convert_from(b, 'UTF8');
    END IF;
    RETURN NULL;
END
$fn$;

-- Big-endian unsigned bytes as a numeric: PostgreSQL 16 on reads hexadecimal numerics
-- itself; before, 7 bytes per step.
DO $num$
BEGIN
    IF pg_catalog.current_setting('server_version_num')::integer >= 160000 THEN
        CREATE OR REPLACE FUNCTION @extschema@._outseta_num(b bytea) RETURNS numeric
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
            SELECT CASE WHEN pg_catalog.octet_length(b) OPERATOR(pg_catalog.=) 0 THEN 0::pg_catalog.numeric
                        ELSE ('0x' OPERATOR(pg_catalog.||) pg_catalog.encode(b, 'hex'))::pg_catalog.numeric END
        $fn$;
    ELSE
        CREATE OR REPLACE FUNCTION @extschema@._outseta_num(b bytea) RETURNS numeric
        LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
        DECLARE
            h text := encode(b, 'hex');
            len integer := length(h);
            head integer := len % 14;
            r numeric := 0;
            i integer;
        BEGIN
            IF head > 0 THEN
                r := ('x' || lpad(substr(h, 1, head), 16, '0'))::bit(64)::bigint;
            END IF;
            i := head + 1;
            WHILE i <= len LOOP
                r := r * 72057594037927936 + ('x' || substr(h, i, 14))::bit(56)::bigint;
                i := i + 14;
            END LOOP;
            RETURN r;
        END
        $fn$;
    END IF;
END
$num$;
