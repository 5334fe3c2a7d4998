//! In-database tests (`cargo pgrx test`): SQL through SPI in a real backend, against a real
//! outseta-dev HTTP server on 127.0.0.1 started inside the test.
//!
//! What needs a real client connection (SQLSTATEs as a client sees them, roles, RLS,
//! PgBouncer, parallel plans) lives in the `e2e` crate.

#[pgrx::pg_schema]
mod tests {
    use std::time::Duration;

    use outseta_dev::{b64url, with_payload, Fault, Issuer, Server, SigningKey, TokenRequest};
    use pgrx::prelude::*;
    use pgrx::JsonB;
    use serde_json::{json, Value};

    fn start() -> Server {
        let s = Server::start("127.0.0.1:0", Issuer::new("https://test.outseta.com")).unwrap();
        sql(&format!("SET outseta_auth.jwks_url = '{}'", s.jwks_url()));
        sql("SET outseta_auth.jwks_refresh_min_interval = 0");
        s
    }

    fn sql(q: &str) {
        Spi::run(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    }

    fn text(q: &str) -> Option<String> {
        Spi::get_one::<String>(q).unwrap()
    }

    /// `error_code` from outseta_try_verify; None when the token is valid.
    fn code(token: &str) -> Option<String> {
        Spi::get_one_with_args::<String>(
            "SELECT (outseta_try_verify($1)).error_code",
            &[token.into()],
        )
        .unwrap()
    }

    fn valid(token: &str) -> bool {
        Spi::get_one_with_args::<bool>("SELECT (outseta_try_verify($1)).valid", &[token.into()])
            .unwrap()
            .unwrap()
    }

    fn set_token(t: &str) {
        Spi::run_with_args(
            "SELECT set_config('outseta_auth.token', $1, true)",
            &[t.into()],
        )
        .unwrap();
    }

    fn jane() -> TokenRequest {
        let mut r = TokenRequest::new("dQGxEz94", "wZmNw7Q2");
        r.email = Some("jane@example.com".into());
        r.name = Some("Jane Doe".into());
        r.plan_uid = Some("OW4pRYWg".into());
        r.subscription_uid = Some("j9ma0qQn".into());
        r.add_on_uids = vec!["addon1".into(), "addon2".into()];
        r
    }

    fn with_claims(mut r: TokenRequest, extra: Value) -> TokenRequest {
        r.extra = extra.as_object().unwrap().clone();
        r
    }

    fn now() -> i64 {
        outseta_dev::now()
    }

    #[pg_test]
    fn version_is_the_crate_version() {
        assert_eq!(
            text("SELECT outseta_auth_version()").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
    }

    #[pg_test]
    fn valid_token_and_every_accessor() {
        let s = start();
        let t = s.mint(&jane());
        let claims =
            Spi::get_one_with_args::<JsonB>("SELECT outseta_verify($1)", &[t.as_str().into()])
                .unwrap()
                .unwrap();
        assert_eq!(claims.0["sub"], "dQGxEz94");

        set_token(&t);
        assert_eq!(text("SELECT outseta_sub()").as_deref(), Some("dQGxEz94"));
        assert_eq!(
            text("SELECT outseta_account_uid()").as_deref(),
            Some("wZmNw7Q2")
        );
        assert_eq!(
            text("SELECT outseta_email()").as_deref(),
            Some("jane@example.com")
        );
        assert_eq!(text("SELECT outseta_name()").as_deref(), Some("Jane Doe"));
        assert_eq!(
            text("SELECT outseta_plan_uid()").as_deref(),
            Some("OW4pRYWg")
        );
        assert_eq!(
            text("SELECT outseta_subscription_uid()").as_deref(),
            Some("j9ma0qQn")
        );
        assert_eq!(
            text("SELECT array_to_string(outseta_add_on_uids(), ',')").as_deref(),
            Some("addon1,addon2")
        );
        assert_eq!(
            Spi::get_one::<bool>("SELECT outseta_is_primary()").unwrap(),
            Some(true)
        );
        assert_eq!(
            text("SELECT outseta_claim('given_name') #>> '{}'").as_deref(),
            Some("Jane")
        );
        assert_eq!(
            text("SELECT outseta_claims() ->> 'outseta:isPrimary'").as_deref(),
            Some("1")
        );

        let mut member = jane();
        member.is_primary = false;
        set_token(&s.mint(&member));
        assert_eq!(
            Spi::get_one::<bool>("SELECT outseta_is_primary()").unwrap(),
            Some(false)
        );
    }

    #[pg_test]
    fn no_token_means_null() {
        start();
        set_token("");
        assert_eq!(text("SELECT outseta_sub()"), None);
        assert_eq!(
            Spi::get_one::<JsonB>("SELECT outseta_claims()")
                .unwrap()
                .map(|j| j.0),
            None
        );
        assert_eq!(code(""), Some("malformed".into()));
    }

    #[pg_test(error = "Outseta token has expired")]
    fn accessor_with_expired_token_raises() {
        let s = start();
        let mut r = jane();
        r.expires_in = -120;
        set_token(&s.mint(&r));
        text("SELECT outseta_sub()");
    }

    #[pg_test(error = "Outseta token has a bad signature")]
    fn verify_raises_on_tampering() {
        let s = start();
        let t = s.mint(&jane());
        let forged = with_payload(&t, br#"{"sub":"admin","exp":9999999999}"#);
        Spi::get_one_with_args::<JsonB>("SELECT outseta_verify($1)", &[forged.as_str().into()])
            .unwrap();
    }

    #[pg_test]
    fn time_rules() {
        let s = start();
        let n = now();
        let mut expired = jane();
        expired.expires_in = -120;
        assert_eq!(code(&s.mint(&expired)).as_deref(), Some("expired"));
        let mut in_leeway = jane();
        in_leeway.expires_in = -10;
        assert!(
            valid(&s.mint(&in_leeway)),
            "expired 10 s ago is inside the 30 s leeway"
        );
        sql("SET outseta_auth.leeway = 0");
        assert_eq!(code(&s.mint(&in_leeway)).as_deref(), Some("expired"));
        sql("RESET outseta_auth.leeway");
        assert_eq!(
            code(&s.mint(&with_claims(jane(), json!({"nbf": n + 300})))).as_deref(),
            Some("not_yet_valid")
        );
        assert!(valid(&s.mint(&with_claims(jane(), json!({"nbf": n + 10})))));
        assert_eq!(
            code(&s.mint(&with_claims(jane(), json!({"iat": n + 300})))).as_deref(),
            Some("issued_in_future")
        );
        assert_eq!(
            code(&s.mint(&with_claims(jane(), json!({"exp": "never"})))).as_deref(),
            Some("invalid_claim")
        );
        let no_exp = {
            let key = s.issuer.lock().unwrap();
            key.signing_key().mint(&json!({"sub": "x"}))
        };
        assert_eq!(code(&no_exp).as_deref(), Some("missing_claim"));
    }

    #[pg_test]
    fn algorithm_attacks_are_refused() {
        let s = start();
        let (kid, jwk, rsa_mint) = {
            let i = s.issuer.lock().unwrap();
            let k = i.signing_key();
            (
                k.kid.clone(),
                k.jwk(),
                k.mint_with_header(
                    &json!({"alg": "RS512", "kid": k.kid}),
                    &json!({"exp": now() + 60}),
                ),
            )
        };
        // A header alg outside the allow-list, though the signature is RS256.
        assert_eq!(code(&rsa_mint).as_deref(), Some("algorithm_not_allowed"));

        let claims = b64url(
            json!({"sub": "admin", "exp": now() + 600})
                .to_string()
                .as_bytes(),
        );
        for alg in ["none", "None", "NONE"] {
            let h = b64url(json!({"alg": alg, "kid": kid}).to_string().as_bytes());
            assert_eq!(
                code(&format!("{h}.{claims}.")).as_deref(),
                Some("malformed"),
                "{alg}: empty signature"
            );
            assert_eq!(
                code(&format!("{h}.{claims}.AAAA")).as_deref(),
                Some("algorithm_not_allowed"),
                "{alg}"
            );
        }
        // HS256/384/512 keyed with the RSA public key: JWK JSON, PEM, DER.
        let (pem, der) = {
            let i = s.issuer.lock().unwrap();
            (i.signing_key().public_pem(), i.signing_key().public_der())
        };
        for secret in [jwk.to_string().into_bytes(), pem.into_bytes(), der] {
            let h = b64url(json!({"alg": "HS256", "kid": kid}).to_string().as_bytes());
            let input = format!("{h}.{claims}");
            let tag = outseta_dev::hmac_sha256(&secret, input.as_bytes());
            assert_eq!(
                code(&format!("{input}.{}", b64url(&tag))).as_deref(),
                Some("algorithm_not_allowed")
            );
        }
        // Allowing PS256 does not let an RS256 key be used as PS256 when the JWK says RS256.
        sql("SET outseta_auth.algorithms = 'RS256,PS256'");
        let h = b64url(json!({"alg": "PS256", "kid": kid}).to_string().as_bytes());
        assert_eq!(
            code(&format!("{h}.{claims}.AAAA")).as_deref(),
            Some("key_mismatch")
        );
    }

    #[pg_test]
    fn hostile_kids_are_just_unknown() {
        let _server = start();
        let long = "k".repeat(10_000);
        for kid in [
            "../../etc/passwd",
            "\"; DROP TABLE x; --",
            "' OR 1=1 --",
            "a\nb",
            long.as_str(),
        ] {
            let t = SigningKey::generate(kid).mint(&json!({"exp": now() + 60}));
            assert_eq!(code(&t).as_deref(), Some("unknown_kid"), "{kid:.20}");
            let err = Spi::get_one_with_args::<String>(
                "SELECT (outseta_try_verify($1)).error",
                &[t.as_str().into()],
            )
            .unwrap()
            .unwrap();
            assert!(
                err.len() < 200,
                "the error message stays short: {} bytes",
                err.len()
            );
            assert!(!err.contains('\n'), "control characters are escaped");
        }
    }

    #[pg_test]
    fn keys_named_by_the_token_are_never_fetched() {
        let s = start();
        let attacker = Server::start("127.0.0.1:0", Issuer::new("https://evil.example")).unwrap();
        let (evil_kid, evil_jwk) = {
            let i = attacker.issuer.lock().unwrap();
            (i.signing_key().kid.clone(), i.signing_key().jwk())
        };
        let evil = attacker.issuer.lock().unwrap();
        let claims = json!({"sub": "admin", "exp": now() + 600});
        for header in [
            json!({"alg": "RS256", "kid": evil_kid, "jku": attacker.jwks_url()}),
            json!({"alg": "RS256", "kid": evil_kid, "x5u": attacker.jwks_url()}),
            json!({"alg": "RS256", "kid": evil_kid, "jwk": evil_jwk}),
            json!({"alg": "RS256", "jwk": evil_jwk}),
            json!({"alg": "RS256", "kid": evil_kid, "x5c": ["MIIB"]}),
        ] {
            let t = evil.signing_key().mint_with_header(&header, &claims);
            assert!(!valid(&t), "{header}");
        }
        drop(evil);
        assert_eq!(
            attacker.hits("/.well-known/jwks"),
            0,
            "the attacker's JWKS was never requested"
        );
        assert!(s.hits("/.well-known/jwks") >= 1);
    }

    #[pg_test]
    fn a_removed_kid_stops_verifying_after_refresh() {
        let s = start();
        let old = s.mint(&jane());
        assert!(valid(&old));
        s.issuer.lock().unwrap().rotate(false);
        assert!(valid(&old), "still cached until the keys are refetched");
        assert_eq!(
            Spi::get_one::<i32>("SELECT outseta_refresh_jwks()").unwrap(),
            Some(1)
        );
        assert_eq!(code(&old).as_deref(), Some("unknown_kid"));
        assert!(valid(&s.mint(&jane())));
    }

    #[pg_test]
    fn every_fetch_fault_keeps_cached_keys_working() {
        let s = start();
        sql("SET outseta_auth.http_timeout = 300");
        let faults = [
            Fault::Status(500),
            Fault::Status(404),
            Fault::Body("{not json".into()),
            Fault::Body(r#"{"keys": []}"#.into()),
            Fault::Oversize(200 * 1024),
            Fault::Redirect("http://127.0.0.1:9/".into()),
            Fault::Slow(Duration::from_secs(2)),
            Fault::Hangup,
        ];
        assert!(valid(&s.mint(&jane())), "keys cached before the faults");
        for (i, fault) in faults.into_iter().enumerate() {
            s.set_fault(fault.clone());
            // A forced refetch fails, but the cached keys stay in use (stale-if-error).
            assert_eq!(
                Spi::get_one::<i32>("SELECT outseta_refresh_jwks()").unwrap(),
                Some(1),
                "{fault:?}"
            );
            let err = text("SELECT last_error FROM outseta_jwks_status()");
            assert!(err.is_some(), "{fault:?}: the failure is recorded");
            let mut r = jane();
            r.sub = format!("person-{i}");
            assert!(
                valid(&s.mint(&r)),
                "{fault:?}: a new valid token still verifies"
            );
        }
        s.set_fault(Fault::None);
        assert_eq!(
            Spi::get_one::<i32>("SELECT outseta_refresh_jwks()").unwrap(),
            Some(1)
        );
        assert_eq!(
            text("SELECT last_error FROM outseta_jwks_status()"),
            None,
            "recovered"
        );
    }

    #[pg_test]
    fn a_one_megabyte_token_is_refused_quickly() {
        start();
        let big = format!("{}.{}.{}", "a".repeat(1 << 20), "b", "c");
        let started = std::time::Instant::now();
        assert_eq!(code(&big).as_deref(), Some("too_large"));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[pg_test]
    fn not_found_is_a_fetch_error() {
        let e = fetch_error(Fault::Status(404));
        assert!(e.contains("HTTP 404"), "{e}");
    }

    #[pg_test]
    fn odd_time_claims() {
        let s = start();
        let n = now();
        let k = s.issuer.lock().unwrap();
        let mint = |c: Value| k.signing_key().mint(&c);
        let cases = [
            (json!({"sub": "x"}), "missing_claim"),
            (json!({"exp": "9999999999"}), "invalid_claim"),
            (json!({"exp": null}), "invalid_claim"),
            (json!({"exp": [n + 60]}), "invalid_claim"),
            (json!({"exp": n + 60, "nbf": "0"}), "invalid_claim"),
            (json!({"exp": n + 60, "iat": {"t": 1}}), "invalid_claim"),
            (json!({"exp": (n - 3600) as f64 + 0.5}), "expired"),
        ];
        let tokens: Vec<(String, &str)> =
            cases.iter().map(|(c, e)| (mint(c.clone()), *e)).collect();
        drop(k);
        for (t, expected) in tokens {
            assert_eq!(code(&t).as_deref(), Some(expected));
        }
        // A huge number is out of range for JSON numbers we accept: malformed.
        let huge = {
            let i = s.issuer.lock().unwrap();
            let key = i.signing_key();
            let h = b64url(
                json!({"alg": "RS256", "kid": key.kid})
                    .to_string()
                    .as_bytes(),
            );
            let p = b64url(br#"{"exp": 1e400}"#);
            let sig = key.sign(format!("{h}.{p}").as_bytes());
            format!("{h}.{p}.{}", b64url(&sig))
        };
        assert_eq!(code(&huge).as_deref(), Some("malformed"));
    }

    #[pg_test]
    fn cache_control_max_age_is_honoured_and_clamped() {
        let s = start();
        sql("SET outseta_auth.jwks_cache_ttl = 3600");
        s.issuer.lock().unwrap().max_age = Some(1);
        assert!(valid(&s.mint(&jane())));
        std::thread::sleep(Duration::from_millis(1100));
        let mut other = jane();
        other.sub = "other".into();
        assert!(valid(&s.mint(&other)));
        assert_eq!(s.hits("/.well-known/jwks"), 2, "max-age=1 beat the 1 h TTL");

        s.issuer.lock().unwrap().max_age = Some(10_000_000);
        assert_eq!(
            Spi::get_one::<i32>("SELECT outseta_refresh_jwks()").unwrap(),
            Some(1)
        );
        let ttl = Spi::get_one::<f64>(
            "SELECT extract(epoch FROM expires_at - fetched_at)::float8 FROM outseta_jwks_status()",
        )
        .unwrap()
        .unwrap();
        assert!((ttl - 86_400.0).abs() < 1.0, "clamped to 24 h, got {ttl}");
    }

    #[pg_test]
    fn domain_becomes_the_well_known_https_url() {
        sql("SET outseta_auth.domain = 'myapp.outseta.com'");
        assert_eq!(
            text("SELECT source FROM outseta_jwks_status()").as_deref(),
            Some("https://myapp.outseta.com/.well-known/jwks")
        );
        // A malformed domain fails at SET (check hook): see the e2e suite, where a client
        // sees the SQLSTATE.
    }

    #[pg_test]
    fn wrong_key_and_unknown_kid() {
        let s = start();
        let kid = s.issuer.lock().unwrap().signing_key().kid.clone();
        let imposter = SigningKey::generate(&kid);
        let forged = imposter.mint(&json!({"sub": "x", "exp": now() + 60}));
        assert_eq!(code(&forged).as_deref(), Some("bad_signature"));
        let stranger =
            SigningKey::generate("stranger").mint(&json!({"sub": "x", "exp": now() + 60}));
        assert_eq!(code(&stranger).as_deref(), Some("unknown_kid"));
    }

    #[pg_test]
    fn key_rotation_is_picked_up() {
        let s = start();
        assert!(valid(&s.mint(&jane())));
        let fetches = s.hits("/.well-known/jwks");
        s.issuer.lock().unwrap().rotate(true);
        assert!(valid(&s.mint(&jane())), "a token with the new kid verifies");
        assert_eq!(
            s.hits("/.well-known/jwks"),
            fetches + 1,
            "one refetch for the unknown kid"
        );
    }

    #[pg_test]
    fn unknown_kids_are_rate_limited() {
        let s = start();
        // An hour: the 20 keys below take long to generate in a debug build.
        sql("SET outseta_auth.jwks_refresh_min_interval = 3600");
        assert!(valid(&s.mint(&jane())));
        assert_eq!(s.hits("/.well-known/jwks"), 1);
        for i in 0..20 {
            let t = SigningKey::generate(&format!("random-{i}")).mint(&json!({"exp": now() + 60}));
            assert_eq!(code(&t).as_deref(), Some("unknown_kid"));
        }
        assert_eq!(
            s.hits("/.well-known/jwks"),
            1,
            "a flood of unknown kids causes no fetch"
        );
        sql("SET outseta_auth.jwks_refresh_min_interval = 0");
        let t = SigningKey::generate("random-x").mint(&json!({"exp": now() + 60}));
        assert_eq!(code(&t).as_deref(), Some("unknown_kid"));
        assert_eq!(
            s.hits("/.well-known/jwks"),
            2,
            "without the limit, an unknown kid refetches"
        );
    }

    #[pg_test]
    fn stale_keys_are_used_when_the_server_fails() {
        let s = start();
        sql("SET outseta_auth.jwks_cache_ttl = 1");
        assert!(valid(&s.mint(&jane())));
        std::thread::sleep(Duration::from_millis(1100));
        s.set_fault(Fault::Status(500));
        let mut other = jane();
        other.sub = "another".into();
        assert!(
            valid(&s.mint(&other)),
            "stale-if-error keeps valid tokens working"
        );
        assert_eq!(s.hits("/.well-known/jwks"), 2, "the refresh was attempted");
        assert_eq!(
            text("SELECT last_error FROM outseta_jwks_status()").as_deref(),
            Some("HTTP 500")
        );
    }

    fn fetch_error(fault: Fault) -> String {
        let s = start();
        s.set_fault(fault);
        let t = s.mint(&jane());
        assert_eq!(code(&t).as_deref(), Some("jwks_unavailable"));
        Spi::get_one_with_args::<String>(
            "SELECT (outseta_try_verify($1)).error",
            &[t.as_str().into()],
        )
        .unwrap()
        .unwrap()
    }

    #[pg_test]
    fn redirects_are_not_followed() {
        let e = fetch_error(Fault::Redirect(
            "http://127.0.0.1:9/.well-known/jwks".into(),
        ));
        assert!(e.contains("HTTP 302 (redirects are not followed)"), "{e}");
    }

    #[pg_test]
    fn oversize_bodies_are_refused() {
        let e = fetch_error(Fault::Oversize(200 * 1024));
        assert!(e.contains("larger than 65536 bytes"), "{e}");
    }

    #[pg_test]
    fn invalid_and_empty_key_sets_are_refused() {
        let e = fetch_error(Fault::Body("{not json".into()));
        assert!(e.contains("not valid JSON"), "{e}");
        let e = fetch_error(Fault::Body(r#"{"keys": []}"#.into()));
        assert!(e.contains("no usable signing key"), "{e}");
    }

    #[pg_test]
    fn slow_servers_time_out() {
        sql("SET outseta_auth.http_timeout = 300");
        let started = std::time::Instant::now();
        // Far slower than the bound (which also covers the issuer's start and its RSA key,
        // slow in a debug build on a loaded machine): a bound met is the timeout's doing.
        let e = fetch_error(Fault::Slow(Duration::from_secs(30)));
        assert!(e.contains("timed out"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "bounded by the timeout"
        );
    }

    // Non-loopback http, HS256 and other bad values now fail at SET (check hooks); a client
    // sees that in tests/e2e/tests/hardening.rs (bad_settings_fail_when_set_with_22023).

    #[pg_test]
    fn issuer_and_audience() {
        let s = start();
        s.issuer.lock().unwrap().audience = Some("my-app".into());
        let t = s.mint(&jane());
        sql("SET outseta_auth.issuer = 'https://other.outseta.com, https://test.outseta.com'");
        sql("SET outseta_auth.audience = 'my-app'");
        assert!(valid(&t));
        sql("SET outseta_auth.issuer = 'https://other.outseta.com'");
        assert_eq!(
            code(&t).as_deref(),
            Some("issuer_mismatch"),
            "cached token re-checked after a trust change"
        );
        sql("RESET outseta_auth.issuer");
        sql("SET outseta_auth.audience = 'not-my-app'");
        assert_eq!(code(&t).as_deref(), Some("audience_mismatch"));
    }

    #[pg_test]
    fn literal_jwks_and_trust_changes_invalidate_the_cache() {
        let key = SigningKey::generate("lit-1");
        let t = key.mint(&json!({"sub": "p", "exp": now() + 600}));
        Spi::run_with_args(
            "SELECT set_config('outseta_auth.jwks', $1, false)",
            &[json!({"keys": [key.jwk()]}).to_string().as_str().into()],
        )
        .unwrap();
        assert!(valid(&t));
        set_token(&t);
        assert_eq!(text("SELECT outseta_sub()").as_deref(), Some("p"));

        // Another key set: the cached verdict must not survive.
        let other = SigningKey::generate("lit-2");
        Spi::run_with_args(
            "SELECT set_config('outseta_auth.jwks', $1, false)",
            &[json!({"keys": [other.jwk()]}).to_string().as_str().into()],
        )
        .unwrap();
        assert_eq!(code(&t).as_deref(), Some("unknown_kid"));

        // Back to the first set, then disallow RS256.
        Spi::run_with_args(
            "SELECT set_config('outseta_auth.jwks', $1, false)",
            &[json!({"keys": [key.jwk()]}).to_string().as_str().into()],
        )
        .unwrap();
        assert!(valid(&t));
        sql("SET outseta_auth.algorithms = 'ES256'");
        assert_eq!(code(&t).as_deref(), Some("algorithm_not_allowed"));
    }

    #[pg_test]
    fn status_shows_keys_and_counters() {
        let s = start();
        let t = s.mint(&jane());
        assert!(valid(&t));
        assert!(valid(&t));
        let kid = s.issuer.lock().unwrap().signing_key().kid.clone();
        assert_eq!(
            text("SELECT keys -> 0 ->> 'kid' FROM outseta_jwks_status()"),
            Some(kid)
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT fetch_count FROM outseta_jwks_status()").unwrap(),
            Some(1)
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT token_cache_hits FROM outseta_jwks_status()").unwrap(),
            Some(1)
        );
        assert_eq!(
            Spi::get_one::<i32>("SELECT outseta_refresh_jwks()").unwrap(),
            Some(1)
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT fetch_count FROM outseta_jwks_status()").unwrap(),
            Some(2)
        );
    }

    #[pg_test]
    fn authenticate_sets_the_token_for_the_transaction() {
        let s = start();
        let t = s.mint(&jane());
        let claims = Spi::get_one_with_args::<JsonB>(
            "SELECT outseta_authenticate($1)",
            &[t.as_str().into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(claims.0["outseta:accountUid"], "wZmNw7Q2");
        assert_eq!(text("SELECT outseta_sub()").as_deref(), Some("dQGxEz94"));
        assert_eq!(
            text("SELECT current_setting('outseta_auth.token')"),
            Some(t)
        );
        assert!(Spi::get_one::<JsonB>("SELECT outseta_authenticate('')")
            .unwrap()
            .is_none());
        assert_eq!(text("SELECT outseta_sub()"), None);
    }

    #[pg_test(error = "permission denied to set parameter \"outseta_auth.jwks\"")]
    fn ordinary_roles_cannot_set_trust_settings() {
        sql("CREATE ROLE outseta_test_app NOLOGIN");
        sql("SET ROLE outseta_test_app");
        sql("SET outseta_auth.jwks = '{\"keys\":[]}'");
    }

    #[pg_test]
    fn ordinary_roles_can_set_the_token() {
        sql("CREATE ROLE outseta_test_app2 NOLOGIN");
        sql("SET ROLE outseta_test_app2");
        sql("SET outseta_auth.token = 'x.y.z'");
        assert_eq!(
            text("SELECT current_setting('outseta_auth.token')").as_deref(),
            Some("x.y.z")
        );
    }

    // ---- Hardening II ----

    #[pg_test]
    fn a_nul_in_any_claim_is_malformed() {
        let s = start();
        for extra in [
            json!({"sub": "u\u{0}7"}),
            json!({"outseta:addOnUids": ["a", "b\u{0}"]}),
            json!({"x\u{0}": 1}),
        ] {
            let t = s.mint(&with_claims(jane(), extra.clone()));
            assert_eq!(code(&t).as_deref(), Some("malformed"), "{extra}");
        }
    }

    #[pg_test(error = "Outseta token is malformed")]
    fn a_nul_in_sub_makes_the_accessor_raise() {
        let s = start();
        set_token(&s.mint(&with_claims(jane(), json!({"sub": "u\u{0}7"}))));
        text("SELECT outseta_sub()");
    }

    #[pg_test]
    fn try_verify_is_not_fooled_by_a_temporary_type_of_the_same_name() {
        let s = start();
        sql("CREATE TEMP TABLE outseta_verify_result (x int)");
        assert!(valid(&s.mint(&jane())));
        assert_eq!(code("x.y.z").as_deref(), Some("malformed"));
        let n = Spi::get_one::<i64>("SELECT count(*) FROM outseta_try_verify('a.b.c')")
            .unwrap()
            .unwrap();
        assert_eq!(n, 1);
    }

    #[pg_test]
    fn with_a_domain_and_no_audience_aud_must_be_the_domain() {
        let s = start(); // keys still come from jwks_url
        sql("SET outseta_auth.domain = 'Test.Outseta.com'");
        let aud = |a: Value| s.mint(&with_claims(jane(), json!({ "aud": a })));
        assert!(valid(&aud(json!("test.outseta.com"))));
        assert!(valid(&aud(json!(["x", "test.outseta.com"]))));
        assert_eq!(
            code(&aud(json!("other.outseta.com"))).as_deref(),
            Some("audience_mismatch")
        );
        assert_eq!(code(&s.mint(&jane())).as_deref(), Some("missing_claim"));
        // The same with a literal JWKS.
        let literal = Issuer::new("https://test.outseta.com");
        let jwks = literal.jwks().to_string();
        sql(&format!(
            "SET outseta_auth.jwks = '{}'",
            jwks.replace('\'', "''")
        ));
        let laud = |a: Value| literal.mint(&with_claims(jane(), json!({ "aud": a })));
        assert_eq!(
            code(&laud(json!("other.outseta.com"))).as_deref(),
            Some("audience_mismatch")
        );
        assert!(valid(&laud(json!("test.outseta.com"))));
        sql("RESET outseta_auth.jwks");
        // An explicit audience list replaces the default.
        sql("SET outseta_auth.audience = 'other.outseta.com'");
        assert!(valid(&aud(json!("other.outseta.com"))));
        assert_eq!(
            code(&aud(json!("test.outseta.com"))).as_deref(),
            Some("audience_mismatch")
        );
        // Without a domain, aud is not checked.
        sql("RESET outseta_auth.audience; RESET outseta_auth.domain");
        assert!(valid(&aud(json!("anything"))));
    }

    #[pg_test]
    fn authenticate_with_empty_clears_the_setting_and_returns_what_is_now_in_effect() {
        let s = start();
        let bob = s.mint(&TokenRequest::new("DQ2b7wmV", "y9gE3kWj"));
        let jane_token = s.mint(&jane());
        Spi::run_with_args(
            "SELECT set_config('request.cookies', json_build_object('Outseta.nocode.accessToken', $1::text)::text, true)",
            &[bob.as_str().into()],
        )
        .unwrap();
        let sub_of =
            |q: &str, arg: &str| Spi::get_one_with_args::<String>(q, &[arg.into()]).unwrap();
        assert_eq!(
            sub_of("SELECT outseta_authenticate($1) ->> 'sub'", &jane_token).as_deref(),
            Some("dQGxEz94")
        );
        assert_eq!(text("SELECT outseta_sub()").as_deref(), Some("dQGxEz94"));
        // '' clears the setting: the cookie's token is in effect again, and returned.
        assert_eq!(
            sub_of("SELECT outseta_authenticate($1) ->> 'sub'", "").as_deref(),
            Some("DQ2b7wmV")
        );
        assert_eq!(text("SELECT outseta_sub()").as_deref(), Some("DQ2b7wmV"));
        assert_eq!(
            text("SELECT current_setting('outseta_auth.token')").as_deref(),
            Some("")
        );
        // With no other source, '' means no token at all.
        sql("SELECT set_config('request.cookies', '', true)");
        assert_eq!(
            sub_of("SELECT outseta_authenticate($1) ->> 'sub'", ""),
            None
        );
        assert_eq!(text("SELECT outseta_sub()"), None);
    }

    #[pg_test]
    fn jwks_max_stale_defaults_to_one_day() {
        assert_eq!(
            text("SELECT current_setting('outseta_auth.jwks_max_stale')").as_deref(),
            Some("1d")
        );
    }

    #[pg_test(error = "request.cookies is too large to look for the Outseta token in")]
    fn an_oversize_cookie_setting_is_a_clear_error() {
        let _s = start();
        sql("SELECT set_config('request.cookies', '[' || repeat('0,', 100000) || '0]', true)");
        text("SELECT outseta_sub()");
    }

    // ---- PostgREST: the cookie's CSRF rule, outseta_try_current ----

    fn set_request(cookie_token: &str, headers: Value) {
        Spi::run_with_args(
            "SELECT set_config('request.cookies', json_build_object('Outseta.nocode.accessToken', $1::text)::text, true),
                    set_config('request.headers', $2, true)",
            &[cookie_token.into(), headers.to_string().as_str().into()],
        )
        .unwrap();
    }

    #[pg_test]
    fn a_cross_site_request_does_not_use_the_cookie() {
        let s = start();
        let t = s.mint(&jane());
        let sub = || text("SELECT outseta_sub()");
        set_request(&t, json!({"sec-fetch-site": "same-origin"}));
        assert_eq!(sub().as_deref(), Some("dQGxEz94"));
        set_request(&t, json!({"sec-fetch-site": "cross-site"}));
        assert_eq!(sub(), None);
        // Issue 18's table, default settings (cookie_origins empty): not used.
        set_request(
            &t,
            json!({"origin": "https://evil.example.com", "host": "api.example.com",
                   "sec-fetch-site": "same-site"}),
        );
        assert_eq!(sub(), None, "a sibling subdomain");
        set_request(
            &t,
            json!({"origin": "https://evil.example", "host": "api.example.com"}),
        );
        assert_eq!(sub(), None, "another origin, no Fetch Metadata");
        set_request(&t, json!({"origin": "https://evil.example"}));
        assert_eq!(sub(), None, "an Origin and no Host");
        // A page script may add headers through CORS; none of them widens the rule.
        set_request(
            &t,
            json!({"origin": "https://evil.example", "host": "api.example.com",
                   "x-forwarded-host": "evil.example", "forwarded": "host=evil.example"}),
        );
        assert_eq!(sub(), None, "x-forwarded-host is not read");
        // Same-origin: the request's own origin, or no Origin at all (not a browser).
        set_request(
            &t,
            json!({"origin": "https://api.example.com", "host": "api.example.com",
                   "sec-fetch-site": "same-origin"}),
        );
        assert_eq!(sub().as_deref(), Some("dQGxEz94"));
        set_request(&t, json!({"host": "api.example.com"}));
        assert_eq!(sub().as_deref(), Some("dQGxEz94"));
        // A listed origin is what makes another origin count.
        sql("SET outseta_auth.cookie_origins = 'https://app.example.com'");
        set_request(
            &t,
            json!({"origin": "https://evil.example", "host": "api.example.com"}),
        );
        assert_eq!(sub(), None, "an origin not in the list");
        set_request(
            &t,
            json!({"origin": "https://app.example.com", "host": "api.example.com",
                   "sec-fetch-site": "same-site"}),
        );
        assert_eq!(sub().as_deref(), Some("dQGxEz94"));
        // The setting source is not a cookie: unaffected.
        set_request(&t, json!({"sec-fetch-site": "cross-site"}));
        set_token(&s.mint(&TokenRequest::new("DQ2b7wmV", "y9gE3kWj")));
        assert_eq!(sub().as_deref(), Some("DQ2b7wmV"));
    }

    #[pg_test]
    fn try_current_reports_the_current_token_without_raising() {
        let s = start();
        let q = "SELECT row_to_json(r)::text FROM outseta_try_current() r";
        let none = Spi::get_one::<bool>("SELECT outseta_try_current() IS NULL").unwrap();
        assert_eq!(none, Some(true));
        set_token(&s.mint(&jane()));
        let ok: Value = serde_json::from_str(&text(q).unwrap()).unwrap();
        assert_eq!(ok["valid"], true);
        assert_eq!(ok["claims"]["sub"], "dQGxEz94");
        set_token("x.y.z");
        let bad: Value = serde_json::from_str(&text(q).unwrap()).unwrap();
        assert_eq!(bad["valid"], false);
        assert_eq!(bad["error_code"], "malformed");
    }

    #[pg_test]
    fn jwks_status_is_for_monitoring_roles_only() {
        let _s = start();
        assert!(error_of("SELECT 1").is_none()); // creates the helper before SET ROLE
        sql("CREATE ROLE outseta_status_app");
        sql("CREATE ROLE outseta_status_monitor IN ROLE pg_monitor");
        sql("SET ROLE outseta_status_app");
        let e = error_of("SELECT count(*) FROM outseta_jwks_status()").unwrap();
        assert!(e.starts_with("42501"), "{e}");
        sql("RESET ROLE");
        sql("SET ROLE outseta_status_monitor");
        assert!(error_of("SELECT count(*) FROM outseta_jwks_status()").is_none());
        sql("RESET ROLE");
    }

    #[pg_test]
    fn pre_request_hands_verified_claims_on_only_when_asked() {
        let s = start();
        let anon = r#"{"iss": "supabase", "role": "anon"}"#;
        let run = |token: &str| -> Value {
            set_token(token);
            Spi::run_with_args(
                "SELECT set_config('request.jwt.claims', $1, true)",
                &[anon.into()],
            )
            .unwrap();
            sql("SELECT outseta_pre_request()");
            serde_json::from_str(&text("SELECT current_setting('request.jwt.claims')").unwrap())
                .unwrap()
        };
        let jane = s.mint(&jane());
        // Off (the default): PostgREST's claims stay.
        assert_eq!(
            text("SHOW outseta_auth.pre_request_claims").as_deref(),
            Some("off")
        );
        assert_eq!(run(&jane)["role"], "anon");
        sql("SET outseta_auth.pre_request_claims = on");
        let claims = run(&jane);
        assert_eq!(claims["sub"], "dQGxEz94");
        assert_eq!(claims["outseta:accountUid"], "wZmNw7Q2");
        assert_eq!(claims["iss"], "https://test.outseta.com");
        let me = text("SELECT current_user::text").unwrap();
        assert_eq!(claims["role"], me.as_str(), "role: the role now in effect");
        // No token: untouched.
        assert_eq!(run("")["role"], "anon");
        // A bad token ends the request (401) before anything is set.
        set_token("x.y.z");
        let e = error_of("SELECT outseta_pre_request()").unwrap();
        assert!(e.starts_with("PGRST "), "{e}");
        assert!(e.contains(r#""code" : "malformed""#), "{e}");
    }

    #[pg_test]
    fn pre_request_tells_anonymous_clients_no_urls_or_causes() {
        let s = start();
        let t = s.mint(&jane());
        // Nothing listens on port 1: the fetch fails with a network error naming the URL.
        sql("SET outseta_auth.jwks_url = 'http://127.0.0.1:1/internal-jwks'");
        set_token(&t);
        let e = error_of("SELECT outseta_pre_request()").unwrap();
        assert!(e.contains(r#""code" : "jwks_unavailable""#), "{e}");
        assert!(e.contains("token verification is unavailable"), "{e}");
        for secret in ["127.0.0.1", "internal-jwks", "refused", "http"] {
            assert!(!e.contains(secret), "{secret} in {e}");
        }
        // The cause is still there for the operator.
        let status = text("SELECT outseta_jwks_status()::text").unwrap();
        assert!(status.contains("internal-jwks"), "{status}");
        // A configuration error: 500 with a generic message.
        sql("SET outseta_auth.jwks_url = ''");
        let e = error_of("SELECT outseta_pre_request()").unwrap();
        assert!(e.contains(r#""code" : "config_error""#), "{e}");
        assert!(
            e.contains("misconfigured") && !e.contains("jwks_url"),
            "{e}"
        );
    }

    #[pg_test]
    fn ordinary_roles_are_not_told_internal_urls_or_causes() {
        let s = start();
        let t = s.mint(&jane());
        sql("SET outseta_auth.jwks_url = 'http://127.0.0.1:1/internal-jwks-path'");
        assert!(error_of("SELECT 1").is_none()); // creates the helper before SET ROLE
        sql("CREATE ROLE outseta_causes_app");
        sql("CREATE ROLE outseta_causes_monitor IN ROLE pg_monitor");
        let seen = |role: &str| -> (String, String) {
            sql(&format!("SET ROLE {role}"));
            let row = Spi::get_one_with_args::<String>(
                "SELECT r.error_code || ' ' || r.error FROM outseta_try_verify($1) r",
                &[t.as_str().into()],
            )
            .unwrap()
            .unwrap();
            let raised = error_of(&format!("SELECT outseta_verify('{t}')")).unwrap();
            sql("RESET ROLE");
            (row, raised)
        };
        let (row, raised) = seen("outseta_causes_app");
        assert!(row.starts_with("jwks_unavailable "), "{row}");
        assert!(raised.starts_with("58000 "), "{raised}");
        for text in [&row, &raised] {
            for internal in ["127.0.0.1", "internal-jwks-path", "refused"] {
                assert!(!text.contains(internal), "{internal} in {text}");
            }
        }
        // pg_monitor (and superusers) see the URL and the cause.
        let (row, _) = seen("outseta_causes_monitor");
        assert!(row.contains("internal-jwks-path"), "{row}");
    }

    // ---- Outseta's profile endpoint and webhooks ----

    /// SQLSTATE and message of the error `q` raises, or None.
    fn error_of(q: &str) -> Option<String> {
        // Created once per test transaction, before any SET ROLE, in public (usable by all).
        if Spi::get_one::<bool>(
            "SELECT to_regprocedure('public.outseta_test_error_of(text)') IS NULL",
        )
        .unwrap()
            == Some(true)
        {
            sql("CREATE FUNCTION public.outseta_test_error_of(q text) RETURNS text LANGUAGE plpgsql AS
                 $f$ BEGIN EXECUTE q; RETURN NULL; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $f$");
        }
        Spi::get_one_with_args::<String>("SELECT public.outseta_test_error_of($1)", &[q.into()])
            .unwrap()
    }

    fn start_profile() -> Server {
        let s = start();
        sql(&format!(
            "SET outseta_auth.profile_url = '{}'",
            s.profile_url()
        ));
        s
    }

    #[pg_test]
    fn the_profile_is_fetched_once_per_token_and_cached() {
        let s = start_profile();
        let jane_uid = "dQGxEz94";
        s.set_properties(
            jane_uid,
            json!({"FavoriteColor": "teal", "Seats": 5})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(
            Spi::get_one::<bool>("SELECT outseta_profile() IS NULL").unwrap(),
            Some(true),
            "no token: NULL"
        );
        assert_eq!(s.hits("/api/v1/profile"), 0, "no token: no request");
        set_token(&s.mint(&jane()));
        assert_eq!(
            text("SELECT outseta_profile() ->> 'Uid'").as_deref(),
            Some(jane_uid)
        );
        assert_eq!(
            text("SELECT outseta_profile() ->> 'FavoriteColor'").as_deref(),
            Some("teal")
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT (outseta_profile() ->> 'Seats')::bigint").unwrap(),
            Some(5)
        );
        // A per-row call costs no request either.
        assert_eq!(
            Spi::get_one::<i64>(
                "SELECT count(*) FROM generate_series(1, 500) WHERE outseta_profile() ->> 'Email' = 'jane@example.com'"
            )
            .unwrap(),
            Some(500)
        );
        assert_eq!(s.hits("/api/v1/profile"), 1);
        // Another token of the same person is asked about once more.
        let mut again = jane();
        again.extra.insert("jti".into(), json!("second"));
        set_token(&s.mint(&again));
        text("SELECT outseta_profile() ->> 'Uid'");
        text("SELECT outseta_profile() ->> 'Uid'");
        assert_eq!(s.hits("/api/v1/profile"), 2);
        // The profile is not a token check: with profile_check off, tokens verify whatever
        // the endpoint says.
        s.set_profile_fault(Fault::Status(500));
        set_token(&s.mint(&TokenRequest::new("DQ2b7wmV", "y9gE3kWj")));
        assert_eq!(text("SELECT outseta_sub()").as_deref(), Some("DQ2b7wmV"));
        assert_eq!(s.hits("/api/v1/profile"), 2);
    }

    #[pg_test]
    fn the_profile_of_a_bad_token_is_the_accessors_error() {
        let s = start_profile();
        set_token(&with_payload(
            &s.mint(&jane()),
            br#"{"sub":"x","exp":9999999999}"#,
        ));
        let e = error_of("SELECT outseta_profile()").unwrap();
        assert!(
            e.starts_with("28000 Outseta token has a bad signature"),
            "{e}"
        );
        assert_eq!(
            s.hits("/api/v1/profile"),
            0,
            "nothing is sent for a bad token"
        );
    }

    #[pg_test]
    fn profile_check_refuses_a_deleted_person_within_the_ttl() {
        let s = start_profile();
        sql("SET outseta_auth.profile_check = on");
        sql("SET outseta_auth.profile_ttl = 1");
        let t = s.mint(&jane());
        assert!(valid(&t));
        set_token(&t);
        assert_eq!(text("SELECT outseta_sub()").as_deref(), Some("dQGxEz94"));
        s.set_deleted("dQGxEz94", true);
        // A token not seen before is refused at once...
        let mut other = jane();
        other.extra.insert("jti".into(), json!("other"));
        assert_eq!(code(&s.mint(&other)).as_deref(), Some("revoked"));
        // ...and the cached one once profile_ttl has passed.
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(code(&t).as_deref(), Some("revoked"));
        let e = error_of("SELECT outseta_sub()").unwrap();
        assert!(
            e.starts_with("28000 Outseta no longer accepts this token"),
            "{e}"
        );
        assert!(!e.contains(&t[..40]), "no token material: {e}");
        // Turning the check off restores JWKS-only verification.
        sql("SET outseta_auth.profile_check = off");
        assert_eq!(text("SELECT outseta_sub()").as_deref(), Some("dQGxEz94"));
    }

    #[pg_test]
    fn profile_check_fails_closed_when_the_endpoint_is_down() {
        let s = start_profile();
        sql("SET outseta_auth.profile_check = on");
        for fault in [
            Fault::Status(503),
            Fault::Hangup,
            Fault::Body("<html>".into()),
            Fault::Redirect("http://127.0.0.1:9/".into()),
            Fault::Oversize(100_000),
        ] {
            s.set_profile_fault(fault.clone());
            let mut r = jane();
            r.extra.insert("jti".into(), json!(format!("{fault:?}")));
            let t = s.mint(&r);
            assert_eq!(
                code(&t).as_deref(),
                Some("profile_unavailable"),
                "{fault:?}"
            );
            set_token(&t);
            let e = error_of("SELECT outseta_sub()").unwrap();
            assert!(e.starts_with("58000 could not check the token"), "{e}");
        }
        s.set_profile_fault(Fault::None);
        sql("SET outseta_auth.http_timeout = 300");
        s.set_profile_fault(Fault::Slow(Duration::from_secs(3)));
        let t = s.mint(&TokenRequest::new("DQ2b7wmV", "y9gE3kWj"));
        let started = std::time::Instant::now();
        assert_eq!(code(&t).as_deref(), Some("profile_unavailable"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded by http_timeout"
        );
    }

    #[pg_test]
    fn profile_settings_are_validated_and_superuser_only() {
        let e =
            error_of("SET outseta_auth.profile_url = 'http://example.com/api/v1/profile'").unwrap();
        assert!(e.starts_with("22023"), "{e}");
        let e = error_of("SELECT outseta_profile()");
        assert_eq!(e, None, "no token: no configuration needed");
        sql("SET outseta_auth.jwks_url = ''");
        sql("SET outseta_auth.domain = ''");
        let s = Server::start("127.0.0.1:0", Issuer::new("x")).unwrap();
        sql(&format!(
            "SET outseta_auth.jwks = '{}'",
            s.issuer.lock().unwrap().jwks()
        ));
        set_token(&s.mint(&jane()));
        let e = error_of("SELECT outseta_profile()").unwrap();
        assert!(
            e.contains("22023 invalid value for outseta_auth.profile_url"),
            "{e}"
        );
        error_of("SELECT 1");
        sql("CREATE ROLE outseta_profile_tester");
        sql("SET ROLE outseta_profile_tester");
        for q in [
            "SET outseta_auth.profile_check = off",
            "SET outseta_auth.profile_ttl = 5",
            "SET outseta_auth.profile_url = 'https://a.outseta.com/api/v1/profile'",
        ] {
            let e = error_of(q).unwrap();
            assert!(e.starts_with("42501"), "{q}: {e}");
        }
        sql("RESET ROLE");
    }

    const WEBHOOK_KEY: &str = "6b3a55e0261b0304143f805a24924d0c1c44524821305f31d9277843b8a10f4e";

    fn webhook_ok(body: &str, sig: Option<&str>) -> Option<bool> {
        Spi::get_one_with_args::<bool>(
            "SELECT outseta_verify_webhook($1, $2)",
            &[body.into(), sig.into()],
        )
        .unwrap()
    }

    #[pg_test]
    fn webhook_signatures() {
        let e = error_of("SELECT outseta_verify_webhook('{}', 'sha256=00')").unwrap();
        assert!(
            e.starts_with("22023 invalid value for outseta_auth.webhook_secret"),
            "no key configured: {e}"
        );
        sql(&format!(
            "SET outseta_auth.webhook_secret = '{WEBHOOK_KEY}'"
        ));
        let body =
            outseta_dev::account_webhook_body("wZmNw7Q2", "OW4pRYWg", &["addon1"]).to_string();
        // Signed by outseta-dev's own HMAC (not the extension's code).
        let sig = outseta_dev::webhook_signature(WEBHOOK_KEY, body.as_bytes()).unwrap();
        assert_eq!(webhook_ok(&body, Some(&sig)), Some(true));
        assert_eq!(webhook_ok(&body, Some(&sig["sha256=".len()..])), Some(true));
        let bytea = Spi::get_one_with_args::<bool>(
            "SELECT outseta_verify_webhook(convert_to($1, 'UTF8'), $2)",
            &[body.as_str().into(), sig.as_str().into()],
        )
        .unwrap();
        assert_eq!(bytea, Some(true));
        let other = outseta_dev::webhook_signature(&"ab".repeat(32), body.as_bytes()).unwrap();
        let reordered = body.replacen('{', "{ ", 1);
        for (b, s) in [
            (body.as_str(), Some(other.as_str())),
            (reordered.as_str(), Some(sig.as_str())),
            (body.as_str(), Some("sha256=")),
            (body.as_str(), Some("garbage")),
            (body.as_str(), Some(&sig[..sig.len() - 1])),
            (body.as_str(), None),
        ] {
            assert_eq!(webhook_ok(b, s), Some(false), "{s:?}");
        }
        assert_eq!(
            Spi::get_one_with_args::<bool>(
                "SELECT outseta_verify_webhook(NULL::text, $1)",
                &[sig.as_str().into()]
            )
            .unwrap(),
            Some(false)
        );
    }

    #[pg_test]
    fn the_webhook_secret_is_validated_hidden_and_never_echoed() {
        let bad = "not-a-key-but-a-secret-1234";
        let e = error_of(&format!("SET outseta_auth.webhook_secret = '{bad}'")).unwrap();
        assert!(e.starts_with("22023"), "{e}");
        assert!(!e.contains(bad), "the value is not echoed: {e}");
        // Catalog-stored defaults are readable by every role: refused.
        sql("CREATE ROLE outseta_webhook_tester");
        for q in [
            format!("ALTER ROLE outseta_webhook_tester SET outseta_auth.webhook_secret = '{WEBHOOK_KEY}'"),
            format!("ALTER DATABASE postgres SET outseta_auth.webhook_secret = '{WEBHOOK_KEY}'"),
            format!("CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql SET outseta_auth.webhook_secret = '{WEBHOOK_KEY}' AS 'SELECT 1'"),
        ] {
            let e = error_of(&q).unwrap();
            assert!(e.starts_with("22023"), "{q}: {e}");
            assert!(!e.contains(WEBHOOK_KEY), "{e}");
        }
        sql(&format!(
            "SET outseta_auth.webhook_secret = '{WEBHOOK_KEY}'"
        ));
        // Nobody sees it, superusers included: only whether it is set.
        assert_eq!(
            text("SHOW outseta_auth.webhook_secret").as_deref(),
            Some("(hidden)")
        );
        assert_eq!(
            text("SELECT current_setting('outseta_auth.webhook_secret')").as_deref(),
            Some("(hidden)")
        );
        // Members of pg_read_all_settings (pg_monitor, the usual monitoring role) neither.
        sql("CREATE ROLE outseta_webhook_monitor IN ROLE pg_monitor");
        sql("SET ROLE outseta_webhook_monitor");
        assert_eq!(
            text("SHOW outseta_auth.webhook_secret").as_deref(),
            Some("(hidden)")
        );
        sql("RESET ROLE");
        // The extension still reads the value itself.
        let sig = outseta_dev::webhook_signature(WEBHOOK_KEY, b"{}").unwrap();
        assert_eq!(webhook_ok("{}", Some(&sig)), Some(true));
        sql("SET ROLE outseta_webhook_tester");
        let e = error_of("SHOW outseta_auth.webhook_secret").unwrap();
        assert!(e.starts_with("42501"), "{e}");
        let e = error_of("SELECT current_setting('outseta_auth.webhook_secret')").unwrap();
        assert!(e.starts_with("42501"), "{e}");
        assert_eq!(
            Spi::get_one::<i64>(
                "SELECT count(*) FROM pg_settings WHERE name = 'outseta_auth.webhook_secret' OR setting LIKE '%6b3a55e0%'"
            )
            .unwrap(),
            Some(0)
        );
        let e = error_of("SET outseta_auth.webhook_secret = ''").unwrap();
        assert!(e.starts_with("42501"), "{e}");
        // An ordinary role may still check signatures (it learns only true/false).
        let body = "{}";
        let sig = outseta_dev::webhook_signature(WEBHOOK_KEY, body.as_bytes()).unwrap();
        assert_eq!(webhook_ok(body, Some(&sig)), Some(true));
        sql("RESET ROLE");
    }

    #[pg_test]
    fn the_verified_token_table_keeps_a_pool_of_20000_tokens() {
        use crate::shared::verified::{kept_of, ENTRIES};
        // The benchmark's pool (issue 20): with one set per digest about 450 of 20,000
        // overflowed their set and were verified again on every use, each evicting another.
        assert_eq!(kept_of(20_000), 20_000);
        // Over capacity it stays bounded and nearly full.
        let kept = kept_of(2 * ENTRIES as u32);
        assert!(kept <= ENTRIES && kept > ENTRIES * 9 / 10, "{kept}");
    }
}
