-- Example application schema for outseta_auth, after Outseta's data-model guide:
-- app tables keep only Outseta uids (text), never copies of people or accounts.
--
-- Policies use the `(select outseta_sub())` form: the sub-select is an InitPlan the planner
-- evaluates once per statement, instead of once per row, and lets an index on the uid
-- column be used. Every uid column used by a policy is indexed.
--
-- Requires: CREATE EXTENSION outseta_auth; and a role for the application, here
-- `outseta_app` (created by the demo and the tests).

-- 1. Person-owned data ------------------------------------------------------------------
CREATE TABLE todos (
    id       bigserial PRIMARY KEY,
    user_id  text NOT NULL DEFAULT outseta_sub(),
    title    text NOT NULL,
    done     boolean NOT NULL DEFAULT false
);
CREATE INDEX todos_user_id_idx ON todos (user_id);
ALTER TABLE todos ENABLE ROW LEVEL SECURITY;
CREATE POLICY todos_select ON todos FOR SELECT USING (user_id = (select outseta_sub()));
CREATE POLICY todos_insert ON todos FOR INSERT WITH CHECK (user_id = (select outseta_sub()));
CREATE POLICY todos_update ON todos FOR UPDATE
    USING (user_id = (select outseta_sub())) WITH CHECK (user_id = (select outseta_sub()));
CREATE POLICY todos_delete ON todos FOR DELETE USING (user_id = (select outseta_sub()));

-- 2. A person's role within an account (Jane: admin in Acme, viewer in Globex) -----------
CREATE TABLE account_roles (
    account_uid text NOT NULL,
    person_uid  text NOT NULL,
    role        text NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
    PRIMARY KEY (account_uid, person_uid)
);
ALTER TABLE account_roles ENABLE ROW LEVEL SECURITY;
CREATE POLICY account_roles_select ON account_roles FOR SELECT
    USING (account_uid = (select outseta_account_uid()));

-- The caller's role in the token's account. SECURITY DEFINER so that policies on other
-- tables can consult account_roles without recursing through its own RLS.
CREATE FUNCTION current_account_role() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT role FROM account_roles
    WHERE account_uid = outseta_account_uid() AND person_uid = outseta_sub()
$$;

-- 3. Account-owned data, stamped with who created and last edited it ------------------
CREATE TABLE documents (
    id                        bigserial PRIMARY KEY,
    account_uid               text NOT NULL DEFAULT outseta_account_uid(),
    created_by_person_uid     text NOT NULL DEFAULT outseta_sub(),
    last_edited_by_person_uid text NOT NULL DEFAULT outseta_sub(),
    title                     text NOT NULL,
    body                      text NOT NULL DEFAULT ''
);
CREATE INDEX documents_account_uid_idx ON documents (account_uid);

CREATE FUNCTION documents_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF outseta_sub() IS NOT NULL THEN
        NEW.last_edited_by_person_uid := outseta_sub();
        IF TG_OP = 'INSERT' THEN
            NEW.created_by_person_uid := outseta_sub();
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER documents_stamp BEFORE INSERT OR UPDATE ON documents
    FOR EACH ROW EXECUTE FUNCTION documents_stamp();

ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
CREATE POLICY documents_select ON documents FOR SELECT
    USING (account_uid = (select outseta_account_uid()));
CREATE POLICY documents_insert ON documents FOR INSERT
    WITH CHECK (account_uid = (select outseta_account_uid())
                AND (select current_account_role()) IN ('admin', 'editor'));
CREATE POLICY documents_update ON documents FOR UPDATE
    USING (account_uid = (select outseta_account_uid())
           AND (select current_account_role()) IN ('admin', 'editor'))
    WITH CHECK (account_uid = (select outseta_account_uid()));
-- Only admins of the account may delete.
CREATE POLICY documents_delete ON documents FOR DELETE
    USING (account_uid = (select outseta_account_uid())
           AND (select current_account_role()) = 'admin');

-- 4. A person's settings within an account ----------------------------------------------
CREATE TABLE person_account_settings (
    person_uid      text NOT NULL DEFAULT outseta_sub(),
    account_uid     text NOT NULL DEFAULT outseta_account_uid(),
    theme           text NOT NULL DEFAULT 'light',
    notifications   boolean NOT NULL DEFAULT true,
    onboarding_done boolean NOT NULL DEFAULT false,
    PRIMARY KEY (person_uid, account_uid)
);
ALTER TABLE person_account_settings ENABLE ROW LEVEL SECURITY;
CREATE POLICY pas_all ON person_account_settings
    USING (person_uid = (select outseta_sub()) AND account_uid = (select outseta_account_uid()))
    WITH CHECK (person_uid = (select outseta_sub()) AND account_uid = (select outseta_account_uid()));

-- 5. An append-only activity log (person + account) -------------------------------------
CREATE TABLE activity_log (
    id          bigserial PRIMARY KEY,
    person_uid  text NOT NULL DEFAULT outseta_sub(),
    account_uid text NOT NULL DEFAULT outseta_account_uid(),
    action      text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX activity_log_account_uid_idx ON activity_log (account_uid);
ALTER TABLE activity_log ENABLE ROW LEVEL SECURITY;
-- Everyone sees their own entries; admins see the whole account's.
CREATE POLICY activity_select ON activity_log FOR SELECT
    USING (account_uid = (select outseta_account_uid())
           AND (person_uid = (select outseta_sub()) OR (select current_account_role()) = 'admin'));
CREATE POLICY activity_insert ON activity_log FOR INSERT
    WITH CHECK (person_uid = (select outseta_sub()) AND account_uid = (select outseta_account_uid()));
-- No UPDATE or DELETE policy: the log is append-only for the application.

-- 6. Data gated on the subscription: reports need the "reporting" add-on -----------------
CREATE TABLE reports (
    id          bigserial PRIMARY KEY,
    account_uid text NOT NULL DEFAULT outseta_account_uid(),
    title       text NOT NULL
);
CREATE INDEX reports_account_uid_idx ON reports (account_uid);
ALTER TABLE reports ENABLE ROW LEVEL SECURITY;
CREATE POLICY reports_select ON reports FOR SELECT
    USING (account_uid = (select outseta_account_uid())
           AND 'addon_reporting' = ANY (coalesce((select outseta_add_on_uids()), '{}')));

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO outseta_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO outseta_app;
