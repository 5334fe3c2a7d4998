//! The verification core of `outseta_auth`, free of Postgres types so that it can be unit
//! tested with `cargo test`, fuzzed and benchmarked on its own.
//!
//! - [`verify`]: compact-JWS parsing, header rules, signature check
//! - [`jwks`]: key-set parsing and key selection
//! - [`claims`]: time/issuer/audience checks and the Outseta claims
//! - [`policy`]: algorithms, issuers, audiences, leeway
//! - [`fetch`]: bounded HTTP(S) fetching of a JWKS
//! - [`request`]: token sources, bounded lookups in PostgREST's request settings, CSRF rule
//! - [`config`]: what verification depends on (key source, policy, timing)
//! - [`clock`]: the wall clock and the monotonic one
//! - [`decision`]: the one rule "use the keys / fetch here / wait for the worker / fail"
//! - [`key_store`]: fetch rules (TTL, rate limit, backoff, max stale) and the per-backend store
//! - [`bounded`]: the one bounded cache (count and cost, oldest first) under the others
//! - [`token_cache`]: verified tokens of one backend
//! - [`verified`]: the cluster's memory of verified tokens (one RSA check per token)
//! - [`engine`]: the per-backend engine tying these together
//! - [`profile`]: Outseta's profile endpoint (second verification method) and its cache
//! - [`webhook`]: webhook signatures (HMAC-SHA256)
//! - [`redact`]: the token's value kept out of messages and logs
//! - [`handoff`]: when the token is handed on to Citus workers again
//! - [`error`]: the one error type

pub mod b64;
pub mod bounded;
pub mod claims;
pub mod clock;
pub mod config;
pub mod decision;
pub mod engine;
pub mod error;
pub mod fetch;
pub mod handoff;
pub mod jwks;
pub mod key_store;
pub mod policy;
pub mod profile;
pub mod redact;
pub mod request;
pub mod token_cache;
pub mod verified;
pub mod verify;
pub mod webhook;

pub use claims::VerifiedToken;
pub use clock::Now;
pub use config::{Config, KeySource, Timing};
pub use engine::Engine;
pub use error::{AuthError, ErrorClass};
pub use policy::Policy;
