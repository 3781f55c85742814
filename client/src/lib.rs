//! A client of Ilo: [`rest`] for keys, users and sessions, [`ws`] for potion's WebSocket
//! protocol. The end-to-end tests and the benchmarks use it, so there is one client
//! implementation of the protocol. [`chat`] is a session that stays connected and, with
//! [`e2e`], encrypts end to end (ilo-e2e/1).

pub mod chat;
pub mod e2e;
pub mod keyring;
mod presence;
pub mod rest;
pub mod ws;

pub use ilo_protocol::{ClientFrame, Member, Position, PresenceEvent, ServerFrame, Unrecovered};
