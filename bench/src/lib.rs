//! Load generators that measure Ilo over loopback and print figures; they never assert.

pub mod api;
pub mod e2e;
pub mod floor;
pub mod potion;
pub mod proc;
pub mod stats;
