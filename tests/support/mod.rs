//! Shared support for the integration tests. Each test binary includes it with `mod support;` and
//! uses only a part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod apiserver;
