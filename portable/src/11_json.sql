-- Text as jsonb when it is JSON the native edition's parser (serde_json) accepts too, else
-- NULL. PostgreSQL 16 on test without raising (pg_input_is_valid); 14 and 15 catch the
-- cast's error (a subtransaction: the callers are PARALLEL UNSAFE for this reason too).
-- Numbers beyond double precision are refused, as serde_json refuses them.
DO $json$
BEGIN
    IF pg_catalog.current_setting('server_version_num')::integer >= 160000 THEN
        CREATE OR REPLACE FUNCTION @extschema@._outseta_jsonb(t text) RETURNS jsonb
        LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
        DECLARE
            j jsonb;
        BEGIN
            IF NOT pg_input_is_valid(t, 'jsonb') THEN
                RETURN NULL;
            END IF;
            j := t::jsonb;
            IF jsonb_path_exists(j, 'strict $.** ? (@.type() == "number" && (@ > 1.7976931348623157e308 || @ < -1.7976931348623157e308))') THEN
                RETURN NULL;
            END IF;
            RETURN j;
        END
        $fn$;
    ELSE
        CREATE OR REPLACE FUNCTION @extschema@._outseta_jsonb(t text) RETURNS jsonb
        LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
        DECLARE
            j jsonb;
        BEGIN
            BEGIN
                j := t::jsonb;
            EXCEPTION WHEN others THEN
                RETURN NULL;
            END;
            IF jsonb_path_exists(j, 'strict $.** ? (@.type() == "number" && (@ > 1.7976931348623157e308 || @ < -1.7976931348623157e308))') THEN
                RETURN NULL;
            END IF;
            RETURN j;
        END
        $fn$;
    END IF;
END
$json$;

-- A JSON number as double precision, as serde_json reads it (magnitudes below the smallest
-- normal double become 0 rather than an error). Not STRICT, qualified: inlined where called.
CREATE OR REPLACE FUNCTION @extschema@._outseta_f64(n numeric) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT CASE WHEN pg_catalog.abs(n) OPERATOR(pg_catalog.<) 1e-300 THEN 0::pg_catalog.float8
                ELSE n::pg_catalog.float8 END
$fn$;
