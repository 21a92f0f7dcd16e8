//! The health registry: per-backend status that reports transitions, not repeats.

mod backend;
mod failure;
mod health_registry;
pub(crate) mod machine;
mod policy;
mod snapshot;
mod strategy;
mod traffic;
mod transition;

pub use self::backend::BackendHandle;
pub use self::health_registry::HealthRegistry;
pub(crate) use self::policy::ticks;
pub use self::policy::{Policy, PolicyError};
pub use self::snapshot::{BackendHealth, Phase, Snapshot, Summary};
pub use self::transition::{Evidence, Transition, Transitions};
