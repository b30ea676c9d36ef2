//! vigil: a self-healing daemon. Sources turn what happens on the host into events, rules turn
//! events into durable intents, and one orchestrator acts on intents only through gates; the
//! invariant harness checks the state other systems keep. See DESIGN.md for the vocabulary;
//! every module is named after the concept it holds.

pub mod api;
pub mod app;
pub mod audit;
pub mod canary;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod error;
pub mod escalation;
pub mod event;
pub mod exec;
pub mod http;
pub mod intent;
pub mod invariants;
pub mod metrics;
pub mod orchestrator;
pub mod outage;
pub mod private_fs;
pub mod rules;
pub mod sources;
pub mod store;
pub mod supervisor;
pub mod template;
pub mod watch;
