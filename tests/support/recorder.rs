//! A `HealthSink` that keeps what each report said: outcome, verdict, whether credentials
//! were sent, and whether traffic or a probe made it.

#![allow(dead_code)] // each user takes what it needs

use std::sync::{Arc, Mutex};

use tower_health_classify::{
    AuthStrategy, Credentials, HealthReport, HealthSink, Origin, Outcome, Verdict,
};

pub(crate) type Recorded = (Outcome, Option<Verdict>, Credentials, Origin);

#[derive(Debug)]
pub(crate) struct Recorder {
    strategy: Mutex<AuthStrategy>,
    reports: Mutex<Vec<Recorded>>,
}

impl Recorder {
    pub(crate) fn new(strategy: AuthStrategy) -> Arc<Self> {
        Arc::new(Recorder {
            strategy: Mutex::new(strategy),
            reports: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn set_strategy(&self, strategy: AuthStrategy) {
        *self.strategy.lock().unwrap() = strategy;
    }

    pub(crate) fn reports(&self) -> Vec<Recorded> {
        self.reports.lock().unwrap().clone()
    }

    pub(crate) fn outcomes(&self) -> Vec<Outcome> {
        self.reports().into_iter().map(|r| r.0).collect()
    }

    pub(crate) fn count(&self) -> usize {
        self.reports.lock().unwrap().len()
    }
}

impl HealthSink for Recorder {
    fn strategy(&self) -> AuthStrategy {
        self.strategy.lock().unwrap().clone()
    }

    fn report(&self, report: &HealthReport<'_>) {
        self.reports.lock().unwrap().push((
            report.outcome.clone(),
            report.verdict,
            report.credentials,
            report.origin,
        ));
    }
}
