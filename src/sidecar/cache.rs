//! The Sidecar's caches, bounded by bytes (not entries): hostile input — 60 KiB paths, many
//! distinct tokens or intercepted host names — cannot grow them past their budget.
//!
//! Budgets (64 MiB in all; docs/security.md): verified tokens 8 MiB, Cedar decisions 32 MiB per
//! policy bundle, minted leaf certificates 16 MiB. A cache that would exceed its budget starts
//! over (cleared), which costs a re-computation, never a wrong answer.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;

use crate::metrics::sidecar::metrics;

/// Verified capability tokens (`token_cache.rs`).
pub const TOKEN_CACHE_BYTES: usize = 8 << 20;
/// Cedar decisions of one policy bundle (`cedar.rs`).
pub const CEDAR_MEMO_BYTES: usize = 32 << 20;
/// TLS server configs of intercepted hosts (`ca.rs`).
pub const LEAF_CACHE_BYTES: usize = 16 << 20;

/// Which cache: its budget, and its `cache` label in the metrics (docs/metrics.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    /// Verified capability tokens.
    Tokens,
    /// Cedar decisions of the bundle in force.
    CedarDecisions,
    /// TLS server configs minted for intercepted hosts.
    LeafCertificates,
}

impl CacheKind {
    pub const ALL: [CacheKind; 3] = [Self::Tokens, Self::CedarDecisions, Self::LeafCertificates];

    pub fn name(self) -> &'static str {
        match self {
            Self::Tokens => "tokens",
            Self::CedarDecisions => "cedar_decisions",
            Self::LeafCertificates => "leaf_certificates",
        }
    }

    pub fn budget(self) -> usize {
        match self {
            Self::Tokens => TOKEN_CACHE_BYTES,
            Self::CedarDecisions => CEDAR_MEMO_BYTES,
            Self::LeafCertificates => LEAF_CACHE_BYTES,
        }
    }
}

/// What one entry costs besides its key and value bytes (hash-table slot, allocation headers).
const ENTRY_OVERHEAD: usize = 64;

/// A map whose entries are charged their size in bytes against a fixed budget.
pub struct BoundedCache<K, V> {
    budget: usize,
    /// Reported to the metrics (hits, misses, size) when set.
    kind: Option<CacheKind>,
    inner: RwLock<Charged<K, V>>,
}

struct Charged<K, V> {
    map: HashMap<K, V>,
    used: usize,
}

impl<K: Hash + Eq, V: Clone> BoundedCache<K, V> {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            kind: None,
            inner: RwLock::new(Charged {
                map: HashMap::new(),
                used: 0,
            }),
        }
    }

    /// The cache `kind`, with its budget, counted in the metrics.
    pub fn of(kind: CacheKind) -> Self {
        metrics().cache_size(kind, 0, 0);
        Self {
            kind: Some(kind),
            ..Self::new(kind.budget())
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let found = self.read().map.get(key).cloned();
        if let Some(kind) = self.kind {
            metrics().cache_lookup(kind, found.is_some());
        }
        found
    }

    /// Remember `value` under `key`, charged `bytes` (its key and value sizes). An entry larger
    /// than the whole budget is not kept; one that does not fit empties the cache first.
    pub fn insert(&self, key: K, value: V, bytes: usize) {
        let cost = bytes.saturating_add(ENTRY_OVERHEAD);
        if cost > self.budget {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if inner.used + cost > self.budget {
            inner.map.clear();
            inner.used = 0;
        }
        if inner.map.insert(key, value).is_none() {
            inner.used += cost;
        }
        if let Some(kind) = self.kind {
            metrics().cache_size(kind, inner.map.len(), inner.used);
        }
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.read().used
    }

    pub fn len(&self) -> usize {
        self.read().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Charged<K, V>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_bytes_and_starts_over_at_the_budget() {
        let cache: BoundedCache<String, u32> = BoundedCache::new(1000);
        cache.insert("a".into(), 1, 100);
        cache.insert("b".into(), 2, 100);
        assert_eq!(cache.used(), 2 * (100 + ENTRY_OVERHEAD));
        assert_eq!(cache.get("a"), Some(1));
        // Too big to ever fit: not kept, nothing evicted.
        cache.insert("huge".into(), 3, 10_000);
        assert_eq!(cache.get("huge"), None);
        assert_eq!(cache.len(), 2);
        // Fills up: the cache starts over and keeps the new entry.
        for i in 0..10 {
            cache.insert(format!("k{i}"), i, 200);
            assert!(cache.used() <= 1000);
        }
        assert!(cache.get("k9").is_some());
        assert!(cache.get("a").is_none());
    }

    proptest::proptest! {
        #[test]
        fn never_exceeds_its_budget(sizes in proptest::collection::vec(0usize..5000, 1..200)) {
            let cache: BoundedCache<usize, ()> = BoundedCache::new(4096);
            for (i, size) in sizes.into_iter().enumerate() {
                cache.insert(i, (), size);
                proptest::prop_assert!(cache.used() <= 4096);
            }
        }
    }
}
