//! Strict base64url (RFC 7515 §2): no padding, no whitespace, no other alphabet, and no
//! non-zero trailing bits, so every byte string has exactly one accepted encoding.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

pub fn decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(s)
}

pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict() {
        assert_eq!(decode("Zm9v").unwrap(), b"foo");
        assert_eq!(decode("Zm8").unwrap(), b"fo");
        for bad in [
            "Zm8=", "Zm9v ", "Zm+v", "Zm/v", "Zm9", "Zm9v\n", "Zm?v", "Zm9",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        // Non-canonical: "Zm9" + 'w' differs from "Zm8" only in trailing bits.
        assert!(decode("Zm9").is_err());
        assert!(decode("Zm-").is_err());
    }
}
