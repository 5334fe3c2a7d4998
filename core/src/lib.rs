//! The verification core of `outseta_auth`, free of Postgres types so that it can be unit
//! tested with `cargo test`, fuzzed and benchmarked on its own.
//!
//! - [`verify`]: compact-JWS parsing, header rules, signature check
//! - [`jwks`]: key-set parsing and key selection
//! - [`claims`]: time/issuer/audience checks and the Outseta claims
//! - [`policy`]: algorithms, issuers, audiences, leeway
//! - [`fetch`]: bounded HTTP(S) fetching of a JWKS
//! - [`cache`]: the per-backend engine tying these together with caches
//! - [`error`]: the one error type

pub mod b64;
pub mod cache;
pub mod claims;
pub mod error;
pub mod fetch;
pub mod jwks;
pub mod policy;
pub mod request;
pub mod verify;

pub use cache::{Config, Engine, KeySource};
pub use claims::VerifiedToken;
pub use error::{AuthError, ErrorClass};
pub use policy::Policy;
