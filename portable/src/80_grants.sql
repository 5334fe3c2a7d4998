-- Privileges. PUBLIC may call the accessors, the verify family and the webhook check; it may
-- not change the configuration, read the secret, or write keys or verdicts. Every helper
-- that reads the configuration is the owner's alone.
DO $grants$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = '@extschema@'::regnamespace
          AND (p.proname LIKE 'outseta\_%' OR p.proname LIKE '\_outseta\_%')
          AND p.proname NOT IN ('outseta_config_set', 'outseta_config_reset', 'outseta_set_jwks',
                                'outseta_refresh_jwks', 'outseta_jwks_status',
                                '_outseta_setting', '_outseta_store_keys', '_outseta_resolve',
                                '_outseta_source_changed', '_outseta_fetch_jwks', '_outseta_maybe_fetch',
                                '_outseta_verdict_under', '_outseta_memo_put')
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f);
    END LOOP;
    -- Functions are executable by PUBLIC when created: the owner's alone are revoked.
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = '@extschema@'::regnamespace
          AND p.proname IN ('outseta_config_set', 'outseta_config_reset', 'outseta_set_jwks',
                            'outseta_refresh_jwks', 'outseta_jwks_status',
                            '_outseta_setting', '_outseta_store_keys', '_outseta_resolve',
                            '_outseta_source_changed', '_outseta_fetch_jwks', '_outseta_maybe_fetch',
                                '_outseta_verdict_under', '_outseta_memo_put')
    LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$grants$;
GRANT EXECUTE ON FUNCTION @extschema@.outseta_jwks_status() TO pg_monitor;
SELECT @extschema@._outseta_resolve();
