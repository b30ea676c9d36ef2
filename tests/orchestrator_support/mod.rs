//! The orchestrator fixtures moved to `tests/common/env.rs` (one fixture family, with a store
//! parameter); this keeps `mod orchestrator_support;` working for the tests that still name
//! it beside `mod common;`.
#![allow(unused_imports)]

pub use crate::common::env::*;
