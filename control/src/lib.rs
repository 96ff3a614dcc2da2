//! rollout-control: the control service and the `rollout` CLI.
//!
//! The service keeps every config version in SQLite, signs each with Ed25519
//! and pushes it to every edge until each one acknowledges it. The CLI is its
//! client, for CI and for people. Every rule about configs, weights, versions
//! and envelopes is rollout-core's; the API's shapes are rollout-api's; this
//! crate stores, signs, sends and shows.

pub mod auth;
pub mod client;
pub mod commit;
pub mod edge_client;
pub mod events;
pub mod hooks;
pub mod input;
pub mod keys;
pub mod lease;
pub mod metrics;
pub mod plans;
pub mod push;
pub mod service;
pub mod store;
pub mod time;
