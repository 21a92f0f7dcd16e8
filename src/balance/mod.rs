//! Endpoints: a backend with several URLs, balanced over those that are not Bad, failing
//! open when too many are, and a connect failure sent once more to another endpoint.

mod discover;
mod endpoint;
mod failover;

pub use self::discover::HealthDiscover;
pub use self::endpoint::{Endpoint, EndpointFuture};
pub use self::failover::ConnectFailover;
