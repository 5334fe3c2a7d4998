//! Outseta webhook (Activity Notification) signatures.
//!
//! Outseta signs the raw request body with HMAC-SHA256. The key is the webhook key shown in
//! its dashboard: 64 hexadecimal characters, used as the 32 bytes they encode. The request
//! carries `x-hub-signature-256: sha256=<64 hex digits>`.
//!
//! Nothing here ever puts key or signature material into an error.

use crate::error::AuthError;

const SETTING: &str = "outseta_auth.webhook_secret";

/// A webhook key, decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookKey([u8; 32]);

impl std::fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookKey(..)")
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Exactly 64 hex digits (either case) as 32 bytes.
fn hex32(s: &[u8]) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(out)
}

impl WebhookKey {
    /// Parse the setting's value. The error names the rule, never the value.
    pub fn parse(value: &str) -> Result<WebhookKey, AuthError> {
        let v = value.trim();
        if v.is_empty() {
            return Err(AuthError::config(
                SETTING,
                "no webhook key is configured; set outseta_auth.webhook_secret (superuser) to the webhook key shown in Outseta",
            ));
        }
        hex32(v.as_bytes()).map(WebhookKey).ok_or_else(|| {
            AuthError::config(
                SETTING,
                format!(
                    "the webhook key must be 64 hexadecimal characters (as Outseta shows it); the value given has {} characters",
                    v.chars().count()
                ),
            )
        })
    }

    /// Whether `signature` (`sha256=<hex>` or just the hex digest, as in the
    /// `x-hub-signature-256` header) is this key's HMAC-SHA256 of `body`. Malformed
    /// signatures are simply `false`; the comparison takes constant time.
    pub fn verify(&self, body: &[u8], signature: &str) -> bool {
        let s = signature.trim();
        let hex = match s.get(..7) {
            Some(prefix) if prefix.eq_ignore_ascii_case("sha256=") => &s[7..],
            _ => s,
        };
        let Some(digest) = hex32(hex.as_bytes()) else {
            return false;
        };
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.0);
        // hmac::verify compares in constant time.
        aws_lc_rs::hmac::verify(&key, body, &digest).is_ok()
    }

    /// `sha256=<hex>` for `body`: what Outseta would send (tests, the dev server).
    pub fn sign(&self, body: &[u8]) -> String {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.0);
        let tag = aws_lc_rs::hmac::sign(&key, body);
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "6b3a55e0261b0304143f805a24924d0c1c44524821305f31d9277843b8a10f4e";

    #[test]
    fn known_answers() {
        // Digests computed independently with Python's hmac module.
        let key: String = (0u8..32).map(|b| format!("{b:02x}")).collect();
        let k = WebhookKey::parse(&key).unwrap();
        let expected = "sha256=f0133729c4163dede81e21cd47839256da58171238c8a0d874397c73b14e1e47";
        assert_eq!(k.sign(b"abc"), expected);
        assert!(k.verify(b"abc", expected));
        let k = WebhookKey::parse(KEY).unwrap();
        assert!(k.verify(
            br#"{"Uid":"wZmNw7Q2","Name":"Acme"}"#,
            "sha256=0600e2ba44821b7b4372f2bc4d5e7ebd853bc51edab95fdd46a65c163adff740"
        ));
    }

    #[test]
    fn accepts_with_or_without_prefix_and_any_case() {
        let k = WebhookKey::parse(KEY).unwrap();
        let body = br#"{"Uid":"wZmNw7Q2","Name":"Acme"}"#;
        let sig = k.sign(body);
        assert!(k.verify(body, &sig));
        assert!(k.verify(body, &sig[7..]));
        assert!(k.verify(body, &sig.to_uppercase().replace("SHA256=", "sha256=")));
        assert!(k.verify(body, &format!("SHA256={}", &sig[7..])));
        assert!(k.verify(body, &format!("  {sig}\n")));
        // The key itself may be given in upper case.
        assert!(WebhookKey::parse(&KEY.to_uppercase())
            .unwrap()
            .verify(body, &sig));
    }

    #[test]
    fn refuses_every_mismatch_and_malformed_signature() {
        let k = WebhookKey::parse(KEY).unwrap();
        let body = br#"{"Uid":"wZmNw7Q2"}"#;
        let sig = k.sign(body);
        // One byte of the body changed, one whitespace added.
        assert!(!k.verify(br#"{"Uid":"wZmNw7Q3"}"#, &sig));
        assert!(!k.verify(br#"{"Uid": "wZmNw7Q2"}"#, &sig));
        // Another key.
        let other = WebhookKey::parse(&"ab".repeat(32)).unwrap();
        assert!(!other.verify(body, &sig));
        // Malformed: empty, truncated, too long, not hex, other algorithm prefix.
        let hex = &sig[7..];
        for bad in [
            String::new(),
            "sha256=".into(),
            hex[..63].to_string(),
            format!("{hex}0"),
            format!("sha256={}g", &hex[..63]),
            format!("sha1={hex}"),
            format!("sha256=sha256={hex}"),
            format!("sha256= {hex}"),
        ] {
            assert!(!k.verify(body, &bad), "{bad:?}");
        }
        // Flip each position of the digest: always refused.
        for i in 0..64 {
            let mut b = hex.as_bytes().to_vec();
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            assert!(!k.verify(body, std::str::from_utf8(&b).unwrap()));
        }
    }

    #[test]
    fn key_rules_never_echo_the_value() {
        for bad in [
            "",
            "   ",
            "abc",
            &KEY[..63],
            &format!("{KEY}00"),
            &format!("{}zz", &KEY[..62]),
        ] {
            let e = WebhookKey::parse(bad).unwrap_err();
            assert_eq!(e.code(), "config_error");
            let text = format!("{e} {:?}", e.hint());
            if bad.trim().len() >= 3 {
                assert!(!text.contains(bad.trim()), "{text}");
            }
        }
        assert_eq!(
            format!("{:?}", WebhookKey::parse(KEY).unwrap()),
            "WebhookKey(..)"
        );
    }
}
