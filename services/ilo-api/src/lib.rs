//! ilo-api: Ilo's REST API (actix-web) and the gRPC token service relays call (tonic).
//!
//! `domain` validates and does no I/O; `store` owns diesel; `passwords` and `sessions` build on
//! them; `http` and `grpc` are peers that never import each other; `startup` wires it all.

#![warn(unreachable_pub)]

mod config;
mod domain;
mod grpc;
mod http;
mod limits;
mod metrics;
mod passwords;
mod revocations;
mod secrets;
mod sessions;
mod shared;
mod startup;
mod state;
mod store;

pub use config::Config;
pub use revocations::CHANNEL as REVOCATIONS_CHANNEL;
pub use startup::{Api, Application, Running, Services, observe};
