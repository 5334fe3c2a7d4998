-- Key sets: parsed once per change into @extschema@.outseta_auth_keys (usable keys, the RSA
-- modulus as numeric) and outseta_auth_ignored_keys (the rest, with the reason), by the
-- native edition's rules: no symmetric keys, no private material, "use" sig, "key_ops" with
-- verify, RSA of 2048 bits or more with an odd modulus and a usable exponent and without the
-- ROCA fingerprint, EC P-256/P-384 and Ed25519 of the right sizes, and every key whose kid
-- is shared with another key set aside.

-- One JWK: (family, alg, bits, nbytes, n, e) of a usable key, or the reason it is not.
CREATE OR REPLACE FUNCTION @extschema@._outseta_jwk(k jsonb,
    OUT family text, OUT alg text, OUT bits integer, OUT nbytes integer, OUT n numeric,
    OUT e bigint, OUT reason text)
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    kty text;
    nb bytea;
    eb bytea;
    x bytea;
    y bytea;
    len integer;
    member text;
    alg_family text;
BEGIN
    IF k ? 'kid' AND jsonb_typeof(k->'kid') <> 'string' THEN
        reason := 'kid is not a string'; RETURN;
    END IF;
    IF k ? 'use' AND (jsonb_typeof(k->'use') <> 'string' OR k->>'use' <> 'sig') THEN
        reason := '"use" is not "sig"'; RETURN;
    END IF;
    IF k ? 'key_ops' AND NOT (jsonb_typeof(k->'key_ops') = 'array'
            AND NOT jsonb_path_exists(k->'key_ops', '$[*] ? (@.type() != "string")')
            AND (k->'key_ops') @> '["verify"]') THEN
        reason := '"key_ops" does not include "verify"'; RETURN;
    END IF;
    IF jsonb_typeof(k->'kty') IS DISTINCT FROM 'string' THEN
        reason := 'no "kty"'; RETURN;
    END IF;
    kty := k->>'kty';
    IF kty = 'RSA' THEN
        IF k ?| ARRAY['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth'] THEN
            reason := 'the key contains private key material'; RETURN;
        END IF;
        FOREACH member IN ARRAY ARRAY['n', 'e'] LOOP
            IF jsonb_typeof(k->member) IS DISTINCT FROM 'string' THEN
                reason := format('missing or non-string "%s"', member); RETURN;
            END IF;
            IF @extschema@._outseta_b64url(k->>member) IS NULL THEN
                reason := format('"%s" is not valid base64url', member); RETURN;
            END IF;
        END LOOP;
        -- leading zero bytes do not count
        nb := decode(regexp_replace(encode(@extschema@._outseta_b64url(k->>'n'), 'hex'), '^(00)+', ''), 'hex');
        eb := decode(regexp_replace(encode(@extschema@._outseta_b64url(k->>'e'), 'hex'), '^(00)+', ''), 'hex');
        IF octet_length(nb) = 0 THEN
            bits := 0;
        ELSE
            bits := (octet_length(nb) - 1) * 8 + length(ltrim(get_byte(nb, 0)::bit(8)::text, '0'));
        END IF;
        IF bits < 2048 THEN
            reason := format('RSA modulus of %s bits is under 2048', bits); bits := NULL; RETURN;
        END IF;
        IF get_byte(nb, octet_length(nb) - 1) & 1 = 0 THEN
            reason := 'RSA modulus is even'; bits := NULL; RETURN;
        END IF;
        IF octet_length(eb) = 0 OR octet_length(eb) > 4 OR get_byte(eb, octet_length(eb) - 1) & 1 = 0
                OR eb = '\x01'::bytea THEN
            reason := 'RSA public exponent is unusable (must be odd, >= 3, at most 32 bits)'; bits := NULL; RETURN;
        END IF;
        n := @extschema@._outseta_num(nb);
        IF @extschema@._outseta_has_roca(n) THEN
            reason := 'RSA modulus has the ROCA weakness (CVE-2017-15361): its private key can be computed';
            bits := NULL; n := NULL; RETURN;
        END IF;
        family := 'Rsa';
        nbytes := octet_length(nb);
        e := @extschema@._outseta_num(eb)::bigint;
    ELSIF kty = 'EC' THEN
        IF k ? 'd' THEN
            reason := 'the key contains private key material'; RETURN;
        END IF;
        IF k->'crv' = '"P-256"' THEN
            family := 'EcP256'; len := 32;
        ELSIF k->'crv' = '"P-384"' THEN
            family := 'EcP384'; len := 48;
        ELSE
            reason := 'unsupported or missing EC curve'; RETURN;
        END IF;
        FOREACH member IN ARRAY ARRAY['x', 'y'] LOOP
            IF jsonb_typeof(k->member) IS DISTINCT FROM 'string' THEN
                reason := format('missing or non-string "%s"', member); family := NULL; RETURN;
            END IF;
            IF @extschema@._outseta_b64url(k->>member) IS NULL THEN
                reason := format('"%s" is not valid base64url', member); family := NULL; RETURN;
            END IF;
        END LOOP;
        x := @extschema@._outseta_b64url(k->>'x');
        y := @extschema@._outseta_b64url(k->>'y');
        IF octet_length(x) <> len OR octet_length(y) <> len THEN
            reason := 'EC coordinates have the wrong length for the curve'; family := NULL; RETURN;
        END IF;
        bits := len * 8;
    ELSIF kty = 'OKP' THEN
        IF k ? 'd' THEN
            reason := 'the key contains private key material'; RETURN;
        END IF;
        IF k->'crv' IS DISTINCT FROM '"Ed25519"' THEN
            reason := 'unsupported or missing OKP curve'; RETURN;
        END IF;
        IF jsonb_typeof(k->'x') IS DISTINCT FROM 'string' THEN
            reason := 'missing or non-string "x"'; RETURN;
        END IF;
        x := @extschema@._outseta_b64url(k->>'x');
        IF x IS NULL THEN
            reason := '"x" is not valid base64url'; RETURN;
        END IF;
        IF octet_length(x) <> 32 THEN
            reason := 'Ed25519 key has the wrong length'; RETURN;
        END IF;
        family := 'Ed25519';
        bits := 256;
    ELSIF kty = 'oct' THEN
        reason := 'symmetric (oct) keys are never used'; RETURN;
    ELSE
        reason := format('unsupported kty "%s"', @extschema@._outseta_printable(kty)); RETURN;
    END IF;
    IF k ? 'alg' THEN
        IF jsonb_typeof(k->'alg') <> 'string' THEN
            reason := '"alg" is not a string';
        ELSE
            alg := k->>'alg';
            alg_family := @extschema@._outseta_alg_family(alg);
            IF alg_family IS NULL THEN
                reason := format('unsupported alg "%s"', @extschema@._outseta_printable(alg));
            ELSIF alg_family <> family THEN
                reason := format('alg %s does not fit a %s key', alg, family);
            END IF;
        END IF;
        IF reason IS NOT NULL THEN
            family := NULL; alg := NULL; bits := NULL; nbytes := NULL; n := NULL; e := NULL;
        END IF;
    END IF;
END
$fn$;

-- The key family an algorithm name (exact, case-sensitive, as RFC 7518) needs; NULL for a
-- name the native edition does not know.
CREATE OR REPLACE FUNCTION @extschema@._outseta_alg_family(alg text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT CASE alg
        WHEN 'RS256' THEN 'Rsa' WHEN 'RS384' THEN 'Rsa' WHEN 'RS512' THEN 'Rsa'
        WHEN 'PS256' THEN 'Rsa' WHEN 'PS384' THEN 'Rsa' WHEN 'PS512' THEN 'Rsa'
        WHEN 'ES256' THEN 'EcP256' WHEN 'ES384' THEN 'EcP384' WHEN 'EdDSA' THEN 'Ed25519'
    END
$fn$;

-- Parse a key set document into the key tables (replacing what they held) and record it as
-- the key set in use; returns the number of usable keys. A document that is not a key set,
-- or has no usable key, changes nothing and raises 22023 naming `what`.
CREATE OR REPLACE FUNCTION @extschema@._outseta_store_keys(doc jsonb, source text,
    fetched timestamptz, expires timestamptz, what text) RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    parsed jsonb;
    usable integer;
    first_ignored record;
BEGIN
    IF jsonb_typeof(doc) IS DISTINCT FROM 'object' OR jsonb_typeof(doc->'keys') IS DISTINCT FROM 'array' THEN
        PERFORM @extschema@._outseta_raise('config_error', format('invalid value for %s', what),
            'the JWKS is not a JSON object with a "keys" array');
    END IF;
    WITH k AS (
        SELECT j, ord, CASE WHEN jsonb_typeof(j->'kid') = 'string' THEN j->>'kid' END AS kid
        FROM jsonb_array_elements(doc->'keys') WITH ORDINALITY AS e(j, ord)
    ), counted AS (
        SELECT k.*, count(*) OVER (PARTITION BY kid) AS same_kid FROM k
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object('ord', c.ord, 'kid', c.kid, 'family', p.family,
               'alg', p.alg, 'bits', p.bits, 'nbytes', p.nbytes, 'n', p.n, 'e', p.e,
               'reason', CASE WHEN jsonb_typeof(c.j) <> 'object' THEN 'not a JSON object'
                              WHEN c.kid IS NOT NULL AND c.same_kid > 1
                                  THEN 'duplicate kid: every key sharing it is ignored'
                              ELSE p.reason END) ORDER BY c.ord), '[]')
    INTO parsed
    FROM counted c
    LEFT JOIN LATERAL @extschema@._outseta_jwk(
        CASE WHEN jsonb_typeof(c.j) = 'object' AND NOT (c.kid IS NOT NULL AND c.same_kid > 1) THEN c.j END) p ON true;
    SELECT count(*) INTO usable FROM jsonb_array_elements(parsed) x WHERE x->'reason' = 'null';
    IF usable = 0 THEN
        SELECT x->>'kid' AS kid, x->>'reason' AS reason INTO first_ignored
        FROM jsonb_array_elements(parsed) x LIMIT 1;
        PERFORM @extschema@._outseta_raise('config_error', format('invalid value for %s', what),
            format('the JWKS has no usable signing key (%s keys%s)', jsonb_array_length(parsed),
                CASE WHEN first_ignored IS NULL OR first_ignored.reason IS NULL THEN ''
                     ELSE format('; e.g. kid=%s: %s',
                        CASE WHEN first_ignored.kid IS NULL THEN 'None'
                             ELSE 'Some(' || to_json(first_ignored.kid)::text || ')' END,
                        first_ignored.reason) END));
    END IF;
    DELETE FROM @extschema@.outseta_auth_keys;
    DELETE FROM @extschema@.outseta_auth_ignored_keys;
    INSERT INTO @extschema@.outseta_auth_keys (ord, kid, family, alg, bits, nbytes, n, e)
        SELECT r.ord, r.kid, r.family, r.alg, r.bits, r.nbytes, r.n, r.e
        FROM jsonb_to_recordset(parsed) AS r(ord integer, kid text, family text, alg text,
            bits integer, nbytes integer, n numeric, e bigint, reason text)
        WHERE r.reason IS NULL;
    UPDATE @extschema@.outseta_auth_keys k SET (digits, mu, em256, em384, em512) =
        (SELECT x.digits, x.mu, x.em256, x.em384, x.em512 FROM @extschema@._outseta_rsa_key(k.n, k.nbytes) x)
    WHERE k.family = 'Rsa';
    INSERT INTO @extschema@.outseta_auth_ignored_keys (ord, kid, reason)
        SELECT r.ord, r.kid, r.reason
        FROM jsonb_to_recordset(parsed) AS r(ord integer, kid text, reason text)
        WHERE r.reason IS NOT NULL;
    INSERT INTO @extschema@.outseta_auth_keyset AS s (source, digest, version, fetched_at, expires_at, fetch_count, last_error)
    VALUES (source, sha256(convert_to('outseta_auth jwks 1' || doc::text, 'UTF8')), 1, fetched, expires,
            CASE WHEN fetched IS NULL THEN 0 ELSE 1 END, NULL)
    ON CONFLICT (id) DO UPDATE SET source = excluded.source, digest = excluded.digest,
        version = s.version + 1, fetched_at = excluded.fetched_at, expires_at = excluded.expires_at,
        fetch_count = s.fetch_count + CASE WHEN excluded.fetched_at IS NULL THEN 0 ELSE 1 END,
        last_error = NULL;
    RETURN usable;
END
$fn$;
