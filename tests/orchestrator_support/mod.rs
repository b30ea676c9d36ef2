//! The orchestrator fixtures moved to `tests/common/env.rs` (one fixture family, with a store
//! parameter); this keeps `mod orchestrator_support;` working for the tests that name it.
#![allow(dead_code, unused_imports)]

#[path = "../common/store.rs"]
pub mod store;

#[path = "../common/env.rs"]
mod env;

pub use env::*;
