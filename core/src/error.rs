//! The one error type of the verification core.
//!
//! Every failure the core can produce is a variant here. The SQL layer maps it to
//! `ereport!` in exactly one place (`src/errors.rs`), using [`AuthError::class`] for the
//! SQLSTATE, [`AuthError::code`] for the stable short code, and the message/detail/hint
//! methods for the text.
//!
//! Nothing in here may carry token, key or JWKS material: only kids, claim names,
//! numbers, URLs and reasons.

use std::fmt;

/// Which SQLSTATE family an error belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The token is not acceptable: SQLSTATE 28000.
    Token,
    /// The key set could not be obtained and nothing usable is cached: SQLSTATE 58000.
    Jwks,
    /// A setting is wrong: SQLSTATE 22023.
    Config,
    /// The current role may not do this: SQLSTATE 42501.
    Privilege,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuthError {
    /// Not a compact JWS, bad base64url, bad JSON, wrong types in the header.
    Malformed {
        reason: String,
    },
    /// Larger than the cap; checked before any parsing.
    TooLarge {
        size: usize,
        max: usize,
    },
    /// A request setting (`request.cookies`, `request.headers`) that should carry the token
    /// is larger than the cap; refused before it is copied or parsed.
    RequestTooLarge {
        setting: &'static str,
        size: usize,
        max: usize,
    },
    /// Header `alg` is not in the allow-list (or is `none`/`HS*`, which never are).
    AlgorithmNotAllowed {
        alg: String,
    },
    /// A `crit` header names extensions we do not implement (we implement none).
    CritUnsupported,
    /// No key in the key set has the token's `kid`.
    UnknownKid {
        kid: String,
    },
    /// The token has no `kid` and not exactly one usable key fits its `alg`.
    NoMatchingKey {
        alg: String,
        candidates: usize,
    },
    /// A key with the token's `kid` exists, but it cannot be used with the header's `alg`.
    KeyMismatch {
        kid: String,
        alg: String,
        reason: String,
    },
    /// The signature does not verify with the selected key.
    BadSignature {
        kid: Option<String>,
    },
    Expired {
        exp: f64,
        now: i64,
        leeway: i64,
    },
    NotYetValid {
        nbf: f64,
        now: i64,
        leeway: i64,
    },
    IssuedInFuture {
        iat: f64,
        now: i64,
        leeway: i64,
    },
    MissingClaim {
        claim: &'static str,
    },
    InvalidClaim {
        claim: &'static str,
        reason: String,
    },
    IssuerMismatch {
        got: String,
    },
    AudienceMismatch,
    /// The key set could not be fetched or parsed, and no keys are cached.
    JwksUnavailable {
        url: String,
        cause: String,
    },
    /// Outseta's profile endpoint refused the token (HTTP 401/403), with
    /// `outseta_auth.profile_check` on: the person was deleted or the token revoked.
    Revoked {
        status: u16,
    },
    /// The profile endpoint could not be asked, or its answer was unusable.
    ProfileUnavailable {
        url: String,
        cause: String,
    },
    /// A setting is invalid.
    Config {
        setting: &'static str,
        reason: String,
    },
    /// Only a superuser may do this.
    PermissionDenied {
        /// What was attempted, e.g. "function outseta_refresh_jwks".
        what: &'static str,
        hint: &'static str,
    },
}

impl AuthError {
    pub fn malformed(reason: impl Into<String>) -> Self {
        AuthError::Malformed {
            reason: reason.into(),
        }
    }

    pub fn config(setting: &'static str, reason: impl Into<String>) -> Self {
        AuthError::Config {
            setting,
            reason: reason.into(),
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            AuthError::JwksUnavailable { .. } | AuthError::ProfileUnavailable { .. } => {
                ErrorClass::Jwks
            }
            AuthError::Config { .. } => ErrorClass::Config,
            AuthError::PermissionDenied { .. } => ErrorClass::Privilege,
            _ => ErrorClass::Token,
        }
    }

    /// Stable short code, part of the public interface (`outseta_try_verify().error_code`).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Malformed { .. } => "malformed",
            AuthError::TooLarge { .. } | AuthError::RequestTooLarge { .. } => "too_large",
            AuthError::AlgorithmNotAllowed { .. } => "algorithm_not_allowed",
            AuthError::CritUnsupported => "crit_unsupported",
            AuthError::UnknownKid { .. } => "unknown_kid",
            AuthError::NoMatchingKey { .. } => "no_matching_key",
            AuthError::KeyMismatch { .. } => "key_mismatch",
            AuthError::BadSignature { .. } => "bad_signature",
            AuthError::Expired { .. } => "expired",
            AuthError::NotYetValid { .. } => "not_yet_valid",
            AuthError::IssuedInFuture { .. } => "issued_in_future",
            AuthError::MissingClaim { .. } => "missing_claim",
            AuthError::InvalidClaim { .. } => "invalid_claim",
            AuthError::IssuerMismatch { .. } => "issuer_mismatch",
            AuthError::AudienceMismatch => "audience_mismatch",
            AuthError::JwksUnavailable { .. } => "jwks_unavailable",
            AuthError::Revoked { .. } => "revoked",
            AuthError::ProfileUnavailable { .. } => "profile_unavailable",
            AuthError::Config { .. } => "config_error",
            AuthError::PermissionDenied { .. } => "permission_denied",
        }
    }

    pub fn message(&self) -> String {
        match self {
            AuthError::Malformed { .. } => "Outseta token is malformed".into(),
            AuthError::TooLarge { .. } => "Outseta token is too large".into(),
            AuthError::RequestTooLarge { setting, .. } => {
                format!("{setting} is too large to look for the Outseta token in")
            }
            AuthError::AlgorithmNotAllowed { alg } => {
                format!(
                    "Outseta token algorithm \"{}\" is not allowed",
                    printable(alg)
                )
            }
            AuthError::CritUnsupported => {
                "Outseta token has a \"crit\" header, which is not supported".into()
            }
            AuthError::UnknownKid { .. } => "Outseta token is signed with an unknown key id".into(),
            AuthError::NoMatchingKey { .. } => "no key fits the Outseta token".into(),
            AuthError::KeyMismatch { .. } => {
                "Outseta token algorithm does not match its key".into()
            }
            AuthError::BadSignature { .. } => "Outseta token has a bad signature".into(),
            AuthError::Expired { .. } => "Outseta token has expired".into(),
            AuthError::NotYetValid { .. } => "Outseta token is not yet valid".into(),
            AuthError::IssuedInFuture { .. } => "Outseta token was issued in the future".into(),
            AuthError::MissingClaim { claim } => {
                format!("Outseta token is missing the \"{claim}\" claim")
            }
            AuthError::InvalidClaim { claim, .. } => {
                format!("Outseta token has an invalid \"{claim}\" claim")
            }
            AuthError::IssuerMismatch { .. } => "Outseta token issuer is not accepted".into(),
            AuthError::AudienceMismatch => "Outseta token audience is not accepted".into(),
            AuthError::JwksUnavailable { url, .. } if url.is_empty() => {
                "could not load the JWKS".into()
            }
            AuthError::JwksUnavailable { url, .. } => {
                format!("could not load the JWKS from {url}")
            }
            AuthError::Revoked { .. } => {
                "Outseta no longer accepts this token (profile endpoint refused it)".into()
            }
            AuthError::ProfileUnavailable { url, .. } if url.is_empty() => {
                "could not check the token with Outseta's profile endpoint".into()
            }
            AuthError::ProfileUnavailable { url, .. } => {
                format!("could not check the token with Outseta's profile endpoint {url}")
            }
            AuthError::Config { setting, .. } => format!("invalid value for {setting}"),
            AuthError::PermissionDenied { what, .. } => format!("permission denied for {what}"),
        }
    }

    pub fn detail(&self) -> Option<String> {
        Some(match self {
            AuthError::Malformed { reason } => reason.clone(),
            AuthError::TooLarge { size, max } | AuthError::RequestTooLarge { size, max, .. } => {
                format!("size={size} bytes, max={max} bytes")
            }
            AuthError::AlgorithmNotAllowed { .. } => return None,
            AuthError::CritUnsupported => return None,
            AuthError::UnknownKid { kid } => format!("kid={}", printable(kid)),
            AuthError::NoMatchingKey { alg, candidates } => format!(
                "the token has no kid, and {candidates} usable keys fit alg={}",
                printable(alg)
            ),
            AuthError::KeyMismatch { kid, alg, reason } => {
                format!("kid={} alg={}: {reason}", printable(kid), printable(alg))
            }
            AuthError::BadSignature { kid } => match kid {
                Some(kid) => format!("kid={}", printable(kid)),
                None => return None,
            },
            AuthError::Expired { exp, now, leeway } => {
                format!("exp={} now={now} leeway={leeway}s", num(*exp))
            }
            AuthError::NotYetValid { nbf, now, leeway } => {
                format!("nbf={} now={now} leeway={leeway}s", num(*nbf))
            }
            AuthError::IssuedInFuture { iat, now, leeway } => {
                format!("iat={} now={now} leeway={leeway}s", num(*iat))
            }
            AuthError::MissingClaim { .. } => return None,
            AuthError::InvalidClaim { reason, .. } => reason.clone(),
            AuthError::IssuerMismatch { got } => format!("iss={}", printable(got)),
            AuthError::AudienceMismatch => return None,
            AuthError::JwksUnavailable { cause, .. } => cause.clone(),
            AuthError::Revoked { status } => format!("the profile endpoint answered HTTP {status}"),
            AuthError::ProfileUnavailable { cause, .. } => cause.clone(),
            AuthError::Config { reason, .. } => reason.clone(),
            AuthError::PermissionDenied { .. } => return None,
        })
    }

    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            AuthError::Malformed { .. } | AuthError::TooLarge { .. } => {
                "Pass the raw access token (three base64url parts separated by dots), without a \"Bearer \" prefix."
            }
            AuthError::AlgorithmNotAllowed { .. } => {
                "Allowed algorithms are set by outseta_auth.algorithms (default RS256); none and HS* are never accepted."
            }
            AuthError::UnknownKid { .. } => {
                "The key may have been rotated away, or the token comes from another issuer; check outseta_auth.domain / outseta_auth.jwks_url."
            }
            AuthError::Expired { .. } => "Obtain a fresh access token from Outseta.",
            AuthError::NotYetValid { .. } | AuthError::IssuedInFuture { .. } => {
                "Check the database server's clock, or raise outseta_auth.leeway."
            }
            AuthError::IssuerMismatch { .. } => "Accepted issuers are set by outseta_auth.issuer.",
            AuthError::AudienceMismatch => {
                "Accepted audiences are set by outseta_auth.audience; when it is empty and outseta_auth.domain is set, aud must be that domain. To accept another audience, list it in outseta_auth.audience."
            }
            AuthError::RequestTooLarge { .. } => {
                "A real HTTP request's cookies and headers are far smaller; send the token in outseta_auth.token instead."
            }
            AuthError::PermissionDenied { hint, .. } => hint,
            AuthError::Revoked { .. } => {
                "The person may have been deleted or signed out in Outseta; sign in again for a new token."
            }
            AuthError::ProfileUnavailable { .. } => {
                "Check that the database server can reach outseta_auth.profile_url (default https://<domain>/api/v1/profile?fields=*); with outseta_auth.profile_check on, tokens fail closed until it answers."
            }
            AuthError::JwksUnavailable { .. } => {
                "Check that the database server can reach the JWKS URL, or set outseta_auth.jwks to a literal key set."
            }
            _ => return None,
        })
    }
}

/// What a caller without `pg_monitor` is told instead of an unavailable key set's or profile
/// endpoint's URL and network cause (the server log has them).
pub const CAUSE_IN_LOG: &str = "the cause is in the server log";

impl AuthError {
    /// Whether this error names internal URLs or network causes.
    pub fn names_internals(&self) -> bool {
        matches!(
            self,
            AuthError::JwksUnavailable { .. } | AuthError::ProfileUnavailable { .. }
        )
    }

    /// The error without internal URLs and causes, for callers who may not see them; the
    /// code, SQLSTATE and hint stay.
    pub fn without_internals(&self) -> AuthError {
        match self {
            AuthError::JwksUnavailable { .. } => AuthError::JwksUnavailable {
                url: String::new(),
                cause: CAUSE_IN_LOG.into(),
            },
            AuthError::ProfileUnavailable { .. } => AuthError::ProfileUnavailable {
                url: String::new(),
                cause: CAUSE_IN_LOG.into(),
            },
            other => other.clone(),
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())?;
        if let Some(d) = self.detail() {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for AuthError {}

/// Attacker-controlled strings (kid, alg, iss) are shown truncated and with control
/// characters escaped, so a 10 KB kid cannot flood the log and cannot forge log lines.
pub fn printable(s: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_truncates_and_escapes() {
        let long = "a".repeat(10_000);
        assert_eq!(printable(&long).len(), 67);
        assert_eq!(printable("a\nb"), "a\\nb");
    }

    #[test]
    fn classes() {
        assert_eq!(AuthError::CritUnsupported.class(), ErrorClass::Token);
        assert_eq!(AuthError::config("x", "y").class(), ErrorClass::Config);
        let e = AuthError::JwksUnavailable {
            url: "u".into(),
            cause: "c".into(),
        };
        assert_eq!(e.class(), ErrorClass::Jwks);
    }

    #[test]
    fn internals_are_left_out_for_ordinary_callers() {
        let e = AuthError::JwksUnavailable {
            url: "http://10.0.0.5/internal-jwks-path".into(),
            cause: "connection failed: connection refused".into(),
        };
        assert!(e.names_internals());
        let shown = e.without_internals();
        assert_eq!(shown.code(), "jwks_unavailable");
        assert_eq!(shown.class(), ErrorClass::Jwks);
        let text = shown.to_string();
        assert_eq!(
            text,
            "could not load the JWKS: the cause is in the server log"
        );
        assert!(!text.contains("10.0.0.5") && !text.contains("refused"));
        let p = AuthError::ProfileUnavailable {
            url: "http://10.0.0.5/p".into(),
            cause: "timed out".into(),
        };
        assert!(!p.without_internals().to_string().contains("10.0.0.5"));
        assert!(!AuthError::CritUnsupported.names_internals());
    }

    #[test]
    fn detail_formats_times() {
        let e = AuthError::Expired {
            exp: 100.0,
            now: 200,
            leeway: 30,
        };
        assert_eq!(e.detail().unwrap(), "exp=100 now=200 leeway=30s");
    }
}
