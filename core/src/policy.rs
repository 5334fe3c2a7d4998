//! What the verifier trusts and requires: algorithms, issuers, audiences, leeway.
//!
//! Built from the superuser-only settings' text; parsing errors name the setting.

use crate::error::AuthError;

/// Signature algorithms the verifier can check. HMAC (`HS*`) and `none` are deliberately
/// absent: Outseta keys are public keys, and an HMAC keyed with a public key is the
/// classic forgery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

pub const ALL_ALGS: [Alg; 9] = [
    Alg::RS256,
    Alg::RS384,
    Alg::RS512,
    Alg::PS256,
    Alg::PS384,
    Alg::PS512,
    Alg::ES256,
    Alg::ES384,
    Alg::EdDSA,
];

/// Key families, as JWK `kty` (+ `crv`) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl Alg {
    /// Exact, case-sensitive match as RFC 7518 names them.
    pub fn from_name(name: &str) -> Option<Alg> {
        ALL_ALGS.iter().copied().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    pub fn family(self) -> KeyFamily {
        match self {
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                KeyFamily::Rsa
            }
            Alg::ES256 => KeyFamily::EcP256,
            Alg::ES384 => KeyFamily::EcP384,
            Alg::EdDSA => KeyFamily::Ed25519,
        }
    }

    pub(crate) fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Alg::RS256 => J::RS256,
            Alg::RS384 => J::RS384,
            Alg::RS512 => J::RS512,
            Alg::PS256 => J::PS256,
            Alg::PS384 => J::PS384,
            Alg::PS512 => J::PS512,
            Alg::ES256 => J::ES256,
            Alg::ES384 => J::ES384,
            Alg::EdDSA => J::EdDSA,
        }
    }
}

/// True for names that must never be accepted, in any letter case.
pub fn is_forbidden_alg(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "none" || lower.starts_with("hs")
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub algorithms: Vec<Alg>,
    /// Empty: `iss` is not checked.
    pub issuers: Vec<String>,
    /// Empty: `aud` is not checked.
    pub audiences: Vec<String>,
    /// Seconds of clock skew tolerated for `exp`, `nbf` and `iat`.
    pub leeway: i64,
}

impl Default for Policy {
    fn default() -> Self {
        use crate::config::defaults;
        Policy {
            algorithms: parse_algorithms(defaults::ALGORITHMS.to_str().expect("ASCII"))
                .expect("the default algorithms parse"),
            issuers: vec![],
            audiences: vec![],
            leeway: defaults::LEEWAY as i64,
        }
    }
}

impl Policy {
    pub fn new(
        algorithms: &str,
        issuer: &str,
        audience: &str,
        leeway: i64,
    ) -> Result<Self, AuthError> {
        Ok(Policy {
            algorithms: parse_algorithms(algorithms)?,
            issuers: comma_list(issuer),
            audiences: comma_list(audience),
            leeway: leeway.max(0),
        })
    }

    /// Outseta puts your Outseta domain in `aud`. With `outseta_auth.domain` set and
    /// `outseta_auth.audience` empty, the domain is the one accepted audience, so a token
    /// minted for another Outseta tenant is refused whatever the key source.
    pub fn with_domain_audience(mut self, domain: &str) -> Self {
        let d = domain.trim().trim_end_matches('/');
        if self.audiences.is_empty() && !d.is_empty() {
            self.audiences = vec![d.to_ascii_lowercase()];
        }
        self
    }

    pub fn allows(&self, alg: Alg) -> bool {
        self.algorithms.contains(&alg)
    }
}

pub fn parse_algorithms(text: &str) -> Result<Vec<Alg>, AuthError> {
    const SETTING: &str = "outseta_auth.algorithms";
    let mut out = Vec::new();
    for name in comma_list(text) {
        if is_forbidden_alg(&name) {
            return Err(AuthError::config(
                SETTING,
                format!("\"{name}\" is never allowed: Outseta signs with public-key algorithms"),
            ));
        }
        let alg = Alg::from_name(&name).ok_or_else(|| {
            let known: Vec<&str> = ALL_ALGS.iter().map(|a| a.name()).collect();
            AuthError::config(
                SETTING,
                format!("unknown algorithm \"{name}\"; known: {}", known.join(", ")),
            )
        })?;
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    if out.is_empty() {
        return Err(AuthError::config(
            SETTING,
            "the list is empty; the default is RS256",
        ));
    }
    Ok(out)
}

/// Split a comma list, trimming blanks and dropping empty items.
pub fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_parse() {
        assert_eq!(parse_algorithms("RS256").unwrap(), vec![Alg::RS256]);
        assert_eq!(
            parse_algorithms(" RS256 , ES256,RS256").unwrap(),
            vec![Alg::RS256, Alg::ES256]
        );
    }

    #[test]
    fn forbidden_and_unknown_algorithms_are_config_errors() {
        for bad in [
            "none",
            "NONE",
            "HS256",
            "hs512",
            "RS256,nOnE",
            "rs256",
            "",
            " , ",
        ] {
            let err = parse_algorithms(bad).unwrap_err();
            assert_eq!(err.code(), "config_error", "{bad}");
        }
    }

    #[test]
    fn the_domain_is_the_default_audience() {
        let p = Policy::new("RS256", "", "", 30).unwrap();
        assert!(p.clone().with_domain_audience("").audiences.is_empty());
        assert_eq!(
            p.with_domain_audience(" MyApp.outseta.com/ ").audiences,
            vec!["myapp.outseta.com"]
        );
        // An explicit audience list wins.
        let p = Policy::new("RS256", "", "a, b", 30).unwrap();
        assert_eq!(
            p.with_domain_audience("myapp.outseta.com").audiences,
            vec!["a", "b"]
        );
    }

    #[test]
    fn comma_lists() {
        assert_eq!(comma_list(" a, b ,,c "), vec!["a", "b", "c"]);
        assert!(comma_list("").is_empty());
    }
}
