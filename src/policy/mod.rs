//! The policy engine: every runbook as a pure, time-aware state machine.
//!
//! `decide(spec, memory, observation, now)` takes everything in as arguments and gives actions, the
//! next memory and the status out. It does no IO, reads no clock and uses no randomness, so the
//! same inputs always give the same decision, in the controller and in `tierguard simulate` alike.

mod action;
pub mod effective;

pub use action::{Action, NotifyKind};
