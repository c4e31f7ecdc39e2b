//! The token cache: successful validations, kept per child and shared by its threads.
//!
//! As keystonemiddleware's `_cache.TokenCache` with no memcached: only a token Keystone
//! accepted is kept (an invalid token is asked about again every time), under the SHA-256 of
//! the token (the raw token is never kept), until the earlier of the token's `expires_at` and
//! `token_cache_time` after the validation. Keystone is not asked again meanwhile, which is the
//! point and the price: a token revoked in Keystone is still accepted by a child that cached it,
//! for at most `token_cache_time` (docs/OPERATIONS.md, "Access control").
//!
//! # Bounds
//!
//! At most [`CAPACITY`] entries per child. When a new entry finds the cache full, the entries
//! whose time is up are dropped first; if none is, the entry due to leave soonest goes (the
//! least left to lose). So a flood of distinct valid tokens costs validations, never memory.
//!
//! # Locking
//!
//! One `Mutex` around the map: a lookup or an insert holds it for a hash-map operation (an
//! insert into a full cache for one pass over it, at most [`CAPACITY`] entries), never while
//! talking to Keystone, so a std `Mutex` is enough. A panic while it is held (there is no
//! code that can panic there) would leave the map usable: poisoning is ignored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::context::Context;

/// The most validations one child keeps. A context is a few hundred bytes (ids, names, roles),
/// so a full cache is about 2 MiB per child.
pub const CAPACITY: usize = 4096;

/// The key of a token: its SHA-256.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    pub fn of(token: &[u8]) -> TokenKey {
        TokenKey(Sha256::digest(token).into())
    }
}

/// Validations kept for `time_to_live` at most (`None`: nothing is kept).
pub struct TokenCache {
    time_to_live: Option<Duration>,
    capacity: usize,
    entries: Mutex<HashMap<TokenKey, Entry>>,
}

struct Entry {
    context: Arc<Context>,
    /// When the entry stops being served: the earlier of the validation plus `time_to_live`
    /// and the token's `expires_at`.
    until: Instant,
}

impl TokenCache {
    pub fn new(time_to_live: Option<Duration>) -> TokenCache {
        TokenCache::with_capacity(time_to_live, CAPACITY)
    }

    fn with_capacity(time_to_live: Option<Duration>, capacity: usize) -> TokenCache {
        TokenCache {
            time_to_live,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The context cached for `key`, if its time is not up at `now`.
    pub fn get(&self, key: &TokenKey, now: Instant) -> Option<Arc<Context>> {
        self.time_to_live?;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(key) {
            Some(entry) if entry.until > now => Some(entry.context.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `context`, validated at `now` (wall clock `wall_now`), until the earlier of
    /// `now + time_to_live` and its expiry. An expired context is not kept.
    pub fn insert(&self, key: TokenKey, context: Arc<Context>, now: Instant, wall_now: SystemTime) {
        let Some(time_to_live) = self.time_to_live else {
            return;
        };
        let Ok(validity) = context.expires_at.duration_since(wall_now) else {
            return;
        };
        if validity.is_zero() {
            return;
        }
        let until = now + time_to_live.min(validity);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, entry| entry.until > now);
            if entries.len() >= self.capacity {
                let soonest = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.until)
                    .map(|(key, _)| *key);
                if let Some(soonest) = soonest {
                    entries.remove(&soonest);
                }
            }
        }
        entries.insert(key, Entry { context, until });
    }

    /// How many entries the cache holds (expired ones not yet dropped included).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the cache holds no entry.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(expires_in: Duration, wall_now: SystemTime) -> Arc<Context> {
        Arc::new(Context {
            user_id: "u".to_string(),
            user_name: "user".to_string(),
            user_domain_id: None,
            user_domain_name: None,
            project_id: Some("p".to_string()),
            project_name: None,
            project_domain_id: None,
            project_domain_name: None,
            domain_id: None,
            domain_name: None,
            system_scope: None,
            roles: vec!["member".to_string()],
            is_admin_project: true,
            expires_at: wall_now + expires_in,
            audit_id: None,
        })
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn keys_are_sha256_of_the_token() {
        assert_eq!(TokenKey::of(b"abc"), TokenKey::of(b"abc"));
        assert_ne!(TokenKey::of(b"abc"), TokenKey::of(b"abd"));
        assert_eq!(
            TokenKey::of(b"abc").0[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(\"abc\") starts ba7816bf"
        );
    }

    #[test]
    fn an_entry_lives_until_the_earlier_of_its_time_to_live_and_its_expiry() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let cache = TokenCache::new(Some(5 * MINUTE));
        let long = TokenKey::of(b"long-lived");
        let short = TokenKey::of(b"short-lived");
        cache.insert(long, context(60 * MINUTE, wall), now, wall);
        cache.insert(short, context(MINUTE, wall), now, wall);
        assert!(cache
            .get(&long, now + 5 * MINUTE - Duration::from_millis(1))
            .is_some());
        assert!(cache.get(&long, now + 5 * MINUTE).is_none(), "time to live");
        assert!(cache
            .get(&short, now + MINUTE - Duration::from_millis(1))
            .is_some());
        assert!(cache.get(&short, now + MINUTE).is_none(), "expiry");
        assert_eq!(cache.len(), 0, "a lookup past its time drops the entry");
    }

    #[test]
    fn expired_tokens_and_a_disabled_cache_keep_nothing() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let cache = TokenCache::new(Some(MINUTE));
        cache.insert(TokenKey::of(b"t"), context(Duration::ZERO, wall), now, wall);
        let expired = Arc::new(Context {
            expires_at: wall - MINUTE,
            ..(*context(MINUTE, wall)).clone()
        });
        cache.insert(TokenKey::of(b"u"), expired, now, wall);
        assert!(cache.is_empty());
        let disabled = TokenCache::new(None);
        disabled.insert(TokenKey::of(b"t"), context(MINUTE, wall), now, wall);
        assert!(disabled.is_empty());
        assert!(disabled.get(&TokenKey::of(b"t"), now).is_none());
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_the_one_due_soonest() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let cache = TokenCache::with_capacity(Some(60 * MINUTE), 3);
        cache.insert(TokenKey::of(b"a"), context(10 * MINUTE, wall), now, wall);
        cache.insert(TokenKey::of(b"b"), context(2 * MINUTE, wall), now, wall);
        cache.insert(TokenKey::of(b"c"), context(30 * MINUTE, wall), now, wall);
        // Full: the one due soonest (b) makes room.
        cache.insert(TokenKey::of(b"d"), context(20 * MINUTE, wall), now, wall);
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&TokenKey::of(b"b"), now).is_none());
        for key in [b"a", b"c", b"d"] {
            assert!(cache.get(&TokenKey::of(key), now).is_some());
        }
        // Replacing an entry never evicts another.
        cache.insert(TokenKey::of(b"a"), context(10 * MINUTE, wall), now, wall);
        assert_eq!(cache.len(), 3);
        // Later, a and d have expired: both go, nothing live is evicted.
        let later = now + 25 * MINUTE;
        let later_wall = wall + 25 * MINUTE;
        cache.insert(
            TokenKey::of(b"e"),
            context(10 * MINUTE, later_wall),
            later,
            later_wall,
        );
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&TokenKey::of(b"c"), later).is_some());
        assert!(cache.get(&TokenKey::of(b"e"), later).is_some());
    }
}
