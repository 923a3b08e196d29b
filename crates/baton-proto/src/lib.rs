//! Baton's wire contract (package `baton.v1`), generated from
//! `proto/baton/v1/*.proto` at build time.
//!
//! These types stop at the boundary: services and the SDK convert them into
//! `baton-core`'s domain types with `TryFrom` (field-level errors) as soon as
//! bytes arrive, and back just before bytes leave.

/// Generated types of package `baton.v1`.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/baton.v1.rs"));
}

pub use prost;
pub use prost_types;
