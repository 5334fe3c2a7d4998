//! JWKS parsing and key selection.
//!
//! A key set is parsed once into usable verification keys; everything else is set aside
//! with a reason (visible in `outseta_jwks_status()`), never used:
//! symmetric (`oct`) keys, keys carrying private material, `use` other than `sig`,
//! `key_ops` without `verify`, RSA under 2048 bits or with a weak exponent, unknown
//! `kty`/`crv`/`alg`, and every key whose `kid` is shared with another key.

use std::collections::HashMap;

use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};

use crate::b64;
use crate::error::AuthError;
use crate::policy::{Alg, KeyFamily};

pub const MIN_RSA_BITS: usize = 2048;

/// A usable verification key.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub family: KeyFamily,
    /// The key's own `alg`, when the JWK names one: the token's header must then agree.
    pub alg: Option<Alg>,
    /// Modulus size for RSA, curve size otherwise.
    pub bits: usize,
    pub(crate) decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("alg", &self.alg)
            .field("bits", &self.bits)
            .finish()
    }
}

impl Key {
    /// Can this key verify a token whose header says `alg`?
    pub fn fits(&self, alg: Alg) -> Result<(), String> {
        if alg.family() != self.family {
            return Err(format!(
                "{} needs a {:?} key, this is {:?}",
                alg.name(),
                alg.family(),
                self.family
            ));
        }
        match self.alg {
            Some(own) if own != alg => Err(format!(
                "the key is for {}, the token says {}",
                own.name(),
                alg.name()
            )),
            _ => Ok(()),
        }
    }

    /// Name shown in status output: the JWK `alg`, or the family's usual one.
    pub fn alg_label(&self) -> &'static str {
        match (self.alg, self.family) {
            (Some(a), _) => a.name(),
            (None, KeyFamily::Rsa) => "RSA (any RS*/PS*)",
            (None, KeyFamily::EcP256) => "ES256",
            (None, KeyFamily::EcP384) => "ES384",
            (None, KeyFamily::Ed25519) => "EdDSA",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub kid: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
    pub ignored: Vec<Ignored>,
    /// SHA-256 of the JWKS document it was parsed from: names this key set in the
    /// cluster's memory of verified tokens ([`crate::verified`]), so that any change of
    /// the document (a key withdrawn, rotated, added) keeps old verdicts out.
    pub digest: crate::verified::Digest,
}

/// Why key selection failed; turned into an [`AuthError`] by the caller, which knows
/// whether a refetch may still help.
#[derive(Debug, Clone, PartialEq)]
pub enum SelectError {
    UnknownKid,
    Mismatch(String),
    NoKid { candidates: usize },
}

impl KeySet {
    /// Parse a JWKS document. Fails when it is not a JSON object with a `keys` array, or when
    /// no key in it is usable.
    pub fn parse(body: &[u8]) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_slice(body)
            .map_err(|e| format!("the JWKS is not valid JSON ({e})"))?;
        let keys = doc
            .as_object()
            .and_then(|o| o.get("keys"))
            .and_then(Value::as_array)
            .ok_or("the JWKS is not a JSON object with a \"keys\" array")?;

        // Count kids first: a kid shared by several keys makes every one of them ambiguous.
        let mut kid_count: HashMap<&str, usize> = HashMap::new();
        for k in keys {
            if let Some(kid) = k.get("kid").and_then(Value::as_str) {
                *kid_count.entry(kid).or_default() += 1;
            }
        }

        let mut set = KeySet::default();
        for k in keys {
            let kid = k.get("kid").and_then(Value::as_str).map(String::from);
            let result = match k.as_object() {
                None => Err("not a JSON object".to_string()),
                Some(_) if kid.as_deref().is_some_and(|kid| kid_count[kid] > 1) => {
                    Err("duplicate kid: every key sharing it is ignored".to_string())
                }
                Some(obj) => parse_key(obj, kid.clone()),
            };
            match result {
                Ok(key) => set.keys.push(key),
                Err(reason) => set.ignored.push(Ignored { kid, reason }),
            }
        }
        if set.keys.is_empty() {
            let mut reason = format!("the JWKS has no usable signing key ({} keys", keys.len());
            if let Some(first) = set.ignored.first() {
                reason.push_str(&format!("; e.g. kid={:?}: {}", first.kid, first.reason));
            }
            reason.push(')');
            return Err(reason);
        }
        set.digest = crate::verified::sha256(&[b"outseta_auth jwks 1\0", body]);
        Ok(set)
    }

    /// Choose the key for a token: exact `kid` match; without a kid, only when exactly one
    /// usable key fits the algorithm.
    pub fn select(&self, alg: Alg, kid: Option<&str>) -> Result<&Key, SelectError> {
        match kid {
            Some(kid) => {
                // Duplicate kids were dropped at parse time, so there is at most one.
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or(SelectError::UnknownKid)?;
                key.fits(alg).map_err(SelectError::Mismatch)?;
                Ok(key)
            }
            None => {
                let fitting: Vec<&Key> = self.keys.iter().filter(|k| k.fits(alg).is_ok()).collect();
                match fitting[..] {
                    [key] => Ok(key),
                    _ => Err(SelectError::NoKid {
                        candidates: fitting.len(),
                    }),
                }
            }
        }
    }
}

/// Turn a selection failure into the error a user sees.
pub fn select_error(e: SelectError, alg: Alg, kid: Option<&str>) -> AuthError {
    match e {
        SelectError::UnknownKid => AuthError::UnknownKid {
            kid: kid.unwrap_or_default().to_string(),
        },
        SelectError::Mismatch(reason) => AuthError::KeyMismatch {
            kid: kid.unwrap_or_default().to_string(),
            alg: alg.name().to_string(),
            reason,
        },
        SelectError::NoKid { candidates } => AuthError::NoMatchingKey {
            alg: alg.name().to_string(),
            candidates,
        },
    }
}

const RSA_PRIVATE: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

fn parse_key(obj: &Map<String, Value>, kid: Option<String>) -> Result<Key, String> {
    if obj.get("kid").is_some_and(|k| !k.is_string()) {
        return Err("kid is not a string".into());
    }
    match obj.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return Err("\"use\" is not \"sig\"".into()),
    }
    if let Some(ops) = obj.get("key_ops") {
        let ok = ops
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string) && a.iter().any(|o| o == "verify"));
        if !ok {
            return Err("\"key_ops\" does not include \"verify\"".into());
        }
    }
    let kty = obj.get("kty").and_then(Value::as_str).ok_or("no \"kty\"")?;
    let (family, bits, decoding) = match kty {
        "RSA" => rsa_key(obj)?,
        "EC" => ec_key(obj)?,
        "OKP" => okp_key(obj)?,
        "oct" => return Err("symmetric (oct) keys are never used".into()),
        other => {
            return Err(format!(
                "unsupported kty {:?}",
                crate::error::printable(other)
            ))
        }
    };
    let alg = match obj.get("alg") {
        None => None,
        Some(Value::String(name)) => {
            let alg = Alg::from_name(name)
                .ok_or_else(|| format!("unsupported alg {:?}", crate::error::printable(name)))?;
            if alg.family() != family {
                return Err(format!(
                    "alg {} does not fit a {:?} key",
                    alg.name(),
                    family
                ));
            }
            Some(alg)
        }
        Some(_) => return Err("\"alg\" is not a string".into()),
    };
    Ok(Key {
        kid,
        family,
        alg,
        bits,
        decoding,
    })
}

fn member<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    obj.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing or non-string \"{name}\""))
}

fn member_bytes(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    b64::decode(member(obj, name)?).map_err(|_| format!("\"{name}\" is not valid base64url"))
}

fn rsa_key(obj: &Map<String, Value>) -> Result<(KeyFamily, usize, DecodingKey), String> {
    if RSA_PRIVATE.iter().any(|m| obj.contains_key(*m)) {
        return Err("the key contains private key material".into());
    }
    let n = member_bytes(obj, "n")?;
    let e = member_bytes(obj, "e")?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    let bits = match n.first() {
        None => 0,
        Some(top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    };
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "RSA modulus of {bits} bits is under {MIN_RSA_BITS}"
        ));
    }
    if n.last().is_some_and(|b| b & 1 == 0) {
        return Err("RSA modulus is even".into());
    }
    // e must be odd and at least 3; more than 4 bytes is not a real-world exponent.
    if e.is_empty() || e.len() > 4 || e.last().is_some_and(|b| b & 1 == 0) || e == [1] {
        return Err("RSA public exponent is unusable (must be odd, >= 3, at most 32 bits)".into());
    }
    if has_roca_fingerprint(n) {
        return Err(
            "RSA modulus has the ROCA weakness (CVE-2017-15361): its private key can be computed"
                .into(),
        );
    }
    Ok((
        KeyFamily::Rsa,
        bits,
        DecodingKey::from_rsa_raw_components(n, e),
    ))
}

fn ec_key(obj: &Map<String, Value>) -> Result<(KeyFamily, usize, DecodingKey), String> {
    if obj.contains_key("d") {
        return Err("the key contains private key material".into());
    }
    let (family, len) = match obj.get("crv").and_then(Value::as_str) {
        Some("P-256") => (KeyFamily::EcP256, 32),
        Some("P-384") => (KeyFamily::EcP384, 48),
        _ => return Err("unsupported or missing EC curve".into()),
    };
    let x = member_bytes(obj, "x")?;
    let y = member_bytes(obj, "y")?;
    if x.len() != len || y.len() != len {
        return Err("EC coordinates have the wrong length for the curve".into());
    }
    let key = DecodingKey::from_ec_components(member(obj, "x")?, member(obj, "y")?)
        .map_err(|_| "invalid EC key".to_string())?;
    Ok((family, len * 8, key))
}

fn okp_key(obj: &Map<String, Value>) -> Result<(KeyFamily, usize, DecodingKey), String> {
    if obj.contains_key("d") {
        return Err("the key contains private key material".into());
    }
    if obj.get("crv").and_then(Value::as_str) != Some("Ed25519") {
        return Err("unsupported or missing OKP curve".into());
    }
    let x = member_bytes(obj, "x")?;
    if x.len() != 32 {
        return Err("Ed25519 key has the wrong length".into());
    }
    let key = DecodingKey::from_ed_components(member(obj, "x")?)
        .map_err(|_| "invalid Ed25519 key".to_string())?;
    Ok((KeyFamily::Ed25519, 256, key))
}

/// The ROCA fingerprint (Nemec et al., CCS 2017): moduli from the affected Infineon library
/// are, modulo each small prime p below, a power of 65537. A random modulus passes all of
/// these tests with negligible probability.
pub fn has_roca_fingerprint(n: &[u8]) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
        97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&p| {
        let r = n.iter().fold(0u32, |acc, &b| (acc * 256 + b as u32) % p);
        let g = 65537 % p;
        let mut x = 1u32;
        for _ in 0..p {
            if x == r {
                return true;
            }
            x = x * g % p;
        }
        false
    })
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[i..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rsa_jwk(kid: &str) -> Value {
        outseta_dev::SigningKey::generate(kid).jwk()
    }

    fn parse(v: Value) -> Result<KeySet, String> {
        KeySet::parse(v.to_string().as_bytes())
    }

    #[test]
    fn parses_rsa_key() {
        let set = parse(json!({"keys": [rsa_jwk("a")]})).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].bits, 2048);
        assert_eq!(set.keys[0].alg, Some(Alg::RS256));
    }

    #[test]
    fn rejects_non_keysets() {
        for body in ["", "[]", "{}", "{\"keys\": {}}", "{\"keys\": []}", "nope"] {
            assert!(KeySet::parse(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn ignores_unusable_keys() {
        let good = rsa_jwk("good");
        let mut with_d = rsa_jwk("priv");
        with_d["d"] = json!("AQAB");
        let mut enc = rsa_jwk("enc");
        enc["use"] = json!("enc");
        let mut ops = rsa_jwk("ops");
        ops["key_ops"] = json!(["sign"]);
        let mut e1 = rsa_jwk("e1");
        e1["e"] = json!("AQ");
        let mut wrong_alg = rsa_jwk("walg");
        wrong_alg["alg"] = json!("ES256");
        let oct = json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"});
        let set = parse(json!({"keys": [good, with_d, enc, ops, e1, wrong_alg, oct]})).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.ignored.len(), 6);
        assert!(set.select(Alg::RS256, Some("good")).is_ok());
        for kid in ["priv", "enc", "ops", "e1", "walg", "hmac"] {
            assert_eq!(
                set.select(Alg::RS256, Some(kid)).unwrap_err(),
                SelectError::UnknownKid
            );
        }
    }

    #[test]
    fn small_rsa_is_ignored() {
        let mut k = rsa_jwk("small");
        // 1024-bit modulus: first 128 bytes of the real one, made odd.
        let mut n = b64::decode(k["n"].as_str().unwrap()).unwrap();
        n.truncate(128);
        n[127] |= 1;
        k["n"] = json!(b64::encode(&n));
        let err = parse(json!({"keys": [k]})).unwrap_err();
        assert!(err.contains("1024 bits"), "{err}");
    }

    #[test]
    fn generated_keys_have_no_roca_fingerprint() {
        for i in 0..8 {
            let k = rsa_jwk(&format!("k{i}"));
            let n = b64::decode(k["n"].as_str().unwrap()).unwrap();
            assert!(!has_roca_fingerprint(&n));
        }
    }

    #[test]
    fn duplicate_kids_are_ambiguous() {
        let set =
            parse(json!({"keys": [rsa_jwk("dup"), rsa_jwk("dup"), rsa_jwk("other")]})).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(
            set.select(Alg::RS256, Some("dup")).unwrap_err(),
            SelectError::UnknownKid
        );
    }

    #[test]
    fn no_kid_needs_exactly_one_fitting_key() {
        let one = parse(json!({"keys": [rsa_jwk("a")]})).unwrap();
        assert!(one.select(Alg::RS256, None).is_ok());
        let two = parse(json!({"keys": [rsa_jwk("a"), rsa_jwk("b")]})).unwrap();
        assert_eq!(
            two.select(Alg::RS256, None).unwrap_err(),
            SelectError::NoKid { candidates: 2 }
        );
        assert_eq!(
            one.select(Alg::ES256, None).unwrap_err(),
            SelectError::NoKid { candidates: 0 }
        );
    }

    #[test]
    fn alg_must_agree_with_key() {
        let set = parse(json!({"keys": [rsa_jwk("a")]})).unwrap();
        assert!(matches!(
            set.select(Alg::PS256, Some("a")),
            Err(SelectError::Mismatch(_))
        ));
        assert!(matches!(
            set.select(Alg::ES256, Some("a")),
            Err(SelectError::Mismatch(_))
        ));
    }
}
