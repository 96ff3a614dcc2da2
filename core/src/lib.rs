//! rollout-core: the rules of an edge rollout, shared by every edge build and
//! the control service so that they all decide alike.
//!
//! - [`bucket_of`]: `SHA-256(salt || 0x00 || key)` to a bucket in `0..1_000_000`.
//!   Frozen: the vectors in `tests/vectors/buckets.json` hold it to its word.
//! - [`Config`]: the JSON config, validated with field paths in every error and
//!   compiled once into a lookup-ready form.
//! - [`decide`]: request facts in, [`Decision`] out. No I/O, no clock, no
//!   randomness (the caller passes random bytes for minted cookies).
//! - [`Envelope`]: signed config pushes (Ed25519) and the version rule [`admit`].
//! - [`plan`]: progressive delivery plans, the judge of their checks, and the
//!   state machine that walks their steps.
//!
//! ```
//! use rollout_core::{Arm, Config, Request, decide};
//!
//! let config = Config::from_json(br#"{
//!     "schema": 1,
//!     "routes": [{
//!         "id": "web",
//!         "old": "https://old.internal",
//!         "new": "https://new.internal",
//!         "new_weight": 10,
//!         "key": ["header:x-user-id", "cookie:rollout_id"],
//!         "assign_cookie": true
//!     }]
//! }"#)?;
//!
//! let headers = [("x-user-id", "user-42")];
//! let request = Request {
//!     method: "GET",
//!     host: "shop.example.com",
//!     path: "/cart",
//!     query: "",
//!     headers: &headers,
//!     client_ip: None,
//!     mint: None,
//! };
//! let decision = decide(&config, &request);
//! assert_eq!(decision.route.id(), "web");
//! // user-42 sits in bucket 121 660 of route "web": above 10 % (100 000), so old.
//! assert_eq!(decision.bucket.map(|b| b.get()), Some(121_660));
//! assert_eq!(decision.arm, Arm::Old);
//! assert_eq!(decision.origin.to_string(), "https://old.internal");
//! # Ok::<(), rollout_core::ConfigError>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod bucket;
pub mod config;
mod decide;
pub mod edge;
mod envelope;
mod facts;
pub mod http;
pub mod plan;
mod weight;

pub use bucket::{BUCKETS, Bucket, bucket_of};
pub use config::{Config, ConfigDoc, ConfigError, KeySource, Origin, Problem, Route};
pub use decide::{
    Arm, COOKIE_MAX_AGE_SECS, Decision, KeyOrigin, Reason, Request, SetCookie, decide, decide_key,
};
pub use envelope::{
    Admission, Applied, CLOCK_FLOOR_SECS, Digest, Envelope, EnvelopeDoc, EnvelopeError,
    EnvelopeMeta, KeyId, MAX_ENVELOPE_BYTES, MAX_STAMP_SKEW_SECS, MAX_TRUSTED_KEYS, MAX_VERSION,
    PublicKey, READ_HEADER, ReadStamp, SIGNATURE_HEADER, SecretKey, SignatureHeader, Stamp, admit,
    parse_key_list, parse_key_set,
};
pub use facts::{Facts, InvalidMint};
pub use weight::{InvalidWeight, Weight};
