//! Cortex: a single-host orchestrator for fleets of worker processes.
//!
//! The library owns every file format, lock, path and policy; the binaries (`cortex` and the
//! `cortex-*` daemons in `daemons/`) are thin. See ARCHITECTURE.md for the code map.
//!
//! The folders are layers, each importing only from the layers below it (and, sideways, from
//! itself): [`base`] → [`store`] → [`domain`] → [`ops`] → [`daemons`] → [`cli`]. The test
//! `layering::no_import_goes_up_a_layer` (`src/layering.rs`) fails on an import that goes up.

pub mod base;
pub mod cli;
pub mod daemons;
pub mod domain;
pub mod ops;
pub mod store;

pub use base::error::{Error, Result};
pub use store::Store;
pub use store::home::Home;

#[cfg(test)]
mod layering;
