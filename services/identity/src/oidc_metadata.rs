//! OpenID Providers' discovery documents and signing keys (JWKS), fetched once and reused for
//! [`METADATA_TTL`]: without it every sign-in start and every callback fetched both documents
//! from the provider. A provider that rotates its signing key is handled by the callback, which
//! fetches afresh when an ID token names a key the cached set lacks ([`MetadataCache::get`] with
//! `fresh`) and checks the same token again.

use openidconnect::core::CoreProviderMetadata;
use openidconnect::IssuerUrl;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a fetched document is used before it is fetched again.
pub(crate) const METADATA_TTL: Duration = Duration::from_secs(300);

/// Fetches asked for with `fresh` are at most this frequent per issuer, however many callbacks
/// ask (a provider answering with a key it does not publish must not turn every sign-in into
/// two fetches).
const MIN_REFRESH: Duration = Duration::from_secs(10);

/// Issuers remembered at most (one per tenant with federation; the oldest goes first).
const CAPACITY: usize = 1024;

struct Entry {
    fetched_at: Instant,
    /// When a fetch was last asked for with `fresh`.
    forced_at: Option<Instant>,
    metadata: CoreProviderMetadata,
}

#[derive(Default)]
pub(crate) struct MetadataCache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl MetadataCache {
    /// The issuer's documents: cached unless older than [`METADATA_TTL`], or, with `fresh`,
    /// fetched again unless another `fresh` fetch happened within [`MIN_REFRESH`]. Discovery
    /// checks that the document's issuer is the one configured (no mix-up).
    pub(crate) async fn get(
        &self,
        issuer: &IssuerUrl,
        http: &openidconnect::reqwest::Client,
        fresh: bool,
    ) -> Result<CoreProviderMetadata, String> {
        if let Some(m) = self.cached(issuer.as_str(), fresh) {
            return Ok(m);
        }
        let m = CoreProviderMetadata::discover_async(issuer.clone(), http)
            .await
            .map_err(|e| e.to_string())?;
        self.put(issuer.as_str(), m.clone(), fresh);
        Ok(m)
    }

    fn cached(&self, issuer: &str, fresh: bool) -> Option<CoreProviderMetadata> {
        let entries = self.entries.lock().ok()?;
        let e = entries.get(issuer)?;
        let usable = if fresh {
            e.forced_at.is_some_and(|at| at.elapsed() < MIN_REFRESH)
        } else {
            e.fetched_at.elapsed() < METADATA_TTL
        };
        usable.then(|| e.metadata.clone())
    }

    fn put(&self, issuer: &str, metadata: CoreProviderMetadata, fresh: bool) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CAPACITY && !entries.contains_key(issuer) {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.fetched_at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                entries.remove(&k);
            }
        }
        let now = Instant::now();
        let forced_at = if fresh {
            Some(now)
        } else {
            entries.get(issuer).and_then(|e| e.forced_at)
        };
        entries.insert(
            issuer.to_string(),
            Entry {
                fetched_at: now,
                forced_at,
                metadata,
            },
        );
    }
}
