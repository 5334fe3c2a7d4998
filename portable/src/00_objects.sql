-- outseta_auth_sql: the portable edition of outseta_auth (SQL and PL/pgSQL only).
--
-- The types and tables. Every object lives in @extschema@ (the extension's schema under
-- pg_tle, the first schema of the installing role's search_path for the plain script).
-- Running this again (the plain script) keeps every row: tables are created if missing.

DO $objects$
BEGIN
    -- What this script finds already there must be the installing role's: a table or type
    -- another role made in the schema (where it may create) would decide trust.
    IF EXISTS (SELECT FROM pg_catalog.pg_class c
               WHERE c.relnamespace = '@extschema@'::regnamespace
                 AND c.relname IN ('outseta_auth_config', 'outseta_auth_state', 'outseta_auth_keyset',
                                   'outseta_auth_keys', 'outseta_auth_ignored_keys', 'outseta_auth_verified')
                 AND c.relowner <> (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user))
       OR EXISTS (SELECT FROM pg_catalog.pg_type t
                  WHERE t.typnamespace = '@extschema@'::regnamespace
                    AND t.typname IN ('outseta_verify_result', '_outseta_outcome')
                    AND t.typowner <> (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)) THEN
        RAISE EXCEPTION 'outseta_auth_sql: objects named like its own in schema % belong to another role', '@extschema@'
            USING HINT = 'Install into a schema only the installing role can create objects in.';
    END IF;
    IF pg_catalog.to_regtype('@extschema@.outseta_verify_result') IS NULL THEN
        CREATE TYPE @extschema@.outseta_verify_result AS (
            valid boolean,
            claims jsonb,
            error_code text,
            error text
        );
    END IF;
    -- What one verification step gives: the claims, or the error's code, message and detail
    -- (the SQLSTATE and hint follow from the code: @extschema@._outseta_raise).
    IF pg_catalog.to_regtype('@extschema@._outseta_outcome') IS NULL THEN
        CREATE TYPE @extschema@._outseta_outcome AS (
            claims jsonb,
            code text,
            message text,
            detail text
        );
    END IF;
END
$objects$;

-- The internal helpers are made anew by this script: those of an earlier version go first
-- (policies use only the public functions, which are replaced in place).
DO $helpers$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = '@extschema@'::regnamespace AND p.proname LIKE '\_outseta\_%'
    LOOP
        EXECUTE pg_catalog.format('DROP FUNCTION %s', f);
    END LOOP;
END
$helpers$;

-- The trust configuration: only values set with outseta_config_set(); defaults are in
-- @extschema@._outseta_settings(). Owner only (the webhook secret is here).
CREATE TABLE IF NOT EXISTS @extschema@.outseta_auth_config (
    setting text PRIMARY KEY,
    value text NOT NULL
);

-- The configuration resolved once per change (one row): all that a verification and the
-- token lookup read, in one row read.
CREATE TABLE IF NOT EXISTS @extschema@.outseta_auth_state (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    algorithms text[] NOT NULL,
    issuers text[] NOT NULL,
    audiences text[] NOT NULL,
    leeway integer NOT NULL,
    -- 'literal', 'url', or NULL with config_error set
    source_kind text,
    source_label text,
    config_error text,
    max_stale integer NOT NULL,
    -- until when (epoch seconds) the stored keys may be used: +infinity for a literal key
    -- set, the last fetch + jwks_max_stale for fetched or pushed ones, -infinity for none
    keys_until double precision NOT NULL,
    token_sources text[] NOT NULL,
    token_cookie text NOT NULL,
    token_header text NOT NULL,
    cookie_origins text[] NOT NULL,
    -- what outseta_pre_request() reads
    authenticated_role text NOT NULL,
    pre_request_claims boolean NOT NULL,
    -- SHA-256 of everything a verdict depends on: the trust settings and the key set
    trust bytea NOT NULL,
    -- the key of the session memo's MACs (random, made once; never leaves this table)
    memo_key bytea NOT NULL
);

-- The key set in use: parsed once per change. One row.
CREATE TABLE IF NOT EXISTS @extschema@.outseta_auth_keyset (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    source text NOT NULL,
    digest bytea NOT NULL,
    version bigint NOT NULL,
    fetched_at timestamptz,
    expires_at timestamptz,
    fetch_count bigint NOT NULL DEFAULT 0,
    last_error text
);

-- Its usable keys (RSA keys with the modulus as numeric), and the ones set aside.
CREATE TABLE IF NOT EXISTS @extschema@.outseta_auth_keys (
    ord integer PRIMARY KEY,
    kid text,
    family text NOT NULL,      -- Rsa, EcP256, EcP384, Ed25519 (as the native edition names them)
    alg text,                  -- the JWK's own alg, if it names one
    bits integer NOT NULL,
    nbytes integer,            -- RSA: the modulus' length in bytes
    n numeric,
    e bigint,
    -- what the signature check needs of an RSA key alone (_outseta_rsa_key)
    digits integer,
    mu numeric,
    em256 numeric,
    em384 numeric,
    em512 numeric
);
CREATE TABLE IF NOT EXISTS @extschema@.outseta_auth_ignored_keys (
    ord integer PRIMARY KEY,
    kid text,
    reason text NOT NULL
);

-- Verified tokens: keyed by SHA-256 of the token and the trust digest it was verified under
-- (never by anything a caller can set). A hit skips the signature check; exp and nbf are
-- checked again. Pruned by exp; emptied when the trust or the key set changes.
CREATE TABLE IF NOT EXISTS @extschema@.outseta_auth_verified (
    digest bytea PRIMARY KEY,
    claims jsonb NOT NULL,
    exp double precision NOT NULL,
    nbf double precision
);

REVOKE ALL ON TABLE @extschema@.outseta_auth_config, @extschema@.outseta_auth_state,
    @extschema@.outseta_auth_keyset, @extschema@.outseta_auth_keys,
    @extschema@.outseta_auth_ignored_keys, @extschema@.outseta_auth_verified FROM PUBLIC;

-- pg_dump keeps the configuration of an extension installed with pg_tle; the plain script
-- is no extension, and there the tables are dumped as the owner's own.
DO $dump$
BEGIN
    PERFORM pg_catalog.pg_extension_config_dump('@extschema@.outseta_auth_config', '');
EXCEPTION WHEN others THEN
    NULL;
END
$dump$;
