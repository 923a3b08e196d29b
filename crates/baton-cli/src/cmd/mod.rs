//! One module per subcommand.

pub mod alerts;
pub mod auth;
pub mod common;
pub mod console;
pub mod context;
pub mod demo;
pub mod dev;
pub mod dlq;
pub mod emit;
pub mod leases;
pub mod mcp;
pub mod notify;
pub mod rules;
pub mod services;
pub mod silence;
pub mod status;
pub mod tasks;
