-- PostgREST as the receiver of Outseta's webhooks (Activity Notifications), with no server
-- code: POST /rpc/outseta_webhook. Run as a superuser after roles.sql.
--
-- In Outseta: Settings > Notifications > add an account notification (e.g. "Subscription
-- Updated", "Account Updated") whose callback URL is https://<your PostgREST>/rpc/outseta_webhook.
-- Its signing key (64 hex characters) goes into the cluster's configuration, never into SQL
-- that ordinary roles can read:
--
--   ALTER SYSTEM SET outseta_auth.webhook_secret = '<64 hex characters>';
--   SELECT pg_reload_conf();
--
-- Outseta signs the raw body; the single unnamed `json` parameter makes PostgREST pass the
-- body to the function byte for byte (json keeps its input text; jsonb would not), and
-- $1::text is exactly what was signed.

-- The account's current subscription, as the latest webhook told it. Policies read this
-- instead of the token's outseta:planUid/addOnUids, so a downgrade takes effect as soon as
-- Outseta reports it, not when the person's (up to 7-day) token expires.
CREATE TABLE account_subscriptions (
    account_uid  text PRIMARY KEY,
    plan_uid     text,
    add_on_uids  text[] NOT NULL DEFAULT '{}',
    -- Outseta's "Updated" of the account: an older (or replayed) webhook, or one without
    -- "Updated", never overwrites a newer one.
    updated      timestamptz,
    received_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE account_subscriptions ENABLE ROW LEVEL SECURITY;
CREATE POLICY account_subscriptions_select ON account_subscriptions FOR SELECT
    USING (account_uid = (select outseta_account_uid()));
GRANT SELECT ON account_subscriptions TO authenticated;

-- The add-ons of the caller's account as the webhooks last reported them; NULL while no
-- webhook has been received for it (SECURITY DEFINER: usable in other tables' policies).
CREATE FUNCTION current_account_add_ons() RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT add_on_uids FROM account_subscriptions WHERE account_uid = outseta_account_uid()
$$;

-- Example: reports need the "addon_reporting" add-on. outseta_app.sql's policy asks the
-- token; this restrictive one also asks the latest webhook, so removing the add-on hides
-- the reports at once, while the person's token still lists it. (No webhook yet for the
-- account: the token decides.) Created only if the example schema is loaded.
DO $$ BEGIN
    IF to_regclass('public.reports') IS NOT NULL THEN
        CREATE POLICY reports_select_live ON reports AS RESTRICTIVE FOR SELECT
            USING (coalesce('addon_reporting' = ANY ((select current_account_add_ons())::text[]),
                            true));
        GRANT SELECT ON reports TO authenticated;
    END IF;
END $$;

-- The receiver. Anyone can POST to it (Outseta sends no token): the signature is the only
-- credential, so nothing is read or written before it has been checked.
CREATE FUNCTION outseta_webhook(json) RETURNS json
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    signature text := current_setting('request.headers', true)::json ->> 'x-hub-signature-256';
    account   json;
    updated   timestamptz;
BEGIN
    IF NOT coalesce(outseta_verify_webhook($1::text, signature), false) THEN
        RAISE SQLSTATE 'PGRST' USING
            MESSAGE = json_build_object(
                'code', 'outseta_webhook_signature',
                'message', 'the webhook signature is missing or does not match',
                'hint', 'Outseta signs the raw body with the key in outseta_auth.webhook_secret; '
                        'check that both hold the same key')::text,
            DETAIL = json_build_object('status', 401, 'headers', json_build_object())::text;
    END IF;
    -- Account notifications send the Account; some send an object holding it.
    account := CASE WHEN json_typeof($1) = 'object' AND $1 -> 'Account' IS NOT NULL
                    THEN $1 -> 'Account' ELSE $1 END;
    IF json_typeof(account) IS DISTINCT FROM 'object' OR account ->> 'Uid' IS NULL THEN
        RAISE SQLSTATE 'PGRST' USING
            MESSAGE = json_build_object(
                'code', 'outseta_webhook_payload',
                'message', 'a signed webhook without an account Uid',
                'hint', 'send account notifications (Account/Subscription events) here')::text,
            DETAIL = json_build_object('status', 422, 'headers', json_build_object())::text;
    END IF;
    updated := (account ->> 'Updated')::timestamptz;
    INSERT INTO account_subscriptions AS s (account_uid, plan_uid, add_on_uids, updated)
    VALUES (
        account ->> 'Uid',
        account -> 'CurrentSubscription' -> 'Plan' ->> 'Uid',
        coalesce(ARRAY(SELECT a -> 'AddOn' ->> 'Uid'
                       FROM json_array_elements(
                                CASE WHEN json_typeof(account -> 'CurrentSubscription'
                                                      -> 'SubscriptionAddOns') = 'array'
                                     THEN account -> 'CurrentSubscription' -> 'SubscriptionAddOns'
                                     ELSE '[]' END) a
                       WHERE a -> 'AddOn' ->> 'Uid' IS NOT NULL), '{}'),
        updated)
    ON CONFLICT (account_uid) DO UPDATE
        SET plan_uid = EXCLUDED.plan_uid, add_on_uids = EXCLUDED.add_on_uids,
            updated = EXCLUDED.updated, received_at = now()
        WHERE s.updated IS NULL OR EXCLUDED.updated >= s.updated;
    RETURN json_build_object('account_uid', account ->> 'Uid');
END $$;
REVOKE ALL ON FUNCTION outseta_webhook(json) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outseta_webhook(json) TO anon, authenticated;
