//! Token parsing and signature verification (below the claims check).
//!
//! Order matters for safety and cost: size cap, then shape, then strict base64url, then the
//! header, then the allow-list, then key selection, then the signature. Nothing from the
//! token decides *which keys* are trusted: `jku`, `x5u`, `jwk` and `x5c` are never read.

use serde_json::{Map, Value};

use crate::b64;
use crate::error::{printable, AuthError};
use crate::jwks::{select_error, KeySet};
use crate::policy::{is_forbidden_alg, Alg, Policy};

/// Tokens larger than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A compact JWS split and decoded, not yet verified.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub alg: Alg,
    pub kid: Option<String>,
    /// `BASE64URL(header) '.' BASE64URL(payload)`: the bytes that were signed.
    pub signing_input: &'a str,
    pub signature_b64: &'a str,
    pub payload: Vec<u8>,
}

/// Split and decode a compact JWS, and check its header against the policy.
pub fn parse<'a>(token: &'a str, policy: &Policy) -> Result<Parsed<'a>, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::TooLarge {
            size: token.len(),
            max: MAX_TOKEN_BYTES,
        });
    }
    if token.is_empty() {
        return Err(AuthError::malformed("the token is empty"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        let n = token.split('.').count();
        return Err(AuthError::malformed(format!(
            "expected a compact JWS of 3 dot-separated parts, found {n}"
        )));
    };
    // An empty payload is a valid JWS (the claims check refuses it later); an empty
    // header or signature never is.
    if h.is_empty() || s.is_empty() {
        return Err(AuthError::malformed("the header or the signature is empty"));
    }
    let header_bytes =
        b64::decode(h).map_err(|_| AuthError::malformed("the header is not valid base64url"))?;
    let payload =
        b64::decode(p).map_err(|_| AuthError::malformed("the payload is not valid base64url"))?;
    // Decoded here only to validate strictly; the crypto layer decodes it again.
    b64::decode(s).map_err(|_| AuthError::malformed("the signature is not valid base64url"))?;

    let header: Map<String, Value> = match serde_json::from_slice(&header_bytes) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(AuthError::malformed("the header is not a JSON object")),
        Err(_) => return Err(AuthError::malformed("the header is not valid JSON")),
    };
    let alg_name = match header.get("alg") {
        Some(Value::String(a)) => a.as_str(),
        Some(_) => return Err(AuthError::malformed("the header \"alg\" is not a string")),
        None => return Err(AuthError::malformed("the header has no \"alg\"")),
    };
    if is_forbidden_alg(alg_name) {
        return Err(AuthError::AlgorithmNotAllowed {
            alg: alg_name.to_string(),
        });
    }
    let alg = match Alg::from_name(alg_name) {
        Some(a) if policy.allows(a) => a,
        _ => {
            return Err(AuthError::AlgorithmNotAllowed {
                alg: alg_name.to_string(),
            })
        }
    };
    if header.contains_key("crit") {
        return Err(AuthError::CritUnsupported);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(AuthError::malformed("the header \"kid\" is not a string")),
    };
    Ok(Parsed {
        alg,
        kid,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature_b64: s,
        payload,
    })
}

impl Parsed<'_> {
    /// Check the signature with the key the key set holds for this token.
    /// Returns `UnknownKid` when the kid is absent, so that the caller may refetch.
    pub fn verify_signature(&self, keys: &KeySet) -> Result<(), AuthError> {
        let key = keys
            .select(self.alg, self.kid.as_deref())
            .map_err(|e| select_error(e, self.alg, self.kid.as_deref()))?;
        let ok = jsonwebtoken::crypto::verify(
            self.signature_b64,
            self.signing_input.as_bytes(),
            &key.decoding,
            self.alg.to_jwt(),
        )
        .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(AuthError::BadSignature {
                kid: self.kid.as_deref().map(printable),
            })
        }
    }
}

/// Install jsonwebtoken's aws-lc crypto provider. Call once at load time: with no provider
/// selected jsonwebtoken panics on first use. Idempotent.
pub fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use outseta_dev::{b64url, SigningKey};
    use serde_json::json;

    fn setup() -> (SigningKey, KeySet) {
        install_crypto_provider();
        let key = SigningKey::generate("k1");
        let set = KeySet::parse(json!({"keys": [key.jwk()]}).to_string().as_bytes()).unwrap();
        (key, set)
    }

    #[test]
    fn valid_signature() {
        let (key, set) = setup();
        let t = key.mint(&json!({"sub": "p1", "exp": 4_000_000_000u64}));
        let p = parse(&t, &Policy::default()).unwrap();
        p.verify_signature(&set).unwrap();
        assert_eq!(p.kid.as_deref(), Some("k1"));
    }

    #[test]
    fn tampered_payload_fails() {
        let (key, set) = setup();
        let t = key.mint(&json!({"sub": "p1"}));
        let forged = outseta_dev::with_payload(&t, br#"{"sub":"p2"}"#);
        let p = parse(&forged, &Policy::default()).unwrap();
        assert_eq!(
            p.verify_signature(&set).unwrap_err().code(),
            "bad_signature"
        );
    }

    #[test]
    fn shape_errors() {
        let p = Policy::default();
        for t in ["", "a", "a.b", "a.b.c.d", "..", ".b.c", "a.b."] {
            assert_eq!(parse(t, &p).unwrap_err().code(), "malformed", "{t:?}");
        }
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(parse(&big, &p).unwrap_err().code(), "too_large");
    }

    #[test]
    fn header_rules() {
        let p = Policy::default();
        let tok = |h: Value| {
            format!(
                "{}.{}.{}",
                b64url(h.to_string().as_bytes()),
                b64url(b"{}"),
                b64url(b"sig")
            )
        };
        let code = |h: Value| parse(&tok(h), &p).unwrap_err().code();
        assert_eq!(code(json!({"alg": "none"})), "algorithm_not_allowed");
        assert_eq!(code(json!({"alg": "nOnE"})), "algorithm_not_allowed");
        assert_eq!(code(json!({"alg": "HS256"})), "algorithm_not_allowed");
        assert_eq!(code(json!({"alg": "ES256"})), "algorithm_not_allowed");
        assert_eq!(code(json!({"alg": "rs256"})), "algorithm_not_allowed");
        assert_eq!(code(json!({"alg": 1})), "malformed");
        assert_eq!(code(json!({})), "malformed");
        assert_eq!(code(json!(["RS256"])), "malformed");
        assert_eq!(
            code(json!({"alg": "RS256", "crit": ["exp"]})),
            "crit_unsupported"
        );
        assert_eq!(code(json!({"alg": "RS256", "kid": 5})), "malformed");
        assert!(parse(&tok(json!({"alg": "RS256", "kid": "x"})), &p).is_ok());
    }
}
