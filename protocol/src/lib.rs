//! Helium's wire contract: every message, subject, stream, bucket and object key that crosses a
//! process boundary. Broker, worker and (by a checked copy) the Python client build their names
//! here and nowhere else. No I/O lives in this crate.
//!
//! # Layout
//! - [`auth`]: roles, their NATS permissions, user JWTs and `.creds` files.
//! - [`subjects`]: NATS subject builders, stream and KV bucket names, object-store keys.
//! - [`envelope`]: the version constant, the one reply envelope, error codes, encode/decode.
//! - [`job`]: what a researcher asks for (training spec, requirements) and a job's states.
//! - [`api`]: researcher/operator requests and replies (`helium.v1.api.<principal>.…`).
//! - [`artifacts`]: chunked, digest-checked upload and download of models, data and results.
//! - [`worker`]: worker ↔ broker messages (register, heartbeat, invite/bid, award, run events).
//! - [`ledger`]: journal entries of the double-entry ledger and money units.
//! - [`limits`]: every bound in one place: chunk sizes, caps on values, quotas, stream limits.
//! - [`servers`]: the comma-separated list of NATS server URLs every binary and client accepts.
//! - [`validate`]: pure checks of what a peer sends (ids, asks, bids, awards) and truncation.
//! - [`state`]: the tensor state files (checkpoints, results) and the model's state manifest.

pub mod api;
pub mod auth;
pub mod artifacts;
pub mod envelope;
pub mod job;
pub mod ledger;
pub mod limits;
pub mod servers;
pub mod state;
pub mod subjects;
pub mod validate;
pub mod worker;

pub use envelope::{decode, encode, ErrorCode, Reply, WireError, PROTOCOL_VERSION};
