//! The canary runner (issue 13).
pub mod config;
pub mod ports;
pub mod stats;
pub use config::CanaryConfig;
