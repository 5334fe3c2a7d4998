-- Verification, in the native edition's order: size cap, shape, strict base64url, the
-- header, the algorithm allow-list, key selection, the signature, then the claims. Nothing
-- from the token decides which keys are trusted: jku, x5u, jwk and x5c are never read.

-- The claims rules (the native edition's claims::check) on a payload whose signature held.
CREATE OR REPLACE FUNCTION @extschema@._outseta_check_claims(payload bytea, st @extschema@.outseta_auth_state,
    now double precision) RETURNS @extschema@._outseta_outcome
LANGUAGE plpgsql STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    txt text := @extschema@._outseta_utf8(payload);
    c jsonb;
    exp double precision;
    nbf double precision;
    iat double precision;
    name text;
    v double precision;
BEGIN
    IF txt IS NOT NULL THEN
        c := @extschema@._outseta_jsonb(txt);
    END IF;
    IF c IS NULL AND txt ~ '(^|[^\\])(\\\\)*\\u0000' THEN
        RETURN @extschema@._outseta_fail('malformed', 'Outseta token is malformed',
            'a claim contains the character U+0000 (NUL), which PostgreSQL text cannot hold');
    ELSIF c IS NULL THEN
        RETURN @extschema@._outseta_fail('malformed', 'Outseta token is malformed', 'the claims are not valid UTF-8 JSON');
    ELSIF jsonb_typeof(c) <> 'object' THEN
        RETURN @extschema@._outseta_fail('malformed', 'Outseta token is malformed', 'the claims are not a JSON object');
    END IF;
    -- exp, nbf, iat: absent, or a number
    FOREACH name IN ARRAY ARRAY['exp', 'nbf', 'iat'] LOOP
        IF NOT c ? name THEN
            v := NULL;
        ELSIF jsonb_typeof(c->name) <> 'number' THEN
            RETURN @extschema@._outseta_fail('invalid_claim', format('Outseta token has an invalid "%s" claim', name), 'not a number');
        ELSE
            v := @extschema@._outseta_f64((c->name)::numeric);
        END IF;
        IF name = 'exp' THEN
            IF v IS NULL THEN
                RETURN @extschema@._outseta_fail('missing_claim', 'Outseta token is missing the "exp" claim');
            END IF;
            exp := v;
            IF now >= exp + st.leeway THEN
                RETURN @extschema@._outseta_fail('expired', 'Outseta token has expired',
                    format('exp=%s now=%s leeway=%ss', @extschema@._outseta_num_text(exp), floor(now)::bigint, st.leeway));
            END IF;
        ELSIF name = 'nbf' THEN
            nbf := v;
            IF nbf > now + st.leeway THEN
                RETURN @extschema@._outseta_fail('not_yet_valid', 'Outseta token is not yet valid',
                    format('nbf=%s now=%s leeway=%ss', @extschema@._outseta_num_text(nbf), floor(now)::bigint, st.leeway));
            END IF;
        ELSIF v > now + st.leeway THEN
            iat := v;
            RETURN @extschema@._outseta_fail('issued_in_future', 'Outseta token was issued in the future',
                format('iat=%s now=%s leeway=%ss', @extschema@._outseta_num_text(iat), floor(now)::bigint, st.leeway));
        END IF;
    END LOOP;
    IF cardinality(st.issuers) > 0 THEN
        IF NOT c ? 'iss' THEN
            RETURN @extschema@._outseta_fail('missing_claim', 'Outseta token is missing the "iss" claim');
        ELSIF jsonb_typeof(c->'iss') <> 'string' THEN
            RETURN @extschema@._outseta_fail('invalid_claim', 'Outseta token has an invalid "iss" claim', 'not a string');
        ELSIF NOT (c->>'iss') = ANY (st.issuers) THEN
            RETURN @extschema@._outseta_fail('issuer_mismatch', 'Outseta token issuer is not accepted',
                'iss=' || @extschema@._outseta_printable(c->>'iss'));
        END IF;
    END IF;
    IF cardinality(st.audiences) > 0 THEN
        IF NOT c ? 'aud' THEN
            RETURN @extschema@._outseta_fail('missing_claim', 'Outseta token is missing the "aud" claim');
        ELSIF jsonb_typeof(c->'aud') = 'string' THEN
            IF NOT (c->>'aud') = ANY (st.audiences) THEN
                RETURN @extschema@._outseta_fail('audience_mismatch', 'Outseta token audience is not accepted');
            END IF;
        ELSIF jsonb_typeof(c->'aud') = 'array' THEN
            IF NOT EXISTS (SELECT FROM jsonb_array_elements(c->'aud') a
                           WHERE jsonb_typeof(a) = 'string' AND (a #>> '{}') = ANY (st.audiences)) THEN
                RETURN @extschema@._outseta_fail('audience_mismatch', 'Outseta token audience is not accepted');
            END IF;
        ELSE
            RETURN @extschema@._outseta_fail('invalid_claim', 'Outseta token has an invalid "aud" claim',
                'not a string or an array of strings');
        END IF;
    END IF;
    RETURN ROW(c, NULL, NULL, NULL)::@extschema@._outseta_outcome;
END
$fn$;

-- A NumericDate as the native edition prints it: whole numbers without a fraction.
CREATE OR REPLACE FUNCTION @extschema@._outseta_num_text(v double precision) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT CASE WHEN v = trunc(v) AND abs(v) < 1e15 THEN trunc(v)::bigint::text ELSE v::text END
$fn$;

-- The whole verification of one token under the resolved configuration, without caches.
CREATE OR REPLACE FUNCTION @extschema@._outseta_check(token text, st @extschema@.outseta_auth_state,
    now double precision) RETURNS @extschema@._outseta_outcome
LANGUAGE plpgsql STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    parts text[];
    header_bytes bytea;
    payload bytea;
    sig bytea;
    header jsonb;
    header_text text;
    token_alg text;
    kid text;
    key record;
    candidates integer;
    hash text;
    mismatch text;
BEGIN
    IF octet_length(token) > 16384 THEN
        RETURN @extschema@._outseta_fail('too_large', 'Outseta token is too large',
            format('size=%s bytes, max=16384 bytes', octet_length(token)));
    END IF;
    IF token = '' THEN
        RETURN @extschema@._outseta_fail('malformed', 'Outseta token is malformed', 'the token is empty');
    END IF;
    parts := string_to_array(token, '.');
    IF cardinality(parts) <> 3 THEN
        RETURN @extschema@._outseta_fail('malformed', 'Outseta token is malformed',
            format('expected a compact JWS of 3 dot-separated parts, found %s', cardinality(parts)));
    END IF;
    IF parts[1] = '' OR parts[3] = '' THEN
        RETURN @extschema@._outseta_fail('malformed', 'Outseta token is malformed', 'the header or the signature is empty');
    END IF;
    header_bytes := @extschema@._outseta_b64url(parts[1]);
    IF header_bytes IS NULL THEN
        RETURN @extschema@._outseta_fail('malformed', 'Outseta token is malformed', 'the header is not valid base64url');
    END IF;
    payload := @extschema@._outseta_b64url(parts[2]);
    IF payload IS NULL THEN
        RETURN @extschema@._outseta_fail('malformed', 'Outseta token is malformed', 'the payload is not valid base64url');
    END IF;
    sig := @extschema@._outseta_b64url(parts[3]);
    IF sig IS NULL THEN
        RETURN @extschema@._outseta_fail('malformed', 'Outseta token is malformed', 'the signature is not valid base64url');
    END IF;
    header_text := @extschema@._outseta_utf8(header_bytes);
    IF header_text IS NOT NULL THEN
        header := @extschema@._outseta_jsonb(header_text);
    END IF;
    IF header IS NULL THEN
        RETURN @extschema@._outseta_fail('malformed', 'Outseta token is malformed', 'the header is not valid JSON');
    ELSIF jsonb_typeof(header) <> 'object' THEN
        RETURN @extschema@._outseta_fail('malformed', 'Outseta token is malformed', 'the header is not a JSON object');
    ELSIF NOT header ? 'alg' THEN
        RETURN @extschema@._outseta_fail('malformed', 'Outseta token is malformed', 'the header has no "alg"');
    ELSIF jsonb_typeof(header->'alg') <> 'string' THEN
        RETURN @extschema@._outseta_fail('malformed', 'Outseta token is malformed', 'the header "alg" is not a string');
    END IF;
    token_alg := header->>'alg';
    IF NOT token_alg = ANY (st.algorithms) THEN
        RETURN @extschema@._outseta_fail('algorithm_not_allowed',
            format('Outseta token algorithm "%s" is not allowed', @extschema@._outseta_printable(token_alg)));
    END IF;
    IF header ? 'crit' THEN
        RETURN @extschema@._outseta_fail('crit_unsupported', 'Outseta token has a "crit" header, which is not supported');
    END IF;
    IF header ? 'kid' AND jsonb_typeof(header->'kid') <> 'string' THEN
        RETURN @extschema@._outseta_fail('malformed', 'Outseta token is malformed', 'the header "kid" is not a string');
    END IF;
    kid := header->>'kid';

    -- The key set: a literal one always; fetched or pushed ones until jwks_max_stale.
    IF NOT EXISTS (SELECT FROM @extschema@.outseta_auth_keyset ks
                   WHERE ks.source <> '' AND (ks.fetched_at IS NULL
                       OR ks.fetched_at + make_interval(secs => st.max_stale) > to_timestamp(now))) THEN
        RETURN @extschema@._outseta_fail('jwks_unavailable', format('could not load the JWKS from %s', st.source_label),
            CASE WHEN EXISTS (SELECT FROM @extschema@.outseta_auth_keyset ks WHERE ks.source <> '')
                 THEN 'the key set is older than outseta_auth.jwks_max_stale'
                 ELSE 'no key set has been stored yet' END);
    END IF;

    -- Key selection: the kid's key, which must fit the algorithm; without a kid, the one
    -- usable key that fits (as the native edition's KeySet::select).
    IF kid IS NOT NULL THEN
        SELECT * INTO key FROM @extschema@.outseta_auth_keys k WHERE k.kid = header->>'kid';
        IF NOT FOUND THEN
            RETURN @extschema@._outseta_fail('unknown_kid', 'Outseta token is signed with an unknown key id',
                'kid=' || @extschema@._outseta_printable(kid));
        END IF;
        mismatch := @extschema@._outseta_key_misfit(key.family, key.alg, token_alg);
        IF mismatch IS NOT NULL THEN
            RETURN @extschema@._outseta_fail('key_mismatch', 'Outseta token algorithm does not match its key',
                format('kid=%s alg=%s: %s', @extschema@._outseta_printable(kid), token_alg, mismatch));
        END IF;
    ELSE
        SELECT count(*) INTO candidates FROM @extschema@.outseta_auth_keys k
        WHERE @extschema@._outseta_key_misfit(k.family, k.alg, token_alg) IS NULL;
        IF candidates <> 1 THEN
            RETURN @extschema@._outseta_fail('no_matching_key', 'no key fits the Outseta token',
                format('the token has no kid, and %s usable keys fit alg=%s', candidates, token_alg));
        END IF;
        SELECT * INTO key FROM @extschema@.outseta_auth_keys k
        WHERE @extschema@._outseta_key_misfit(k.family, k.alg, token_alg) IS NULL;
    END IF;

    hash := CASE token_alg WHEN 'RS256' THEN 'SHA-256' WHEN 'RS384' THEN 'SHA-384' WHEN 'RS512' THEN 'SHA-512' END;
    IF hash IS NULL OR key.family <> 'Rsa' OR @extschema@._outseta_rsa_pkcs1_verify(key.n, key.e, key.nbytes,
            key.digits, key.mu, CASE hash WHEN 'SHA-256' THEN key.em256 WHEN 'SHA-384' THEN key.em384 ELSE key.em512 END,
            hash, convert_to(parts[1] || '.' || parts[2], 'UTF8'), sig) IS NOT TRUE THEN
        RETURN @extschema@._outseta_fail('bad_signature', 'Outseta token has a bad signature',
            CASE WHEN kid IS NOT NULL THEN 'kid=' || @extschema@._outseta_printable(kid) END);
    END IF;
    RETURN @extschema@._outseta_check_claims(payload, st, now);
END
$fn$;

-- Why a key cannot verify a token whose header says alg (NULL: it can).
CREATE OR REPLACE FUNCTION @extschema@._outseta_key_misfit(family text, key_alg text, alg text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT CASE
        WHEN @extschema@._outseta_alg_family(alg) <> family
            THEN format('%s needs a %s key, this is %s', alg, @extschema@._outseta_alg_family(alg), family)
        WHEN key_alg IS NOT NULL AND key_alg <> alg
            THEN format('the key is for %s, the token says %s', key_alg, alg)
    END
$fn$;

-- The session's memo of verified tokens: the GUC outseta_auth_sql.memo, session-level, so
-- that it also serves read-only transactions and hot standbys, where nothing can be written.
-- Up to 8 entries, newest first, each SHA-256(memo_key || digest) in hex, where digest is
-- SHA-256 of the token and the trust digest: a MAC under a key only the owner's table holds
-- (no role that can set the GUC can make an entry), of a fixed-length input (no length
-- extension), useless without the token itself. Nothing else is kept in it (another client
-- of a pooled connection could read it): exp and nbf come from the token's claims.
-- The memo's entry for a digest (inlined where it is called: no function call).
CREATE OR REPLACE FUNCTION @extschema@._outseta_memo_entry(memo_key bytea, digest bytea) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT pg_catalog.encode(pg_catalog.sha256(memo_key OPERATOR(pg_catalog.||) digest), 'hex')
$fn$;

-- Remember an entry in the session's memo.
CREATE OR REPLACE FUNCTION @extschema@._outseta_memo_put(entry text) RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM set_config('outseta_auth_sql.memo',
        array_to_string(ARRAY[entry]
            || (string_to_array(nullif(current_setting('outseta_auth_sql.memo', true), ''), ','))[1:7], ','),
        false);
END
$fn$;

-- The claims of a token the session's memo holds under st, else NULL (one expression,
-- inlined where it is called). exp and nbf are checked by the caller.
CREATE OR REPLACE FUNCTION @extschema@._outseta_memo_claims(st @extschema@.outseta_auth_state, token text) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
    SELECT CASE WHEN pg_catalog.strpos(pg_catalog.current_setting('outseta_auth_sql.memo', true),
        @extschema@._outseta_memo_entry(st.memo_key, pg_catalog.sha256(pg_catalog.convert_to(token, 'UTF8')
            OPERATOR(pg_catalog.||) st.trust))) OPERATOR(pg_catalog.>) 0
    -- verified before: its payload is strict base64url of UTF-8 JSON
    THEN pg_catalog.convert_from(pg_catalog.decode(
        pg_catalog.replace(pg_catalog.replace(pg_catalog.split_part(token, '.', 2), '-', '+'), '_', '/')
        OPERATOR(pg_catalog.||) pg_catalog.repeat('=', (4 OPERATOR(pg_catalog.-)
            (pg_catalog.length(pg_catalog.split_part(token, '.', 2)) OPERATOR(pg_catalog.%) 4)) OPERATOR(pg_catalog.%) 4),
        'base64'), 'UTF8')::pg_catalog.jsonb END
$fn$;

-- The verdict for a token under st: the session's memo (exp and nbf checked again, claims
-- read from the token), then the verified-token table (likewise), else the whole check,
-- remembered in the memo, and in the table when the transaction can write. A remembered
-- verdict counts only while the keys that gave it may be used (jwks_max_stale).
CREATE OR REPLACE FUNCTION @extschema@._outseta_verdict_under(token text, st @extschema@.outseta_auth_state)
RETURNS @extschema@._outseta_outcome
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    now double precision := extract(epoch FROM clock_timestamp());
    key_digest bytea;
    in_memo boolean := false;
    claims jsonb;
    exp double precision;
    nbf double precision;
    o @extschema@._outseta_outcome;
BEGIN
    IF st.config_error IS NOT NULL THEN
        RETURN @extschema@._outseta_fail('config_error', 'invalid value for outseta_auth.domain', st.config_error);
    END IF;
    IF octet_length(token) <= 16384 AND now < st.keys_until THEN
        claims := @extschema@._outseta_memo_claims(st, token);
        IF claims IS NOT NULL THEN
            exp := @extschema@._outseta_f64((claims ->> 'exp')::numeric);
            nbf := @extschema@._outseta_f64((claims ->> 'nbf')::numeric);
            in_memo := true;
        END IF;
        IF NOT in_memo THEN
            key_digest := sha256(convert_to(token, 'UTF8') || st.trust);
            SELECT v.claims, v.exp, v.nbf INTO claims, exp, nbf
            FROM @extschema@.outseta_auth_verified v WHERE v.digest = key_digest;
        END IF;
        IF claims IS NOT NULL THEN
            IF now >= exp + st.leeway THEN
                RETURN @extschema@._outseta_fail('expired', 'Outseta token has expired',
                    format('exp=%s now=%s leeway=%ss', @extschema@._outseta_num_text(exp), floor(now)::bigint, st.leeway));
            ELSIF nbf > now + st.leeway THEN
                RETURN @extschema@._outseta_fail('not_yet_valid', 'Outseta token is not yet valid',
                    format('nbf=%s now=%s leeway=%ss', @extschema@._outseta_num_text(nbf), floor(now)::bigint, st.leeway));
            END IF;
            IF NOT in_memo THEN
                PERFORM @extschema@._outseta_memo_put(@extschema@._outseta_memo_entry(st.memo_key, key_digest));
            END IF;
            RETURN ROW(claims, NULL, NULL, NULL)::@extschema@._outseta_outcome;
        END IF;
    END IF;
    -- No fetch from here: a caller's session may carry the http extension's options (a
    -- proxy, TLS checks off) and would hold the owner's rows; keys are fetched by the owner
    -- (outseta_refresh_jwks(), a pg_cron job) or pushed (outseta_set_jwks()).
    o := @extschema@._outseta_check(token, st, now);
    IF o.code IS NULL THEN
        key_digest := sha256(convert_to(token, 'UTF8') || st.trust);
        exp := @extschema@._outseta_f64((o.claims->>'exp')::numeric);
        nbf := @extschema@._outseta_f64((o.claims->>'nbf')::numeric);
        PERFORM @extschema@._outseta_memo_put(@extschema@._outseta_memo_entry(st.memo_key, key_digest));
        IF current_setting('transaction_read_only') = 'off' THEN
            INSERT INTO @extschema@.outseta_auth_verified (digest, claims, exp, nbf)
            VALUES (key_digest, o.claims, exp, nbf)
            ON CONFLICT DO NOTHING;
            -- Pruned by exp, now and then (about one insert in 64).
            IF random() < 1.0 / 64 THEN
                DELETE FROM @extschema@.outseta_auth_verified v WHERE v.exp + st.leeway < now;
            END IF;
        END IF;
    END IF;
    RETURN o;
END
$fn$;

-- The verdict for a token given by the caller (outseta_verify and its family).
CREATE OR REPLACE FUNCTION @extschema@._outseta_verdict(token text) RETURNS @extschema@._outseta_outcome
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    st @extschema@.outseta_auth_state;
BEGIN
    SELECT * INTO st FROM @extschema@.outseta_auth_state;
    RETURN @extschema@._outseta_verdict_under(token, st);
END
$fn$;

-- The verdict for the current request's token; NULL when it has none; with raise, a
-- refusal is raised instead of returned. The per-statement path: one row read, the token
-- setting, the memo, in few expressions.
CREATE OR REPLACE FUNCTION @extschema@._outseta_current_outcome(raise boolean) RETURNS @extschema@._outseta_outcome
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    st @extschema@.outseta_auth_state;
    t text;
    claims jsonb;
    o @extschema@._outseta_outcome;
BEGIN
    SELECT * INTO st FROM @extschema@.outseta_auth_state;
    t := CASE WHEN st.token_sources[1] = 'setting'
              THEN nullif(btrim(current_setting('outseta_auth.token', true), E' \t\n\r\f'), '') END;
    IF t IS NULL THEN
        t := @extschema@._outseta_token_from(st, false);
        IF t IS NULL THEN
            RETURN NULL;
        END IF;
    END IF;
    -- The common case, in few expressions: the memo holds it, and its times hold.
    IF octet_length(t) <= 16384 AND st.config_error IS NULL THEN
        claims := @extschema@._outseta_memo_claims(st, t);
        IF claims IS NOT NULL AND extract(epoch FROM clock_timestamp()) < least(st.keys_until,
                @extschema@._outseta_f64((claims ->> 'exp')::numeric) + st.leeway)
           AND coalesce(@extschema@._outseta_f64((claims ->> 'nbf')::numeric) <= extract(epoch FROM clock_timestamp()) + st.leeway, true) THEN
            RETURN ROW(claims, NULL, NULL, NULL)::@extschema@._outseta_outcome;
        END IF;
    END IF;
    -- Not in the memo: read the sources again, with the role-default check of
    -- outseta_auth.token, before the verified-token table or a signature check.
    t := @extschema@._outseta_token_from(st, true);
    IF t IS NULL THEN
        RETURN NULL;
    END IF;
    o := @extschema@._outseta_verdict_under(t, st);
    IF raise AND o.code IS NOT NULL THEN
        PERFORM @extschema@._outseta_raise(o.code, o.message, o.detail);
    END IF;
    RETURN o;
END
$fn$;
