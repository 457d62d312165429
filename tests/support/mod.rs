//! Shared test harness: real servers started by the tests.
#![allow(dead_code)]

pub mod http;
pub mod servers;
