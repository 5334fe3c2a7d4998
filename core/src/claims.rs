//! Claim checks (time, issuer, audience) and the Outseta claims, extracted once per token
//! so that a per-row accessor is a field read.

use serde_json::{Map, Value};

use crate::error::AuthError;
use crate::policy::Policy;

/// A token whose signature and claims have been checked.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    pub claims: Map<String, Value>,
    /// The payload exactly as signed (JSON text): handed to Postgres' `jsonb_in` as is,
    /// which is cheaper than re-serializing `claims` and keeps numbers exact.
    pub payload_json: String,
    pub exp: f64,
    pub nbf: Option<f64>,
    pub sub: Option<String>,
    pub account_uid: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub plan_uid: Option<String>,
    pub subscription_uid: Option<String>,
    pub add_on_uids: Option<Vec<String>>,
    pub is_primary: Option<bool>,
}

impl VerifiedToken {
    /// `exp` and `nbf` again, against `now`: used on every cache hit, since a cached token
    /// expires like any other.
    pub fn check_times(&self, now: f64, leeway: i64) -> Result<(), AuthError> {
        check_exp(self.exp, now, leeway)?;
        if let Some(nbf) = self.nbf {
            check_nbf(nbf, now, leeway)?;
        }
        Ok(())
    }
}

/// Parse the payload and check every claim rule; `now` is wall-clock seconds.
pub fn check(payload: &[u8], policy: &Policy, now: f64) -> Result<VerifiedToken, AuthError> {
    let claims: Map<String, Value> = match serde_json::from_slice(payload) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(AuthError::malformed("the claims are not a JSON object")),
        Err(_) => return Err(AuthError::malformed("the claims are not valid UTF-8 JSON")),
    };
    // PostgreSQL text cannot hold U+0000: such a claim would come out truncated or corrupt
    // from one function and fail in another. Refuse the token in every function alike.
    if claims.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
        return Err(AuthError::malformed(
            "a claim contains the character U+0000 (NUL), which PostgreSQL text cannot hold",
        ));
    }
    let leeway = policy.leeway;
    let exp = numeric_date(&claims, "exp")?.ok_or(AuthError::MissingClaim { claim: "exp" })?;
    check_exp(exp, now, leeway)?;
    let nbf = numeric_date(&claims, "nbf")?;
    if let Some(nbf) = nbf {
        check_nbf(nbf, now, leeway)?;
    }
    if let Some(iat) = numeric_date(&claims, "iat")? {
        if iat > now + leeway as f64 {
            return Err(AuthError::IssuedInFuture {
                iat,
                now: now as i64,
                leeway,
            });
        }
    }
    if !policy.issuers.is_empty() {
        match claims.get("iss") {
            None => return Err(AuthError::MissingClaim { claim: "iss" }),
            Some(Value::String(iss)) if policy.issuers.iter().any(|i| i == iss) => {}
            Some(Value::String(iss)) => return Err(AuthError::IssuerMismatch { got: iss.clone() }),
            Some(_) => {
                return Err(AuthError::InvalidClaim {
                    claim: "iss",
                    reason: "not a string".into(),
                })
            }
        }
    }
    if !policy.audiences.is_empty() {
        let accepted = |a: &str| policy.audiences.iter().any(|x| x == a);
        match claims.get("aud") {
            None => return Err(AuthError::MissingClaim { claim: "aud" }),
            Some(Value::String(a)) => {
                if !accepted(a) {
                    return Err(AuthError::AudienceMismatch);
                }
            }
            Some(Value::Array(items)) => {
                if !items.iter().any(|v| v.as_str().is_some_and(accepted)) {
                    return Err(AuthError::AudienceMismatch);
                }
            }
            Some(_) => {
                return Err(AuthError::InvalidClaim {
                    claim: "aud",
                    reason: "not a string or an array of strings".into(),
                })
            }
        }
    }

    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(String::from);
    Ok(VerifiedToken {
        // serde_json accepted it, so it is UTF-8.
        payload_json: String::from_utf8_lossy(payload).into_owned(),
        exp,
        nbf,
        sub: text("sub"),
        account_uid: text("outseta:accountUid"),
        email: text("email"),
        name: text("name"),
        plan_uid: text("outseta:planUid"),
        subscription_uid: text("outseta:subscriptionUid"),
        add_on_uids: claims.get("outseta:addOnUids").and_then(string_array),
        is_primary: claims.get("outseta:isPrimary").and_then(flag),
        claims,
    })
}

/// True if any string (member name or value) inside `v` contains U+0000.
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn check_exp(exp: f64, now: f64, leeway: i64) -> Result<(), AuthError> {
    if now >= exp + leeway as f64 {
        return Err(AuthError::Expired {
            exp,
            now: now as i64,
            leeway,
        });
    }
    Ok(())
}

fn check_nbf(nbf: f64, now: f64, leeway: i64) -> Result<(), AuthError> {
    if nbf > now + leeway as f64 {
        return Err(AuthError::NotYetValid {
            nbf,
            now: now as i64,
            leeway,
        });
    }
    Ok(())
}

/// A NumericDate claim: absent is `None`; present, it must be a finite JSON number.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(AuthError::InvalidClaim {
                claim: name,
                reason: "not a finite number".into(),
            }),
        },
        Some(_) => Err(AuthError::InvalidClaim {
            claim: name,
            reason: "not a number".into(),
        }),
    }
}

/// An array of strings; anything else (or any non-string member) is treated as absent.
fn string_array(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_str().map(String::from))
        .collect()
}

/// Outseta sends "0"/"1" strings; JSON booleans and 0/1 are accepted too.
fn flag(v: &Value) -> Option<bool> {
    match v {
        Value::String(s) if s == "1" || s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s == "0" || s.eq_ignore_ascii_case("false") => Some(false),
        Value::Bool(b) => Some(*b),
        Value::Number(n) if n.as_i64() == Some(1) => Some(true),
        Value::Number(n) if n.as_i64() == Some(0) => Some(false),
        _ => None,
    }
}

/// Wall-clock seconds since the epoch (not the transaction start time).
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: f64 = 1_700_000_000.0;

    fn run(claims: Value, policy: &Policy) -> Result<VerifiedToken, AuthError> {
        check(claims.to_string().as_bytes(), policy, NOW)
    }

    fn code(claims: Value, policy: &Policy) -> &'static str {
        run(claims, policy).unwrap_err().code()
    }

    #[test]
    fn nul_anywhere_in_the_claims_is_malformed() {
        let exp = NOW + 60.0;
        for claims in [
            json!({"sub": "u\u{0}7", "exp": exp}),
            json!({"exp": exp, "a\u{0}b": "x"}),
            json!({"exp": exp, "outseta:addOnUids": ["ok", "\u{0}"]}),
            json!({"exp": exp, "deep": {"er": [{"k\u{0}": 1}]}}),
        ] {
            assert_eq!(
                code(claims.clone(), &Policy::default()),
                "malformed",
                "{claims}"
            );
        }
        // An escaped backslash followed by "u0000" is not a NUL.
        let ok = check(
            format!(r#"{{"sub":"a\\u0000b","exp":{exp}}}"#).as_bytes(),
            &Policy::default(),
            NOW,
        )
        .unwrap();
        assert_eq!(ok.sub.as_deref(), Some("a\\u0000b"));
    }

    #[test]
    fn outseta_shaped_payload() {
        let v = run(
            json!({
                "sub": "dQGxEz94", "email": "jane@example.com", "name": "Jane Doe",
                "outseta:accountUid": "wZmNw7Q2", "outseta:isPrimary": "1",
                "outseta:planUid": "OW4pRYWg", "outseta:subscriptionUid": "j9ma0qQn",
                "outseta:addOnUids": ["a1", "a2"], "exp": NOW + 60.0, "iat": NOW
            }),
            &Policy::default(),
        )
        .unwrap();
        assert_eq!(v.sub.as_deref(), Some("dQGxEz94"));
        assert_eq!(v.account_uid.as_deref(), Some("wZmNw7Q2"));
        assert_eq!(v.is_primary, Some(true));
        assert_eq!(
            v.add_on_uids,
            Some(vec!["a1".to_string(), "a2".to_string()])
        );
        assert_eq!(v.plan_uid.as_deref(), Some("OW4pRYWg"));
    }

    #[test]
    fn time_rules() {
        let p = Policy::default(); // leeway 30
        assert_eq!(code(json!({}), &p), "missing_claim");
        assert_eq!(code(json!({"exp": "1"}), &p), "invalid_claim");
        assert_eq!(code(json!({"exp": NOW - 31.0}), &p), "expired");
        assert!(run(json!({"exp": NOW - 29.0}), &p).is_ok(), "within leeway");
        assert_eq!(
            code(json!({"exp": NOW + 60.0, "nbf": NOW + 31.0}), &p),
            "not_yet_valid"
        );
        assert!(run(json!({"exp": NOW + 60.0, "nbf": NOW + 29.0}), &p).is_ok());
        assert_eq!(
            code(json!({"exp": NOW + 60.0, "iat": NOW + 31.0}), &p),
            "issued_in_future"
        );
        assert_eq!(
            code(json!({"exp": NOW + 60.0, "nbf": null}), &p),
            "invalid_claim"
        );
        assert!(
            run(json!({"exp": NOW + 60.5}), &p).is_ok(),
            "fractional dates are numbers"
        );
        assert!(run(json!({"exp": 1e300}), &p).is_ok());
    }

    #[test]
    fn non_object_claims() {
        let p = Policy::default();
        assert_eq!(check(b"[1]", &p, NOW).unwrap_err().code(), "malformed");
        assert_eq!(check(b"\xff\xfe", &p, NOW).unwrap_err().code(), "malformed");
        assert_eq!(
            check(b"{\"exp\": 1e400}", &p, NOW).unwrap_err().code(),
            "malformed"
        );
    }

    #[test]
    fn issuer_and_audience() {
        let p = Policy::new("RS256", "https://a.outseta.com, https://b", "app1,app2", 0).unwrap();
        let base = |iss: Value, aud: Value| json!({"exp": NOW + 60.0, "iss": iss, "aud": aud});
        assert!(run(base(json!("https://b"), json!("app2")), &p).is_ok());
        assert!(run(base(json!("https://b"), json!(["x", "app1"])), &p).is_ok());
        assert_eq!(
            code(base(json!("https://c"), json!("app1")), &p),
            "issuer_mismatch"
        );
        assert_eq!(
            code(base(json!("https://b"), json!(["x"])), &p),
            "audience_mismatch"
        );
        assert_eq!(
            code(base(json!("https://b"), json!(3)), &p),
            "invalid_claim"
        );
        assert_eq!(
            code(json!({"exp": NOW + 60.0, "aud": "app1"}), &p),
            "missing_claim"
        );
        assert_eq!(
            code(json!({"exp": NOW + 60.0, "iss": "https://b"}), &p),
            "missing_claim"
        );
    }

    #[test]
    fn cached_token_expires() {
        let v = run(
            json!({"exp": NOW + 10.0}),
            &Policy {
                leeway: 0,
                ..Policy::default()
            },
        )
        .unwrap();
        assert!(v.check_times(NOW, 0).is_ok());
        assert_eq!(v.check_times(NOW + 11.0, 0).unwrap_err().code(), "expired");
    }
}
