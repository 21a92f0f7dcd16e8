//! `Policy`: the thresholds of the registry's state machine.

use std::time::Duration;

use crate::verdict::DEFAULT_SLOW_THRESHOLD;

/// Thresholds of the registry's state machine and of its log reminders.
///
/// Thresholds below 1 are taken as 1.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_health_classify::Policy;
///
/// let mut policy = Policy::default();
/// policy.unhealthy_threshold = 1;
/// policy.slow_threshold = Duration::from_secs(2);
/// assert_eq!(policy.healthy_threshold, 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// How many Bad verdicts in a row make a backend Unhealthy or Unauthenticated
    /// (default 3).
    pub unhealthy_threshold: u32,
    /// How many Good verdicts in a row bring a Bad backend back to Healthy (default 2).
    pub healthy_threshold: u32,
    /// How many non-Good verdicts in a row make a Healthy or Unknown backend Degraded
    /// (default 2).
    pub degraded_threshold: u32,
    /// The latency above which a success is judged slow (default 5 s).
    pub slow_threshold: Duration,
    /// The first reminder while a backend stays Bad comes this long after the transition
    /// (default 1 min); each next one comes twice as long after the previous.
    pub reminder_initial: Duration,
    /// The longest interval between two reminders (default 1 h).
    pub reminder_max: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            degraded_threshold: 2,
            slow_threshold: DEFAULT_SLOW_THRESHOLD,
            reminder_initial: Duration::from_secs(60),
            reminder_max: Duration::from_secs(3600),
        }
    }
}
