//! A backend's strategy, read on every report without a lock, whatever the strategy.
//!
//! The four built-in strategies are a tag in an atomic. A custom one is interned in its
//! registry's [`Customs`], a table that only grows and whose slots are written once, so
//! a reader follows the tag to its slot with atomics alone. The table grows by one slot
//! per distinct custom strategy ever set: strategies are set by operators, not by
//! requests, so this is bounded by configuration.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::verdict::AuthStrategy;

/// Tags below this one are the built-in strategies; `BUILTINS + i` is custom slot `i`.
const BUILTINS: u32 = 4;

/// Chunk `k` of the table holds `2^k` slots, so 32 chunks hold every `u32` index.
const CHUNKS: usize = 32;

/// The custom strategies of one registry, interned.
#[derive(Debug)]
pub(crate) struct Customs {
    chunks: [OnceLock<Box<[OnceLock<AuthStrategy>]>>; CHUNKS],
    /// How many slots are filled; held while one is added, so that equal strategies
    /// share a slot.
    len: Mutex<u32>,
}

impl Default for Customs {
    fn default() -> Self {
        Customs {
            chunks: std::array::from_fn(|_| OnceLock::new()),
            len: Mutex::new(0),
        }
    }
}

/// The chunk and the place in it of slot `index`.
fn locate(index: u32) -> (usize, usize) {
    let position = u64::from(index) + 1;
    let chunk = 63 - position.leading_zeros() as usize;
    (chunk, (position - (1 << chunk)) as usize)
}

impl Customs {
    fn slot(&self, index: u32) -> Option<&OnceLock<AuthStrategy>> {
        let (chunk, offset) = locate(index);
        self.chunks[chunk].get()?.get(offset)
    }

    #[inline]
    fn get(&self, index: u32) -> Option<&AuthStrategy> {
        self.slot(index)?.get()
    }

    /// The slot of `strategy`, added if no slot holds an equal one yet.
    fn intern(&self, strategy: AuthStrategy) -> u32 {
        let mut len = self.len.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(index) = (0..*len).find(|&i| self.get(i) == Some(&strategy)) {
            return index;
        }
        let index = *len;
        let (chunk, offset) = locate(index);
        let slots = self.chunks[chunk]
            .get_or_init(|| (0..1usize << chunk).map(|_| OnceLock::new()).collect());
        // A fresh slot: `len` is held, so nobody else fills it.
        let _ = slots[offset].set(strategy);
        *len += 1;
        index
    }
}

/// One backend's strategy.
#[derive(Debug)]
pub(crate) struct StrategyCell {
    tag: AtomicU32,
}

impl StrategyCell {
    pub(crate) fn new(strategy: AuthStrategy, customs: &Customs) -> Self {
        let cell = StrategyCell {
            tag: AtomicU32::new(0),
        };
        cell.set(strategy, customs);
        cell
    }

    #[inline]
    pub(crate) fn get(&self, customs: &Customs) -> AuthStrategy {
        match self.tag.load(Ordering::Acquire) {
            0 => AuthStrategy::Unauthenticated,
            1 => AuthStrategy::HeaderInjection,
            2 => AuthStrategy::TokenExchange,
            3 => AuthStrategy::UpstreamInject,
            // The slot was filled before the tag naming it was stored (Release above).
            tag => customs
                .get(tag - BUILTINS)
                .cloned()
                .unwrap_or(AuthStrategy::Unauthenticated),
        }
    }

    pub(crate) fn set(&self, strategy: AuthStrategy, customs: &Customs) {
        let tag = match strategy {
            AuthStrategy::Unauthenticated => 0,
            AuthStrategy::HeaderInjection => 1,
            AuthStrategy::TokenExchange => 2,
            AuthStrategy::UpstreamInject => 3,
            AuthStrategy::Custom { .. } => BUILTINS.saturating_add(customs.intern(strategy)),
        };
        self.tag.store(tag, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::CredentialOwner;

    #[test]
    fn slots_are_laid_out_in_doubling_chunks() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(1), (1, 0));
        assert_eq!(locate(2), (1, 1));
        assert_eq!(locate(3), (2, 0));
        assert_eq!(locate(6), (2, 3));
        assert_eq!(locate(7), (3, 0));
        assert_eq!(locate(u32::MAX - 1), (31, (1 << 31) - 1));
    }

    #[test]
    fn every_strategy_reads_back_and_equal_customs_share_a_slot() {
        let customs = Customs::default();
        let mtls = AuthStrategy::custom("mtls", CredentialOwner::Gateway);
        let cell = StrategyCell::new(mtls.clone(), &customs);
        assert_eq!(cell.get(&customs), mtls);
        for strategy in [
            AuthStrategy::Unauthenticated,
            AuthStrategy::HeaderInjection,
            AuthStrategy::TokenExchange,
            AuthStrategy::UpstreamInject,
        ] {
            cell.set(strategy.clone(), &customs);
            assert_eq!(cell.get(&customs), strategy);
        }
        let other = StrategyCell::new(mtls.clone(), &customs);
        assert_eq!(other.get(&customs), mtls);
        assert_eq!(*customs.len.lock().unwrap(), 1, "interned once");
        for i in 0..20 {
            let cookie = AuthStrategy::custom(format!("cookie{i}"), CredentialOwner::User);
            cell.set(cookie.clone(), &customs);
            assert_eq!(cell.get(&customs), cookie);
        }
        assert_eq!(*customs.len.lock().unwrap(), 21);
        assert_eq!(
            other.get(&customs),
            mtls,
            "earlier slots are never overwritten"
        );
    }
}
