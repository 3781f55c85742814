//! A client of Ilo: [`rest`] for keys, users and sessions, [`ws`] for potion's WebSocket
//! protocol. The end-to-end tests and the benchmarks use it, so there is one client
//! implementation of the protocol.

pub mod chat;
pub mod rest;
pub mod ws;

pub use ilo_protocol::{ClientFrame, Member, PresenceEvent, ServerFrame};
