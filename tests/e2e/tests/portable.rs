//! The portable edition (`portable/outseta_auth_sql.sql`, no native code) through real
//! connections, on any PostgreSQL version (scripts/portable runs it on 14-18): installed by a
//! role that is not a superuser, configured by its owner, used by an ordinary role.

use outseta_dev::{now, SigningKey};
use outseta_e2e::connect_as;
use outseta_e2e::portable::{fresh_db, port, set, sqlstate, try_verify, APP, OWNER};
use postgres::Client;
use serde_json::{json, Value};

const ISS: &str = "https://portable.outseta.com";

fn claims(sub: &str, exp_in: i64) -> Value {
    json!({
        "sub": sub, "email": format!("{sub}@example.com"), "name": "Jane Doe",
        "outseta:accountUid": "wZmNw7Q2", "outseta:planUid": "OW4pRYWg",
        "outseta:subscriptionUid": "j9ma0qQn", "outseta:addOnUids": ["a1", "a2"],
        "outseta:isPrimary": "1", "iss": ISS, "aud": "portable.outseta.com",
        "iat": now() - 5, "nbf": now() - 5, "exp": now() + exp_in,
    })
}

/// A database with the portable edition keyed to `key` (a literal key set) and the issuer.
fn configured(name: &str, key: &SigningKey) -> Client {
    let mut owner = fresh_db(name);
    set(
        &mut owner,
        "outseta_auth.jwks",
        &json!({"keys": [key.jwk()]}).to_string(),
    );
    set(&mut owner, "outseta_auth.issuer", ISS);
    owner
}

fn app(db: &str) -> Client {
    connect_as(port(), APP, db)
}

/// Named `portable_edition::…` so that scripts/e2e can leave these to their own runner.
mod portable_edition {
    use super::*;

    #[test]
    fn wycheproof_rsa_pkcs1_sha256_vectors() {
        // The RSA check alone (valid: accepted; invalid and "acceptable": refused, as the native
        // edition's crypto library refuses the one "acceptable" case, a DigestInfo without NULL).
        let mut owner = fresh_db("portable_wycheproof");
        let mut counts = [0usize; 3];
        for bits in [2048, 3072, 4096] {
            let path = format!(
                "{}/../vectors/wycheproof/rsa_signature_{bits}_sha256_test.json",
                env!("CARGO_MANIFEST_DIR")
            );
            let doc: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for group in doc["testGroups"].as_array().unwrap() {
                let n = group["publicKey"]["modulus"].as_str().unwrap();
                let e = group["publicKey"]["publicExponent"].as_str().unwrap();
                let tests = group["tests"].as_array().unwrap();
                let msgs: Vec<&str> = tests.iter().map(|t| t["msg"].as_str().unwrap()).collect();
                let sigs: Vec<&str> = tests.iter().map(|t| t["sig"].as_str().unwrap()).collect();
                let rows = owner
                    .query(
                        "WITH h AS (SELECT ltrim($1, '0') AS n),
                          k AS (SELECT public._outseta_num(decode(lpad(h.n, length(h.n) + length(h.n) % 2, '0'), 'hex')) AS n,
                                       (length(h.n) + 1) / 2 AS nbytes FROM h)
                     SELECT public._outseta_rsa_pkcs1_verify(k.n, public._outseta_num(decode($2, 'hex'))::bigint,
                         k.nbytes, x.digits, x.mu, x.em256, 'SHA-256', decode(m, 'hex'), decode(s, 'hex'))
                     FROM k, public._outseta_rsa_key(k.n, k.nbytes) x,
                          unnest($3::text[], $4::text[]) WITH ORDINALITY AS t(m, s, i) ORDER BY i",
                        &[&n, &e, &msgs, &sigs],
                    )
                    .unwrap();
                for (t, row) in tests.iter().zip(rows) {
                    let accepted: bool = row.get(0);
                    let result = t["result"].as_str().unwrap();
                    let expected = result == "valid";
                    assert_eq!(
                        accepted, expected,
                        "{bits}-bit tcId {} ({result}, {}): accepted={accepted}",
                        t["tcId"], t["comment"]
                    );
                    counts[match result {
                        "valid" => 0,
                        "invalid" => 1,
                        _ => 2,
                    }] += 1;
                }
            }
        }
        eprintln!(
            "wycheproof: {} valid accepted, {} invalid and {} acceptable refused",
            counts[0], counts[1], counts[2]
        );
        assert!(counts[0] >= 20 && counts[1] >= 700, "{counts:?}");
    }

    #[test]
    fn a_token_verifies_and_the_accessors_read_its_claims() {
        let key = SigningKey::generate("k1");
        let _owner = configured("portable_accessors", &key);
        let token = key.mint(&claims("L9nqAzQZ", 600));
        let mut c = app("portable_accessors");
        let mut tx = c.transaction().unwrap();
        tx.execute(
            "SELECT set_config('outseta_auth.token', $1, true)",
            &[&token],
        )
        .unwrap();
        let row = tx
            .query_one(
                "SELECT outseta_sub(), outseta_account_uid(), outseta_email(), outseta_name(),
                        outseta_plan_uid(), outseta_subscription_uid(), outseta_add_on_uids(),
                        outseta_is_primary(), outseta_claim('iss') #>> '{}', (outseta_claims() ->> 'sub'),
                        (outseta_try_current()).valid",
                &[],
            )
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "L9nqAzQZ");
        assert_eq!(row.get::<_, String>(1), "wZmNw7Q2");
        assert_eq!(row.get::<_, String>(2), "L9nqAzQZ@example.com");
        assert_eq!(row.get::<_, String>(3), "Jane Doe");
        assert_eq!(row.get::<_, String>(4), "OW4pRYWg");
        assert_eq!(row.get::<_, String>(5), "j9ma0qQn");
        assert_eq!(row.get::<_, Vec<String>>(6), vec!["a1", "a2"]);
        assert!(row.get::<_, bool>(7));
        assert_eq!(row.get::<_, String>(8), ISS);
        assert_eq!(row.get::<_, String>(9), "L9nqAzQZ");
        assert!(row.get::<_, bool>(10));
        tx.rollback().unwrap();

        // No token: NULL everywhere, no error.
        let row = c
            .query_one("SELECT outseta_sub(), outseta_try_current() IS NULL", &[])
            .unwrap();
        assert_eq!(row.get::<_, Option<String>>(0), None);
        assert!(row.get::<_, bool>(1));

        // outseta_authenticate: verify, then the token for the rest of the transaction.
        let mut tx = c.transaction().unwrap();
        let claims: String = tx
            .query_one("SELECT outseta_authenticate($1)::text", &[&token])
            .unwrap()
            .get(0);
        let claims: Value = serde_json::from_str(&claims).unwrap();
        assert_eq!(claims["sub"], "L9nqAzQZ");
        let sub: String = tx.query_one("SELECT outseta_sub()", &[]).unwrap().get(0);
        assert_eq!(sub, "L9nqAzQZ");
        tx.commit().unwrap();
        let sub: Option<String> = c.query_one("SELECT outseta_sub()", &[]).unwrap().get(0);
        assert_eq!(sub, None, "the token lasts for its transaction only");
    }

    #[test]
    fn refused_tokens_raise_28000_with_the_native_codes() {
        let key = SigningKey::generate("k1");
        let _owner = configured("portable_refusals", &key);
        let other = SigningKey::generate("k1");
        let mut c = app("portable_refusals");
        let cases = [
            (key.mint(&claims("p", -120)), "expired"),
            (other.mint(&claims("p", 600)), "bad_signature"),
            (
                SigningKey::generate("zz").mint(&claims("p", 600)),
                "unknown_kid",
            ),
            ("a.b".to_string(), "malformed"),
            ("x".repeat(16 * 1024 + 1), "too_large"),
            (
                key.mint_with_header(&json!({"alg": "HS256", "kid": "k1"}), &claims("p", 600)),
                "algorithm_not_allowed",
            ),
            (
                key.mint(&{
                    let mut c = claims("p", 600);
                    c["iss"] = json!("https://evil.example");
                    c
                }),
                "issuer_mismatch",
            ),
        ];
        for (token, code) in &cases {
            let e = c
                .query_one("SELECT outseta_verify($1)", &[token])
                .expect_err(code);
            assert_eq!(sqlstate(&e), "28000", "{code}: {e}");
            assert_eq!(try_verify(&mut c, token), (false, Some(code.to_string())));
        }
        // The error text carries no token material.
        let (token, _) = &cases[1];
        let sig = token.rsplit('.').next().unwrap();
        let e = c
            .query_one("SELECT outseta_verify($1)", &[token])
            .unwrap_err();
        let db = e.as_db_error().unwrap();
        let text = format!("{} {:?} {:?}", db.message(), db.detail(), db.hint());
        assert!(
            !text.contains(sig) && !text.contains(&token[..40]),
            "{text}"
        );
    }

    #[test]
    fn only_the_owner_configures_and_no_setting_decides_trust() {
        let key = SigningKey::generate("k1");
        let mut owner = configured("portable_privileges", &key);
        set(&mut owner, "outseta_auth.webhook_secret", &"ab".repeat(32));
        let mut c = app("portable_privileges");
        for stmt in [
            "SELECT outseta_config_set('outseta_auth.issuer', '')",
            "SELECT outseta_config_reset('outseta_auth.issuer')",
            "SELECT outseta_set_jwks('{\"keys\": []}')",
            "SELECT outseta_refresh_jwks()",
            "SELECT * FROM outseta_jwks_status()",
            "SELECT public._outseta_setting('outseta_auth.webhook_secret')",
            "SELECT * FROM outseta_auth_config",
            "DELETE FROM outseta_auth_verified",
            "INSERT INTO outseta_auth_keys (ord, family, bits) VALUES (99, 'Rsa', 2048)",
            "UPDATE outseta_auth_state SET issuers = '{}'",
            "SELECT public._outseta_resolve()",
        ] {
            let e = c.batch_execute(stmt).expect_err(stmt);
            assert_eq!(sqlstate(&e), "42501", "{stmt}: {e}");
        }
        // The secret is never shown, to anyone.
        for client in [&mut c, &mut owner] {
            let v: String = client
                .query_one(
                    "SELECT value FROM outseta_config() WHERE setting = 'outseta_auth.webhook_secret'",
                    &[],
                )
                .unwrap()
                .get(0);
            assert_eq!(v, "(hidden)");
        }
        // outseta_auth.* placeholders are anyone's: setting them changes no trust.
        let attacker = SigningKey::generate("evil");
        let forged = attacker.mint(&claims("someone-else", 600));
        c.batch_execute(&format!(
            "SET outseta_auth.jwks = '{}'; SET outseta_auth.issuer = ''; SET outseta_auth.algorithms = 'RS256,HS256';",
            json!({"keys": [attacker.jwk()]})
        ))
        .unwrap();
        assert_eq!(
            try_verify(&mut c, &forged),
            (false, Some("unknown_kid".into()))
        );
    }

    #[test]
    fn objects_a_caller_creates_change_nothing() {
        let key = SigningKey::generate("k1");
        let _owner = configured("portable_search_path", &key);
        let valid = key.mint(&claims("L9nqAzQZ", 600));
        let forged =
            outseta_dev::with_payload(&valid, claims("someone-else", 600).to_string().as_bytes());
        let mut su = connect_as(port(), "postgres", "portable_search_path");
        su.batch_execute(&format!("CREATE SCHEMA evil AUTHORIZATION {APP}"))
            .unwrap();
        let mut c = app("portable_search_path");
        // Look-alikes of what the edition calls, earlier in the caller's path and in pg_temp.
        c.batch_execute(
            "CREATE FUNCTION evil.sha256(bytea) RETURNS bytea LANGUAGE sql AS $$ SELECT '\\x00'::bytea $$;
             CREATE FUNCTION evil.decode(text, text) RETURNS bytea LANGUAGE sql AS $$ SELECT '\\x00'::bytea $$;
             CREATE FUNCTION evil.mod(numeric, numeric) RETURNS numeric LANGUAGE sql AS $$ SELECT 0::numeric $$;
             CREATE FUNCTION evil.numeq(numeric, numeric) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
             CREATE OPERATOR evil.= (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = evil.numeq);
             CREATE FUNCTION evil.byteaeq(bytea, bytea) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
             CREATE OPERATOR evil.= (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = evil.byteaeq);
             CREATE TABLE evil.outseta_auth_keys (ord int, kid text, family text, alg text, bits int, nbytes int, n numeric, e bigint);
             CREATE TEMP TABLE outseta_auth_state (x int);
             CREATE TEMP TABLE outseta_auth_verified (x int);
             SET search_path = pg_temp, evil, public, pg_catalog;",
        )
        .unwrap();
        assert_eq!(
            try_verify(&mut c, &forged),
            (false, Some("bad_signature".into()))
        );
        assert_eq!(try_verify(&mut c, &valid), (true, None));
        let sub: String = c
            .query_one("SELECT (outseta_verify($1)) ->> 'sub'", &[&valid])
            .unwrap()
            .get(0);
        assert_eq!(sub, "L9nqAzQZ");
    }

    #[test]
    fn settings_are_validated_with_the_native_messages() {
        let mut owner = fresh_db("portable_settings");
        let cases = [
            (
                "outseta_auth.algorithms",
                "HS256",
                "22023",
                "is never allowed",
            ),
            (
                "outseta_auth.algorithms",
                "rs256",
                "22023",
                "unknown algorithm",
            ),
            (
                "outseta_auth.algorithms",
                "ES256",
                "22023",
                "portable edition",
            ),
            (
                "outseta_auth.domain",
                "https://x.outseta.com",
                "22023",
                "is not a host name",
            ),
            (
                "outseta_auth.jwks_url",
                "http://example.com/jwks",
                "22023",
                "plain http is allowed only for loopback",
            ),
            (
                "outseta_auth.jwks",
                "{\"keys\": []}",
                "22023",
                "no usable signing key",
            ),
            ("outseta_auth.jwks", "not json", "22023", "not valid JSON"),
            (
                "outseta_auth.leeway",
                "7200",
                "22023",
                "outside the valid range",
            ),
            (
                "outseta_auth.leeway",
                "abc",
                "22023",
                "invalid value for parameter",
            ),
            (
                "outseta_auth.token_sources",
                "setting,setting",
                "22023",
                "listed twice",
            ),
            (
                "outseta_auth.cookie_origins",
                "app.example.com",
                "22023",
                "is not an origin",
            ),
            (
                "outseta_auth.profile_check",
                "on",
                "22023",
                "no profile check yet",
            ),
            (
                "outseta_auth.webhook_secret",
                "short",
                "22023",
                "64 hexadecimal characters",
            ),
            (
                "outseta_auth.token",
                "x",
                "22023",
                "not a configuration setting",
            ),
            (
                "outseta_auth.nope",
                "x",
                "42704",
                "unrecognized configuration parameter",
            ),
        ];
        for (setting, value, state, text) in cases {
            let e = owner
                .execute("SELECT outseta_config_set($1, $2)", &[&setting, &value])
                .expect_err(setting);
            let db = e.as_db_error().unwrap();
            let all = format!("{} {}", db.message(), db.detail().unwrap_or(""));
            assert_eq!(sqlstate(&e), state, "{setting}={value}: {all}");
            assert!(all.contains(text), "{setting}={value}: {all}");
            assert!(!all.contains("short") || setting != "outseta_auth.webhook_secret");
        }
        // Nothing was stored by a refused value.
        let n: i64 = owner
            .query_one(
                "SELECT count(*) FROM outseta_config() WHERE NOT is_default",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, 0);
        // A valid change is kept, and reset goes back to the default.
        set(&mut owner, "outseta_auth.leeway", "10");
        owner
            .execute("SELECT outseta_config_reset('outseta_auth.leeway')", &[])
            .unwrap();
        let v: String = owner
            .query_one(
                "SELECT value FROM outseta_config() WHERE setting = 'outseta_auth.leeway'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(v, "30");
    }

    #[test]
    fn verdicts_are_remembered_per_trust_and_time_is_checked_again() {
        let key = SigningKey::generate("k1");
        let mut owner = configured("portable_verdicts", &key);
        set(&mut owner, "outseta_auth.leeway", "0");
        let mut c = app("portable_verdicts");
        let soon = key.mint(&claims("L9nqAzQZ", 2));
        assert_eq!(try_verify(&mut c, &soon), (true, None));
        let remembered = |owner: &mut Client| -> i64 {
            owner
                .query_one("SELECT count(*) FROM outseta_auth_verified", &[])
                .unwrap()
                .get(0)
        };
        assert_eq!(remembered(&mut owner), 1);
        // A hit checks exp again: once it has passed, the remembered verdict refuses.
        std::thread::sleep(std::time::Duration::from_millis(3100));
        assert_eq!(try_verify(&mut c, &soon), (false, Some("expired".into())));
        // In a read-only transaction nothing is written, and verification still works.
        let fresh = key.mint(&claims("DQ2b7wmV", 600));
        let mut tx = c.build_transaction().read_only(true).start().unwrap();
        let sub: String = tx
            .query_one("SELECT outseta_verify($1) ->> 'sub'", &[&fresh])
            .unwrap()
            .get(0);
        assert_eq!(sub, "DQ2b7wmV");
        tx.commit().unwrap();
        assert_eq!(remembered(&mut owner), 1, "nothing written read-only");
        // That session remembers it in its memo; another session verifies and writes it.
        let mut other = app("portable_verdicts");
        assert_eq!(try_verify(&mut other, &fresh), (true, None));
        assert_eq!(remembered(&mut owner), 2);
        // Any change of trust empties the table, and verdicts are keyed by it.
        set(
            &mut owner,
            "outseta_auth.issuer",
            "https://other.outseta.com",
        );
        assert_eq!(remembered(&mut owner), 0);
        assert_eq!(
            try_verify(&mut c, &fresh),
            (false, Some("issuer_mismatch".into()))
        );
    }

    #[test]
    fn a_token_stored_as_a_role_default_is_ignored() {
        let key = SigningKey::generate("k1");
        let _owner = configured("portable_role_default", &key);
        let token = key.mint(&claims("L9nqAzQZ", 600));
        // Verified once elsewhere: the verified-token table holds it (no shortcut past the
        // role-default check).
        assert_eq!(
            try_verify(&mut app("portable_role_default"), &token),
            (true, None)
        );
        let mut su = connect_as(port(), "postgres", "portable_role_default");
        su.batch_execute(&format!(
            "ALTER ROLE {APP} IN DATABASE portable_role_default SET outseta_auth.token = '{token}'"
        ))
        .unwrap();
        let mut c = app("portable_role_default");
        let sub: Option<String> = c.query_one("SELECT outseta_sub()", &[]).unwrap().get(0);
        su.batch_execute(&format!(
            "ALTER ROLE {APP} IN DATABASE portable_role_default RESET outseta_auth.token"
        ))
        .unwrap();
        assert_eq!(sub, None, "a role default of the token must not act");
        // The same token SET LOCAL in a session is used.
        let mut tx = c.transaction().unwrap();
        tx.execute("SET LOCAL outseta_auth.token = ''", &[])
            .unwrap();
        tx.execute(
            "SELECT set_config('outseta_auth.token', $1, true)",
            &[&token],
        )
        .unwrap();
        let sub: Option<String> = tx.query_one("SELECT outseta_sub()", &[]).unwrap().get(0);
        assert_eq!(sub.as_deref(), Some("L9nqAzQZ"));
    }

    #[test]
    fn request_cookies_and_headers_follow_the_native_rules() {
        let key = SigningKey::generate("k1");
        let mut owner = configured("portable_request", &key);
        set(&mut owner, "outseta_auth.token_header", "X-Outseta-Token");
        let token = key.mint(&claims("L9nqAzQZ", 600));
        let mut c = app("portable_request");
        let sub_with = |c: &mut Client,
                        cookies: &str,
                        headers: &str|
         -> Result<Option<String>, postgres::Error> {
            let mut tx = c.transaction()?;
            tx.execute(
                "SELECT set_config('request.cookies', $1, true), set_config('request.headers', $2, true)",
                &[&cookies, &headers],
            )?;
            let r = tx.query_one("SELECT outseta_sub()", &[])?.get(0);
            tx.rollback()?;
            Ok(r)
        };
        let cookie = json!({"Outseta.nocode.accessToken": token}).to_string();
        let same =
            json!({"host": "app.example.com", "origin": "https://app.example.com"}).to_string();
        let cross = json!({"host": "app.example.com", "origin": "https://evil.example", "sec-fetch-site": "cross-site"}).to_string();
        assert_eq!(
            sub_with(&mut c, &cookie, &same).unwrap().as_deref(),
            Some("L9nqAzQZ")
        );
        assert_eq!(
            sub_with(&mut c, &cookie, "").unwrap().as_deref(),
            Some("L9nqAzQZ")
        );
        assert_eq!(
            sub_with(&mut c, &cookie, &cross).unwrap(),
            None,
            "CSRF: cross-site cookie"
        );
        // The cookie given twice with different values ("tossed" by a sibling subdomain):
        // neither counts.
        let tossed = format!(
            "{{\"Outseta.nocode.accessToken\": \"{token}\", \"Outseta.nocode.accessToken\": \"x.y.z\"}}"
        );
        assert_eq!(sub_with(&mut c, &tossed, &same).unwrap(), None);
        // A method that changes data needs a same-origin sign: an Origin, or Sec-Fetch-Site.
        let post = |c: &mut Client, headers: &str| -> Option<String> {
            let mut tx = c.transaction().unwrap();
            tx.execute(
                "SELECT set_config('request.cookies', $1, true), set_config('request.headers', $2, true),
                        set_config('request.method', 'POST', true)",
                &[&cookie, &headers],
            )
            .unwrap();
            let r = tx.query_one("SELECT outseta_sub()", &[]).unwrap().get(0);
            tx.rollback().unwrap();
            r
        };
        assert_eq!(
            post(&mut c, &json!({"host": "app.example.com"}).to_string()),
            None
        );
        assert_eq!(
            post(
                &mut c,
                &json!({"host": "app.example.com", "sec-fetch-site": "same-origin"}).to_string()
            )
            .as_deref(),
            Some("L9nqAzQZ")
        );
        assert_eq!(post(&mut c, &same).as_deref(), Some("L9nqAzQZ"));
        // The scheme, when the proxy names it.
        let http_origin = json!({"host": "app.example.com", "origin": "http://app.example.com",
                                  "x-forwarded-proto": "https"})
        .to_string();
        assert_eq!(post(&mut c, &http_origin), None);
        let header = json!({"x-outseta-token": format!("Bearer {token}")}).to_string();
        assert_eq!(
            sub_with(&mut c, "", &header).unwrap().as_deref(),
            Some("L9nqAzQZ")
        );
        assert_eq!(sub_with(&mut c, "not json", "[1]").unwrap(), None);
        let huge = json!({"x": "y".repeat(70_000)}).to_string();
        let e = sub_with(&mut c, &huge, "").unwrap_err();
        assert_eq!(sqlstate(&e), "28000");
        assert!(e
            .as_db_error()
            .unwrap()
            .message()
            .contains("request.cookies is too large"));
    }

    #[test]
    fn webhook_signatures() {
        let mut owner = fresh_db("portable_webhook");
        let mut c = app("portable_webhook");
        let e = c
            .query_one(
                "SELECT outseta_verify_webhook('{}'::text, 'sha256=00')",
                &[],
            )
            .unwrap_err();
        assert_eq!(sqlstate(&e), "22023", "no key configured: {e}");
        let secret = "0f".repeat(32);
        set(&mut owner, "outseta_auth.webhook_secret", &secret);
        let body = r#"{"Uid":"wZmNw7Q2","Name":"Acme"}"#;
        let good = outseta_dev::webhook_signature(&secret, body.as_bytes()).unwrap();
        let bad = outseta_dev::webhook_signature(&"1f".repeat(32), body.as_bytes()).unwrap();
        for (sig, expected) in [
            (good.clone(), true),
            (good.trim_start_matches("sha256=").to_string(), true),
            (good.to_uppercase().replace("SHA256=", "sha256="), true),
            (bad, false),
            ("sha256=zz".to_string(), false),
        ] {
            let ok: bool = c
                .query_one(
                    "SELECT outseta_verify_webhook($1::text, $2)",
                    &[&body, &sig],
                )
                .unwrap()
                .get(0);
            assert_eq!(ok, expected, "{sig}");
            let ok: bool = c
                .query_one(
                    "SELECT outseta_verify_webhook(convert_to($1, 'UTF8'), $2)",
                    &[&body, &sig],
                )
                .unwrap()
                .get(0);
            assert_eq!(ok, expected, "bytea {sig}");
        }
    }

    #[test]
    fn pushed_keys_serve_until_max_stale_then_fail_closed() {
        let key = SigningKey::generate("k1");
        let mut owner = fresh_db("portable_pushed");
        set(&mut owner, "outseta_auth.domain", "portable.outseta.com");
        let token = key.mint(&claims("L9nqAzQZ", 600));
        let mut c = app("portable_pushed");
        let e = c
            .query_one("SELECT outseta_verify($1)", &[&token])
            .unwrap_err();
        assert_eq!(sqlstate(&e), "58000", "no keys yet: {e}");
        // An ordinary role is not told the key set's URL or why it is unavailable.
        let db = e.as_db_error().unwrap();
        let text = format!("{} {:?}", db.message(), db.detail());
        assert!(!text.contains("portable.outseta.com"), "{text}");
        assert_eq!(db.message(), "could not load the JWKS");
        let n: i32 = owner
            .query_one(
                "SELECT outseta_set_jwks($1::text::jsonb)",
                &[&json!({"keys": [key.jwk()]}).to_string()],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, 1);
        // The domain is the audience by default; the issuer is not checked unless set.
        assert_eq!(try_verify(&mut c, &token), (true, None));
        // Keys older than jwks_max_stale are not used.
        set(&mut owner, "outseta_auth.jwks_max_stale", "60");
        owner
            .batch_execute(
                // (as 61 seconds passing: the owner's tables, and the state resolved from them)
                "UPDATE outseta_auth_keyset SET fetched_at = now() - interval '61 seconds';
                 SELECT public._outseta_resolve();",
            )
            .unwrap();
        let e = c
            .query_one("SELECT outseta_verify($1)", &[&token])
            .unwrap_err();
        assert_eq!(sqlstate(&e), "58000", "stale keys: {e}");
        // The monitoring view shows the key set to the owner.
        let (source, keys): (String, String) = {
            let r = owner
                .query_one("SELECT source, keys::text FROM outseta_jwks_status()", &[])
                .unwrap();
            (r.get(0), r.get(1))
        };
        let keys: Value = serde_json::from_str(&keys).unwrap();
        assert_eq!(source, "https://portable.outseta.com/.well-known/jwks");
        assert_eq!(keys, json!([{"kid": "k1", "alg": "RS256"}]));
    }

    #[test]
    fn running_the_script_again_keeps_policies_configuration_and_verdicts() {
        let key = SigningKey::generate("k1");
        let mut owner = configured("portable_rerun", &key);
        owner
            .batch_execute(&format!(
                "CREATE TABLE todos (owner text, title text);
                 INSERT INTO todos VALUES ('L9nqAzQZ', 'mine'), ('DQ2b7wmV', 'theirs');
                 ALTER TABLE todos ENABLE ROW LEVEL SECURITY;
                 CREATE POLICY own ON todos USING (owner = (SELECT outseta_sub()));
                 GRANT SELECT ON todos TO {APP};"
            ))
            .unwrap();
        let token = key.mint(&claims("L9nqAzQZ", 600));
        let mut c = app("portable_rerun");
        assert_eq!(try_verify(&mut c, &token), (true, None));
        outseta_e2e::portable::psql_file(
            port(),
            OWNER,
            "portable_rerun",
            &outseta_e2e::portable::script(),
        );
        let mut c = app("portable_rerun");
        let mut tx = c.transaction().unwrap();
        tx.execute(
            "SELECT set_config('outseta_auth.token', $1, true)",
            &[&token],
        )
        .unwrap();
        let titles: Vec<String> = tx
            .query("SELECT title FROM todos", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(titles, vec!["mine"]);
        let n: i64 = owner
            .query_one("SELECT count(*) FROM outseta_auth_verified", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "verdicts kept");
        let iss: String = owner
            .query_one(
                "SELECT value FROM outseta_config() WHERE setting = 'outseta_auth.issuer'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(iss, ISS);
    }

    #[test]
    fn the_session_memo_holds_no_claims_and_cannot_be_forged() {
        let key = SigningKey::generate("k1");
        let mut owner = configured("portable_memo", &key);
        set(&mut owner, "outseta_auth.leeway", "0");
        let mut c = app("portable_memo");
        let soon = key.mint(&claims("L9nqAzQZ", 2));
        assert_eq!(try_verify(&mut c, &soon), (true, None));
        let memo: String = c
            .query_one("SELECT current_setting('outseta_auth_sql.memo')", &[])
            .unwrap()
            .get(0);
        // One MAC in hex; nothing of the token or its claims (another client of a pooled
        // connection could read it).
        assert_eq!(memo.len(), 64, "{memo}");
        assert!(memo.bytes().all(|b| b.is_ascii_hexdigit()), "{memo}");
        // The entry serves that token only: a token with other claims and the same
        // signature is refused, whatever the memo says.
        let forged =
            outseta_dev::with_payload(&soon, claims("someone-else", 600).to_string().as_bytes());
        assert_eq!(
            try_verify(&mut c, &forged),
            (false, Some("bad_signature".into()))
        );
        // Entries a caller makes are no better than none.
        c.execute(
            "SELECT set_config('outseta_auth_sql.memo', $1, false)",
            &[&format!("{memo},{}", "ab".repeat(32))],
        )
        .unwrap();
        assert_eq!(
            try_verify(&mut c, &forged),
            (false, Some("bad_signature".into()))
        );
        // A remembered token expires like any other: exp comes from its claims.
        std::thread::sleep(std::time::Duration::from_millis(3100));
        assert_eq!(try_verify(&mut c, &soon), (false, Some("expired".into())));
    }

    #[test]
    fn a_callers_types_in_pg_temp_never_run_as_the_owner() {
        let key = SigningKey::generate("k1");
        let _owner = configured("portable_pg_temp_types", &key);
        let token = key.mint(&claims("L9nqAzQZ", 600));
        let mut c = app("portable_pg_temp_types");
        // A domain named like the types the edition's variables use, whose check runs a
        // function of the caller's: if any of the edition's code took it, that function would
        // run (as the owner, inside a SECURITY DEFINER function) and leave a mark.
        c.batch_execute(
            "CREATE FUNCTION pg_temp.mark(v pg_catalog.text) RETURNS boolean LANGUAGE plpgsql AS
                 $$ BEGIN PERFORM pg_catalog.set_config('portable.pwned', current_user, false); RETURN true; END $$;
             CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (pg_temp.mark(VALUE));
             CREATE DOMAIN pg_temp.jsonb AS pg_catalog.jsonb CHECK (pg_temp.mark(VALUE::pg_catalog.text));
             CREATE DOMAIN pg_temp.bytea AS pg_catalog.bytea CHECK (pg_temp.mark('x'));
             SET search_path = pg_temp, public, pg_catalog;",
        )
        .unwrap();
        for stmt in [
            "SELECT public._outseta_raise('malformed', 'm', NULL)",
            "SELECT public._outseta_for_caller(ROW(NULL, 'jwks_unavailable', 'm', 'd')::public._outseta_outcome)",
            "SELECT public._outseta_printable('x')",
            "SELECT public._outseta_check('a.b.c', s, 0) FROM public.outseta_auth_state s",
        ] {
            let _ = c.batch_execute(stmt);
        }
        c.batch_execute("SET search_path = public, pg_catalog")
            .unwrap();
        assert_eq!(try_verify(&mut c, &token), (true, None));
        let mut tx = c.transaction().unwrap();
        tx.execute(
            "SELECT set_config('outseta_auth.token', $1, true)",
            &[&token],
        )
        .unwrap();
        let sub: Option<String> = tx.query_one("SELECT outseta_sub()", &[]).unwrap().get(0);
        assert_eq!(sub.as_deref(), Some("L9nqAzQZ"));
        tx.rollback().unwrap();
        let mark: Option<String> = c
            .query_one("SELECT current_setting('portable.pwned', true)", &[])
            .unwrap()
            .get(0);
        assert_eq!(
            mark.as_deref().unwrap_or(""),
            "",
            "a caller's type ran in the edition's code"
        );
    }
}
