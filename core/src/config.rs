//! What verification depends on, built from the settings: where keys come from, the policy,
//! and the timing rules of the key store.

use crate::fetch::FetchLimits;
use crate::policy::Policy;

/// Where keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    /// A literal JWKS document (setting `outseta_auth.jwks`).
    Literal(String),
    /// A URL to fetch it from (`outseta_auth.jwks_url`, or derived from `outseta_auth.domain`).
    Url(String),
}

impl KeySource {
    pub fn label(&self) -> &str {
        match self {
            KeySource::Literal(_) => "outseta_auth.jwks (literal)",
            KeySource::Url(u) => u,
        }
    }
}

/// The settings' defaults, written once: the settings' declarations (`src/settings.rs`) use
/// them all, and the core's `Default` impls those the core has too.
pub mod defaults {
    use std::ffi::CStr;

    pub const ALGORITHMS: &CStr = c"RS256";
    /// Seconds.
    pub const LEEWAY: i32 = 30;
    pub const JWKS_CACHE_TTL: i32 = 300;
    pub const JWKS_REFRESH_MIN_INTERVAL: i32 = 30;
    pub const JWKS_MAX_STALE: i32 = 86_400;
    pub const PROFILE_TTL: i32 = 60;
    /// Milliseconds.
    pub const HTTP_TIMEOUT: i32 = 5000;
    pub const HTTP_CONNECT_TIMEOUT: i32 = 2000;
    pub const TOKEN_SOURCES: &CStr = c"setting,cookie,header";
    /// Outseta's script keeps the access token in this cookie (`tokenStorage: 'cookie'`).
    pub const TOKEN_COOKIE: &CStr = c"Outseta.nocode.accessToken";
}

/// Upper bound on how long a `Cache-Control: max-age` may keep keys.
pub const MAX_TTL: u64 = 24 * 3600;

/// The key store's timing rules for one URL. Plain data (`Copy`, no pointers), so that it
/// can also live in shared memory, where the background worker reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct Timing {
    /// Seconds a fetched key set is fresh when the server sends no `max-age`.
    pub ttl: u64,
    /// Minimum seconds between two fetch attempts of one URL.
    pub min_interval: u64,
    /// Seconds fetched keys may be used after the last successful fetch while refreshes
    /// fail (`outseta_auth.jwks_max_stale`); past it they are dropped.
    pub max_stale: u64,
    pub limits: FetchLimits,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            ttl: defaults::JWKS_CACHE_TTL as u64,
            min_interval: defaults::JWKS_REFRESH_MIN_INTERVAL as u64,
            max_stale: defaults::JWKS_MAX_STALE as u64,
            limits: FetchLimits::default(),
        }
    }
}

/// The second verification method, when it is required for every token
/// (`outseta_auth.profile_check`): Outseta's profile endpoint must accept the token too.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileCheck {
    pub url: String,
    /// Seconds an answer holds (`outseta_auth.profile_ttl`).
    pub ttl: f64,
    pub limits: FetchLimits,
}

/// Everything verification depends on, built from the settings once per change of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub source: KeySource,
    pub policy: Policy,
    pub timing: Timing,
    /// `Some` with `outseta_auth.profile_check` on.
    pub profile: Option<ProfileCheck>,
}

impl Config {
    /// Same keys and same rules: cached verdicts stay valid across the change.
    pub fn same_trust(&self, other: &Config) -> bool {
        self.source == other.source && self.policy == other.policy && self.profile == other.profile
    }

    /// SHA-256 of what decides whether a signature is trusted and a token accepted: the key
    /// source and the policy (algorithms, issuers, audiences, leeway). Built from their
    /// `Debug` form, which names every field, so a field added later is covered without an
    /// edit here. Verified tokens are shared between processes only under equal digests.
    pub fn trust_digest(&self) -> crate::verified::Digest {
        let text = format!("{:?}\0{:?}", self.source, self.policy);
        crate::verified::sha256(&[b"outseta_auth trust 1\0", text.as_bytes()])
    }
}
