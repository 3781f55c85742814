//! ilo-api: Ilo's REST API (actix-web) and the gRPC token service relays call (tonic).
//!
//! `domain` validates and does no I/O; `store` owns diesel; `passwords` and `sessions` build on
//! them; `http` and `grpc` are peers that never import each other; `startup` wires it all.

pub mod config;
pub mod domain;
mod grpc;
mod http;
mod limits;
mod metrics;
pub mod passwords;
pub mod secrets;
mod startup;
mod state;
mod revocations;
mod sessions;
pub mod store;

pub use config::Config;
pub use revocations::CHANNEL as REVOCATIONS_CHANNEL;
pub use startup::{Api, Application, Running, Services, observe};
