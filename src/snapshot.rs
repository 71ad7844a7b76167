//! A [`Snapshot`]: one compiled config plus the runtime objects built from it (upstream pools).
//!
//! The proxy loads the current snapshot once per request and keeps that `Arc` until the request
//! ends, so a reload never changes the rules under an in-flight request (invariant 6).

use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{Config, ConfigError};
use crate::credentials::Injection;
use crate::identity::IdentityRuntime;
use crate::upstream::UpstreamClient;

/// A compiled config and its upstream clients, swapped whole on reload.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every successful load.
    pub generation: u64,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// The compiled config.
    pub config: Config,
    /// One client per upstream, same order as `config.upstreams`.
    pub clients: Vec<Arc<UpstreamClient>>,
    /// JWKS caches, one per issuer (kept across reloads while an issuer is unchanged).
    pub identity: Arc<IdentityRuntime>,
    /// Rate-limit and vendor-quota state: one per process, carried from snapshot to snapshot.
    pub limiter: Arc<crate::ratelimit::Limiter>,
    /// The response cache: kept across reloads while `cache.max_bytes` stays the same.
    pub cache: Arc<crate::cache::store::Store>,
}

impl Snapshot {
    /// Builds runtime objects for `config`, reusing the previous snapshot's connection pools for
    /// upstreams whose transport settings did not change.
    pub fn build(
        config: Config,
        generation: u64,
        previous: Option<&Snapshot>,
        telemetry: &crate::telemetry::Telemetry,
    ) -> Result<Snapshot, Vec<ConfigError>> {
        let mut config = config;
        // Keep the token caches of unchanged OAuth2 credentials: a reload must not re-mint.
        for u in &mut config.upstreams {
            for c in &mut u.credentials {
                if let Injection::OAuth2(t) = &mut c.injection {
                    let old = previous.and_then(|p| p.config.upstream(&u.id)).and_then(|pu| {
                        pu.credentials.iter().find_map(|pc| match &pc.injection {
                            Injection::OAuth2(pt) if pc.id == c.id && pt.settings == t.settings => Some(pt.clone()),
                            _ => None,
                        })
                    });
                    if let Some(old) = old {
                        *t = old;
                    }
                    t.count_into(&telemetry.metrics.token_requests);
                }
            }
        }
        // Translation counters and kept failures follow a mapping across reloads by id.
        if let Some(p) = previous {
            for m in &config.mappings {
                if let Some(pm) = p.config.mappings.iter().find(|pm| pm.id == m.id) {
                    m.stats.store(pm.stats.load_full());
                }
            }
        }
        let mut clients = Vec::with_capacity(config.upstreams.len());
        let mut errors = Vec::new();
        for u in &config.upstreams {
            let reused = previous
                .and_then(|p| p.clients.iter().find(|c| c.built_for.id == u.id && c.built_for.same_transport(u)));
            match reused {
                Some(c) => clients.push(Arc::new(c.with_endpoints(u))),
                None => clients.push(Arc::new(UpstreamClient::new(u, Some(telemetry.metrics.upstream.clone())))),
            }
        }
        let identity = match IdentityRuntime::build(
            &config.identity,
            previous.map(|p| &*p.identity),
            &telemetry.metrics.jwks_fetches,
        ) {
            Ok(rt) => Arc::new(rt),
            Err(m) => {
                errors.push(ConfigError::at(&config.dir.join("callers.yaml"), None, "jwt", m));
                return Err(errors);
            }
        };
        let limiter = previous.map_or_else(
            || Arc::new(crate::ratelimit::Limiter::new(Some(telemetry.metrics.ratelimit.clone()))),
            |p| p.limiter.clone(),
        );
        limiter.set_shared(config.gateway.cluster_redis.as_ref());
        let cache = match previous {
            Some(p) if p.cache.max_bytes == config.gateway.cache_bytes => p.cache.clone(),
            _ => Arc::new(crate::cache::store::Store::new(config.gateway.cache_bytes)),
        };
        Ok(Snapshot { generation, loaded_at: SystemTime::now(), config, clients, identity, limiter, cache })
    }
}
