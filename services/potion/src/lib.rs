//! potion: Ilo's WebSocket relay (protocol `potion.v1`). Validates tokens with ilo-api over
//! gRPC, keeps rooms of local connections in the `hub`, and fans messages out across relays
//! through the `bus` (in process, or Redis pub/sub).

#![warn(unreachable_pub)]

mod auth;
mod bucket;
mod bus;
mod caps;
mod config;
mod connection;
mod hub;
mod metrics;
mod outbox;
mod probes;
mod relay;
mod rooms;
mod socket;
mod startup;
mod upgrade;

pub use config::Config;
pub use startup::{Application, DRAIN, Readiness, RelayService, no_delay};
