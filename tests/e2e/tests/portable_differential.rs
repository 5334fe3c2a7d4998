//! The portable edition held to the native one: both installed in one database (schemas
//! `native` and `portable`), configured alike, given the same tokens (a corpus of the rules'
//! cases and over 2,000 mutations of it), must give the same `valid`, `error_code` and
//! claims; and both must expose the same functions (names, arguments, results, strictness,
//! volatility, grants; parallel labels as documented).
//!
//! Needs the native extension installed on the cluster (scripts/e2e, PostgreSQL 15 and 17).
//! Times in the tokens stay at least five minutes from any boundary (leeway 600 s), so that
//! no verdict can change between the two editions' checks of one token.

use outseta_dev::{b64url, now, SigningKey};
use outseta_e2e::connect_as;
use outseta_e2e::portable::{new_database, port, psql_file_with, script, APP, OWNER};
use postgres::Client;
use serde_json::{json, Value};

const ISS: &str = "https://diff.outseta.com";
const AUD: &str = "diff.outseta.com";

/// A public P-256 key (RFC 7515 A.3, without its private member).
fn ec_jwk() -> Value {
    json!({"kty": "EC", "crv": "P-256", "kid": "ec1",
           "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
           "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})
}

struct Keys {
    k1: SigningKey,
    k2: SigningKey,
    k3: SigningKey,
    /// Not in the key set: one with a kid that is (k1), one with a kid that is not (zz).
    outsider: SigningKey,
    stranger: SigningKey,
    jwks: Value,
}

fn keys() -> Keys {
    let k1 = SigningKey::generate("k1");
    let k2 = SigningKey::generate_bits("k2", 3072);
    let k3 = SigningKey::generate_bits("k3", 4096);
    let mut j2 = k2.jwk();
    j2.as_object_mut().unwrap().remove("alg");
    let mut j3 = k3.jwk();
    j3["alg"] = json!("RS512");
    let mut dup_a = k1.jwk();
    dup_a["kid"] = json!("dup");
    let mut dup_b = k2.jwk();
    dup_b["kid"] = json!("dup");
    let mut enc = k1.jwk();
    enc["kid"] = json!("enc");
    enc["use"] = json!("enc");
    let jwks = json!({"keys": [
        k1.jwk(), j2, j3, ec_jwk(), dup_a, dup_b, enc,
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
    ]});
    Keys {
        k1,
        k2,
        k3,
        outsider: SigningKey::generate("k1"),
        stranger: SigningKey::generate("zz"),
        jwks,
    }
}

/// The database with both editions, configured alike. Returns a connection as the
/// ordinary application role.
fn setup(db_name: &str, jwks: &Value) -> Client {
    let db_name = db_name.to_string();
    #[allow(non_snake_case)]
    let DB = db_name.as_str();
    let port = port();
    let mut db = new_database(port, DB, &[OWNER, APP]);
    let literal = jwks.to_string().replace('\'', "''");
    db.batch_execute(&format!(
        "CREATE SCHEMA native;
         CREATE EXTENSION outseta_auth SCHEMA native;
         CREATE SCHEMA portable AUTHORIZATION {OWNER};
         GRANT USAGE ON SCHEMA native, portable TO {APP};"
    ))
    .unwrap();
    for (setting, value) in [
        ("outseta_auth.jwks", literal.as_str()),
        ("outseta_auth.algorithms", "RS256,RS384,RS512"),
        ("outseta_auth.issuer", ISS),
        ("outseta_auth.audience", AUD),
        ("outseta_auth.leeway", "600"),
    ] {
        db.batch_execute(&format!("ALTER DATABASE {DB} SET {setting} = '{value}'"))
            .unwrap();
    }
    psql_file_with(port, OWNER, DB, &script(), "portable");
    let mut owner = connect_as(port, OWNER, DB);
    for (setting, value) in [
        ("outseta_auth.jwks", jwks.to_string()),
        ("outseta_auth.algorithms", "RS256,RS384,RS512".into()),
        ("outseta_auth.issuer", ISS.into()),
        ("outseta_auth.audience", AUD.into()),
        ("outseta_auth.leeway", "600".into()),
    ] {
        owner
            .execute(
                "SELECT portable.outseta_config_set($1, $2)",
                &[&setting, &value],
            )
            .unwrap();
    }
    connect_as(port, APP, DB)
}

fn base_claims() -> Value {
    json!({
        "sub": "L9nqAzQZ", "email": "jane@example.com", "name": "Jané Doe",
        "outseta:accountUid": "wZmNw7Q2", "outseta:isPrimary": "1",
        "outseta:addOnUids": ["a1"], "iss": ISS, "aud": AUD,
        "iat": now() - 10, "nbf": now() - 10, "exp": now() + 3600,
    })
}

/// The rules' cases: each a token.
fn corpus(k: &Keys) -> Vec<String> {
    let h = |alg: &str, kid: Option<&str>| -> String {
        match kid {
            Some(kid) => json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string(),
            None => json!({"alg": alg, "typ": "JWT"}).to_string(),
        }
    };
    let c = base_claims();
    let with = |f: &dyn Fn(&mut Value)| -> String {
        let mut v = c.clone();
        f(&mut v);
        v.to_string()
    };
    let p = c.to_string();
    let mut out = vec![
        k.k1.mint_raw(&h("RS256", Some("k1")), &p),
        k.k2.mint_raw(&h("RS384", Some("k2")), &p),
        k.k2.mint_raw(&h("RS512", Some("k2")), &p),
        k.k3.mint_raw(&h("RS512", Some("k3")), &p),
        k.k3.mint_raw(&h("RS256", Some("k3")), &p),
        k.k2.mint_raw(&h("RS384", None), &p),
        k.k1.mint_raw(&h("RS256", None), &p),
        k.k1.mint_raw(&h("RS256", Some("ec1")), &p),
        k.k1.mint_raw(&h("RS256", Some("dup")), &p),
        k.k1.mint_raw(&h("RS256", Some("enc")), &p),
        k.k1.mint_raw(&h("RS256", Some("hmac")), &p),
        k.outsider.mint_raw(&h("RS256", Some("k1")), &p),
        k.stranger.mint_raw(&h("RS256", Some("zz")), &p),
        k.k2.mint_raw(&h("RS256", Some("k1")), &p),
        k.k1.mint_raw(&h("ES256", Some("k1")), &p),
        k.k1.mint_raw(&h("PS256", Some("k1")), &p),
        k.k1.mint_raw(&h("HS256", Some("k1")), &p),
        k.k1.mint_raw(&h("none", None), &p),
        k.k1.mint_raw(&h("nOnE", None), &p),
        k.k1.mint_raw(&h("rs256", Some("k1")), &p),
        k.k1.mint_raw(r#"{"typ":"JWT"}"#, &p),
        k.k1.mint_raw(r#"{"alg":256}"#, &p),
        k.k1.mint_raw(r#"{"alg":"RS256","kid":7}"#, &p),
        k.k1.mint_raw(r#"{"alg":"RS256","kid":"k1","crit":["exp"]}"#, &p),
        k.k1.mint_raw(r#"["RS256"]"#, &p),
        k.k1.mint_raw(r#"{"alg":"RS256","kid":"k1""#, &p),
        k.k1.mint_raw(
            r#"{"alg":"RS256","kid":"k1","jku":"http://127.0.0.1:1/jwks","jwk":{"kty":"RSA"}}"#,
            &p,
        ),
        k.k1.mint_raw(r#"{"alg":"RS256","kid":"k1","alg":"HS256"}"#, &p),
    ];
    let rs = |payload: String| k.k1.mint_raw(&h("RS256", Some("k1")), &payload);
    for payload in [
        with(&|v| v["exp"] = json!(now() - 1200)),
        with(&|v| v["exp"] = json!(now() - 300)),
        with(&|v| {
            v.as_object_mut().unwrap().remove("exp");
        }),
        with(&|v| v["exp"] = json!("4000000000")),
        with(&|v| v["exp"] = json!(null)),
        with(&|v| v["exp"] = json!(1e300)),
        with(&|v| v["exp"] = json!(now() as f64 + 100.5)),
        with(&|v| v["nbf"] = json!(now() + 1200)),
        with(&|v| v["nbf"] = json!(now() + 300)),
        with(&|v| v["nbf"] = json!("soon")),
        with(&|v| v["iat"] = json!(now() + 1200)),
        with(&|v| v["iat"] = json!(true)),
        with(&|v| v["iss"] = json!("https://evil.example")),
        with(&|v| {
            v.as_object_mut().unwrap().remove("iss");
        }),
        with(&|v| v["iss"] = json!(["x"])),
        with(&|v| v["aud"] = json!([AUD, "other"])),
        with(&|v| v["aud"] = json!(["other", 3])),
        with(&|v| v["aud"] = json!(3)),
        with(&|v| {
            v.as_object_mut().unwrap().remove("aud");
        }),
        with(&|v| v["aud"] = json!("DIFF.outseta.com")),
        with(&|v| v["deep"] = json!({"a": [1, {"b": "c"}]})),
        "[1,2]".into(),
        "\"claims\"".into(),
        "{}".into(),
        "".into(),
        "{\"exp\": 1e400}".into(),
        format!(
            "{{\"exp\": {}, \"iss\": \"{ISS}\", \"aud\": \"{AUD}\", \"x\": \"a\\u0000b\"}}",
            now() + 600
        ),
        format!(
            "{{\"exp\": {}, \"iss\": \"{ISS}\", \"aud\": \"{AUD}\", \"x\": \"a\\\\u0000b\"}}",
            now() + 600
        ),
        format!(
            "{{\"exp\": {}, \"iss\": \"{ISS}\", \"aud\": \"{AUD}\",}}",
            now() + 600
        ),
        format!(
            "{{\"exp\": {}, \"iss\": \"{ISS}\", \"aud\": \"{AUD}\", \"e\": 1e-400}}",
            now() + 600
        ),
        format!(
            "{{\"exp\": {}, \"iss\": \"{ISS}\", \"aud\": \"{AUD}\", \"s\": \"\\ud800\"}}",
            now() + 600
        ),
        format!(
            "{{\"exp\": {}, \"iss\": \"{ISS}\", \"aud\": \"{AUD}\", \"outseta:isPrimary\": 1.0}}",
            now() + 600
        ),
    ] {
        out.push(rs(payload));
    }
    // Bytes that are not UTF-8 in the payload, a signature cut short, one as long as n.
    let good = out[0].clone();
    let (hp, _) = good.rsplit_once('.').unwrap();
    let (hd, _) = hp.split_once('.').unwrap();
    out.push(format!(
        "{hd}.{}.{}",
        b64url(b"\xff\xfe{}"),
        b64url(&[1; 256])
    ));
    out.push(format!("{hp}.{}", b64url(&[0xff; 256])));
    out.push(format!("{hp}.{}", b64url(&[1; 255])));
    out.push(format!("{hp}.AA"));
    // Shapes and base64url strictness.
    for t in [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "..",
        ".b.c",
        "a.b.",
        "a..c",
        "Zm9v.Zm9v.Zm9v=",
        "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
        "eyJhbGciOiJSUzI1NiJ9.e30.c2lu",
        "eyJhbGciOiJSUzI1NiJ9.e3+.c2ln",
        "eyJhbGciOiJSUzI1NiJ9 .e30.c2ln",
    ] {
        out.push(t.to_string());
    }
    out.push(format!("{good}{}", "A".repeat(16 * 1024)));
    out.push(format!("{hp}.{}", "A".repeat(16 * 1024 - hp.len() - 1)));
    out
}

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// One mutation of `t`: a byte flipped, cut, dropped or doubled; header or claims edited
/// and signed again with a key and algorithm of the set or not.
fn mutate(t: &str, k: &Keys, rng: &mut Rng) -> String {
    let mut b = t.as_bytes().to_vec();
    match rng.below(8) {
        0 | 1 if !b.is_empty() => {
            let i = rng.below(b.len());
            b[i] = match rng.below(10) {
                0 => *rng.pick(b".=+/ "),
                _ => *rng.pick(B64),
            };
        }
        2 if !b.is_empty() => b.truncate(rng.below(b.len())),
        3 if !b.is_empty() => {
            b.remove(rng.below(b.len()));
        }
        4 if !b.is_empty() => {
            let i = rng.below(b.len());
            let j = (i + 1 + rng.below(8)).min(b.len());
            let chunk = b[i..j].to_vec();
            b.splice(i..i, chunk);
        }
        5 | 6 => {
            // Claims edited, signed again.
            let mut c = base_claims();
            let field = *rng.pick(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
            let value = rng
                .pick(&[
                    json!(now() - 1200),
                    json!(now() + 1200),
                    json!(now() - 300),
                    json!(now() + 300),
                    json!("text"),
                    json!(null),
                    json!([AUD]),
                    json!(ISS),
                    json!(AUD),
                    json!(1.5),
                ])
                .clone();
            if rng.below(4) == 0 {
                c.as_object_mut().unwrap().remove(field);
            } else {
                c[field] = value;
            }
            let signer = *rng.pick(&[&k.k1, &k.k2, &k.k3, &k.outsider, &k.stranger]);
            let alg = *rng.pick(&["RS256", "RS384", "RS512"]);
            let kid = rng.pick(&[Some("k1"), Some("k2"), Some("k3"), Some("zz"), None]);
            let header = match kid {
                Some(kid) => json!({"alg": alg, "kid": kid}),
                None => json!({"alg": alg}),
            };
            return signer.mint_raw(&header.to_string(), &c.to_string());
        }
        _ => {
            // The header edited, the payload and signature kept.
            let alg = *rng.pick(&["RS256", "RS384", "RS512", "ES256", "HS256", "none", "PS512"]);
            let kid = *rng.pick(&["k1", "k2", "k3", "ec1", "dup", "hmac", "zz", ""]);
            let header = if kid.is_empty() {
                json!({"alg": alg})
            } else {
                json!({"alg": alg, "kid": kid})
            };
            if let Some((_, rest)) = t.split_once('.') {
                return format!("{}.{rest}", b64url(header.to_string().as_bytes()));
            }
        }
    }
    String::from_utf8(b).unwrap_or_default()
}

/// Both editions' verdicts on `tokens`: mismatches as text.
fn compare(c: &mut Client, tokens: &[String]) -> Vec<String> {
    let mut bad = Vec::new();
    for chunk in tokens.chunks(100) {
        let rows = c
            .query(
                "SELECT t, (n).valid, (n).error_code, (p).valid, (p).error_code,
                        (n).claims IS NOT DISTINCT FROM (p).claims, (p).error
                 FROM (SELECT t, native.outseta_try_verify(t) AS n, portable.outseta_try_verify(t) AS p
                       FROM unnest($1::text[]) WITH ORDINALITY AS x(t, i) ORDER BY i) y",
                &[&chunk],
            )
            .unwrap();
        for r in rows {
            let (nv, nc, pv, pc, same): (bool, Option<String>, bool, Option<String>, bool) =
                (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
            if nv != pv || nc != pc || !same {
                let t: String = r.get(0);
                let perr: Option<String> = r.get(6);
                bad.push(format!(
                    "native ({nv}, {nc:?}) portable ({pv}, {pc:?}, {perr:?}) same claims {same}: {}",
                    if t.len() > 300 { format!("{}... ({} bytes)", &t[..300], t.len()) } else { t }
                ));
            }
        }
    }
    bad
}

#[test]
fn both_editions_give_the_same_verdicts() {
    let k = keys();
    let mut c = setup("portable_differential", &k.jwks);
    let corpus = corpus(&k);
    let mut bad = compare(&mut c, &corpus);
    let mut rng = Rng(0x005e_ed0f_0a7e_57ab);
    let mut mutations = Vec::new();
    for base in &corpus {
        for _ in 0..40 {
            mutations.push(mutate(base, &k, &mut rng));
        }
    }
    bad.extend(compare(&mut c, &mutations));
    let valid: i64 = c
        .query_one(
            "SELECT count(*) FILTER (WHERE (portable.outseta_try_verify(t)).valid)
             FROM unnest($1::text[]) t",
            &[&corpus],
        )
        .unwrap()
        .get(0);
    eprintln!(
        "differential: {} corpus tokens ({valid} valid) and {} mutations; {} differences",
        corpus.len(),
        mutations.len(),
        bad.len()
    );
    assert!(corpus.len() + mutations.len() >= 2000);
    assert!(valid >= 5, "the corpus must hold valid tokens: {valid}");
    assert!(
        bad.is_empty(),
        "{} differences:\n{}",
        bad.len(),
        bad[..bad.len().min(25)].join("\n")
    );
}

#[test]
fn both_editions_expose_the_same_functions() {
    let k = keys();
    let mut c = setup("portable_parity", &k.jwks);
    // Per function: identity arguments, result, strictness, volatility, parallel label,
    // and who may call it (PUBLIC, pg_monitor).
    let describe = |c: &mut Client, schema: &str| -> Vec<(String, String)> {
        c.query(
            "SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
                    format('returns %s strict=%s volatile=%s public=%s pg_monitor=%s',
                           replace(pg_get_function_result(p.oid), $1 || '.', ''), p.proisstrict,
                           p.provolatile, has_function_privilege('public', p.oid, 'EXECUTE'),
                           has_function_privilege('pg_monitor', p.oid, 'EXECUTE')),
                    p.proparallel::text
             FROM pg_proc p WHERE p.pronamespace = $1::regnamespace AND p.proname LIKE 'outseta\\_%'
             ORDER BY 1",
            &[&schema],
        )
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                format!(
                    "{} parallel={}",
                    r.get::<_, String>(1),
                    r.get::<_, String>(2)
                ),
            )
        })
        .collect()
    };
    let native = describe(&mut c, "native");
    let portable = describe(&mut c, "portable");
    let only_native = ["outseta_shared_slots()"];
    let only_portable = [
        "outseta_config(OUT setting text, OUT value text, OUT is_default boolean)",
        "outseta_config_reset(setting text)",
        "outseta_config_set(setting text, value text)",
        "outseta_set_jwks(jwks jsonb)",
    ];
    let mut differences = Vec::new();
    for (name, n) in &native {
        if only_native.contains(&name.as_str()) {
            continue;
        }
        match portable.iter().find(|(p, _)| p == name) {
            None => differences.push(format!("{name}: missing from the portable edition")),
            Some((_, p)) => {
                // Documented: the verify family and the accessors may write the
                // verified-token table (and fetch keys), so they are PARALLEL UNSAFE there.
                let (n_rest, n_par) = n.rsplit_once(" parallel=").unwrap();
                let (p_rest, p_par) = p.rsplit_once(" parallel=").unwrap();
                let parallel_ok = n_par == p_par || p_par == "u";
                if n_rest != p_rest || !parallel_ok {
                    differences.push(format!("{name}: native {n}, portable {p}"));
                }
            }
        }
    }
    for (name, _) in &portable {
        if !only_portable.contains(&name.as_str()) && !native.iter().any(|(n, _)| n == name) {
            differences.push(format!("{name}: only in the portable edition"));
        }
    }
    assert!(
        native.len() >= 20,
        "the native edition's functions were found: {native:?}"
    );
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
