//! Emergency recovery (the runbook's P1/P2 and data-corruption procedures):
//!
//! - [`repair`]: `cortex repair` — fix corrupt files without throwing anything away.
//! - [`stale`]: `cortex recover-stale` — end dispatches whose process is gone or silent.
//! - [`reset`]: `cortex reset --yes` — the complete reset, after a pre-reset backup.
//! - [`defaults`]: `cortex config restore-defaults` — configuration files back to their defaults.
//! - [`daemons`]: stopping and starting this home's daemons around a restore or reset.

pub(crate) mod defaults;
pub(crate) mod repair;
pub(crate) mod reset;
pub(crate) mod stale;
