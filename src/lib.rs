//! The standalone launcher: ilo-api and one potion relay in one process, REST, `/ws` and the
//! web client on one port, gRPC kept on an internal loopback port. The same services and code
//! paths as the split deployment; only the wiring is here.

mod probes;
mod standalone;
pub mod web;

pub use standalone::Standalone;
