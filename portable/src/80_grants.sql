-- Privileges. PUBLIC may call the accessors, the verify family and the webhook check, and
-- the few helpers they run as the caller; it may not change the configuration, read the
-- secret, write keys or verdicts, or call any other helper (revoked, not merely unused).
DO $grants$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = '@extschema@'::regnamespace
          AND (p.proname LIKE 'outseta\_%' OR p.proname LIKE '\_outseta\_%')
    LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = '@extschema@'::regnamespace
          AND ((p.proname LIKE 'outseta\_%'
                AND p.proname NOT IN ('outseta_config_set', 'outseta_config_reset', 'outseta_set_jwks',
                                      'outseta_refresh_jwks', 'outseta_jwks_status'))
               OR p.proname IN ('_outseta_claims_of', '_outseta_raise', '_outseta_for_caller',
                                '_outseta_sqlstate', '_outseta_hint', '_outseta_error_text',
                                '_outseta_result', '_outseta_fail', '_outseta_verdict',
                                '_outseta_current_outcome', '_outseta_string',
                                '_outseta_webhook_check', '_outseta_pre_request_settings'))
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f);
    END LOOP;
END
$grants$;
GRANT EXECUTE ON FUNCTION @extschema@.outseta_jwks_status() TO pg_monitor;
SELECT @extschema@._outseta_resolve();
