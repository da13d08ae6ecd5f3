//! Service account tokens for `serviceAccountToken` projections, as
//! upstream's kubelet token manager gets and keeps them.
//!
//! A pod's projected volume asks for a token of its ServiceAccount with an
//! audience and a lifetime. The agent gets one from the TokenRequest API
//! (`POST .../serviceaccounts/<name>/token`), bound to the pod so that the
//! API server stops accepting it once the pod is gone, and writes it into the
//! volume with the volume's other files.
//!
//! Every pod sync rewrites the volume, so tokens are cached: one per
//! [`TokenKey`] (ServiceAccount, namespace, audiences, lifetime and bound
//! pod), reused until it is due for a refresh. A token is refreshed once it
//! is older than 80% of its lifetime or older than 24 hours (tokens the API
//! server issues for longer are still rotated daily), or when the clock
//! shows a time before it was issued (the clock jumped back). Refreshing
//! early means a reader of the file always finds a token with a fifth of its
//! lifetime left. Upstream also subtracts up to ten seconds of random jitter
//! to spread refreshes; here the pod worker's resync period (seconds) spreads
//! them, so the decision stays deterministic.
//!
//! When a refresh fails, the old token is served for as long as it is still
//! valid; only a pod with no valid token fails to set up its volume (a
//! `FailedMount` event, containers not started, tried again on the next
//! sync). Expired tokens drop out of the cache when another token is asked
//! for (upstream sweeps them every minute), and a pod's tokens when the pod
//! is cleaned up.
//!
//! The cache key and token values are never logged together: a key is safe
//! to log, a token is a credential.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount, ServiceAccountTokenProjection};
use kube::api::{Api, PostParams};

/// The lifetime asked for when the projection names none (the API's
/// default for `expirationSeconds`).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// Tokens older than this are refreshed whatever their lifetime.
const MAX_AGE_SECONDS: i64 = 24 * 60 * 60;

/// A token is refreshed when less than this share (percent) of its lifetime
/// is left.
const REFRESH_LEFT_PERCENT: i64 = 20;

/// The ServiceAccount a pod runs as when its spec names none (what the
/// ServiceAccount admission gives such pods).
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// Why no token could be had; displayed as the tail of the volume's
/// `FailedMount` message, as upstream words it. Retryable: the next sync
/// asks again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The agent runs without an API server to ask.
    #[error("cannot use TokenManager when kubelet is in standalone mode")]
    Standalone,
    /// No token was cached and the request failed.
    #[error("failed to fetch token: {0}")]
    Fetch(String),
    /// The cached token expired and the request for a new one failed.
    #[error("token {key} expired and refresh failed: {message}")]
    Expired {
        /// The cache key (no secret in it).
        key: String,
        /// Why the request failed.
        message: String,
    },
}

/// What one cached token is for: the fields upstream keys its cache on.
/// Displays without anything secret, for logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    /// The ServiceAccount the token is for.
    pub service_account: String,
    /// Its namespace (the pod's).
    pub namespace: String,
    /// The audiences asked for; empty for the API server's own.
    pub audiences: Vec<String>,
    /// The lifetime asked for.
    pub expiration_seconds: i64,
    /// The pod the token is bound to.
    pub pod_name: String,
    /// That pod's uid.
    pub pod_uid: String,
}

impl TokenKey {
    /// The token `source` of `pod`'s projected volume asks for: the pod's
    /// ServiceAccount, the source's audience (if any) and lifetime (else
    /// [`DEFAULT_EXPIRATION_SECONDS`]), bound to the pod.
    pub fn for_projection(pod: &Pod, source: &ServiceAccountTokenProjection) -> Self {
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|name| !name.is_empty())
            .unwrap_or(DEFAULT_SERVICE_ACCOUNT);
        TokenKey {
            service_account: service_account.to_string(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            audiences: source
                .audience
                .iter()
                .filter(|a| !a.is_empty())
                .cloned()
                .collect(),
            expiration_seconds: source
                .expiration_seconds
                .unwrap_or(DEFAULT_EXPIRATION_SECONDS),
            pod_name: pod.metadata.name.clone().unwrap_or_default(),
            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        }
    }

    /// The TokenRequest to post for this token. No audiences means the API
    /// server's own, so none are sent.
    pub fn request(&self) -> TokenRequest {
        TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
                expiration_seconds: Some(self.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(self.pod_name.clone()),
                    uid: Some(self.pod_uid.clone()),
                }),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        }
    }
}

impl fmt::Display for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}/{:?}/{:?}/{}/Pod {:?} ({})",
            self.service_account,
            self.namespace,
            self.audiences,
            self.expiration_seconds,
            self.pod_name,
            self.pod_uid
        )
    }
}

/// A token and its validity, as the TokenRequest API returned them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Issued {
    token: String,
    expires: Timestamp,
    /// The lifetime it was issued with (the server's answer; it may differ
    /// from the one asked for).
    lifetime_seconds: i64,
}

impl Issued {
    /// The token in a TokenRequest answer; `asked` is the lifetime asked for,
    /// used when the answer does not repeat it.
    fn from_response(response: TokenRequest, asked: i64) -> Result<Self, String> {
        let status = response
            .status
            .ok_or("the TokenRequest answer has no status")?;
        let token = status
            .token
            .filter(|t| !t.is_empty())
            .ok_or("the TokenRequest answer has no token")?;
        let expires = status
            .expiration_timestamp
            .ok_or("the TokenRequest answer has no expirationTimestamp")?
            .0;
        let lifetime_seconds = response
            .spec
            .and_then(|s| s.expiration_seconds)
            .unwrap_or(asked);
        Ok(Issued {
            token,
            expires,
            lifetime_seconds,
        })
    }

    fn expired(&self, now: Timestamp) -> bool {
        now > self.expires
    }
}

/// Whether a token expiring at `expires`, issued for `lifetime_seconds`,
/// should be replaced at `now`: when it is older than 24 hours, when less
/// than a fifth of its lifetime is left, or when `now` is before its issue
/// time (the clock went back).
pub fn refresh_due(now: Timestamp, expires: Timestamp, lifetime_seconds: i64) -> bool {
    let now = now.as_second();
    let expires = expires.as_second();
    let issued = expires.saturating_sub(lifetime_seconds);
    let refresh_at =
        expires.saturating_sub(lifetime_seconds.saturating_mul(REFRESH_LEFT_PERCENT) / 100);
    now > issued.saturating_add(MAX_AGE_SECONDS) || now > refresh_at || now < issued
}

/// The wall clock, injected so that tests can move it.
type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Gets service account tokens from the TokenRequest API and keeps them until
/// they are due for a refresh (see the module docs).
pub struct TokenManager {
    client: kube::Client,
    clock: Clock,
    /// Held only briefly, never across a request.
    cache: Mutex<HashMap<TokenKey, Issued>>,
}

impl TokenManager {
    /// A manager asking the API server behind `client`.
    pub fn new(client: kube::Client) -> Self {
        Self::with_clock(client, Arc::new(Timestamp::now))
    }

    /// A manager reading the time from `clock` (tests move it).
    fn with_clock(client: kube::Client, clock: Clock) -> Self {
        Self {
            client,
            clock,
            cache: Mutex::default(),
        }
    }

    /// The token for `key`: the cached one unless it is due for a refresh,
    /// else a new one from the API server. A failed refresh keeps serving
    /// the old token while it is valid.
    pub async fn token(&self, key: &TokenKey) -> Result<String, TokenError> {
        let cached = {
            let now = (self.clock)();
            let mut cache = lock(&self.cache);
            // Other pods' expired tokens go; this one stays until replaced,
            // so that a failed refresh can say it expired.
            cache.retain(|other, issued| other == key || !issued.expired(now));
            cache.get(key).cloned()
        };
        if let Some(issued) = &cached
            && !refresh_due((self.clock)(), issued.expires, issued.lifetime_seconds)
        {
            return Ok(issued.token.clone());
        }
        match self.request(key).await {
            Ok(issued) => {
                let token = issued.token.clone();
                lock(&self.cache).insert(key.clone(), issued);
                Ok(token)
            }
            Err(message) => match cached {
                None => Err(TokenError::Fetch(message)),
                Some(old) if old.expired((self.clock)()) => Err(TokenError::Expired {
                    key: key.to_string(),
                    message,
                }),
                Some(old) => {
                    tracing::warn!(key = %key, error = %message, "couldn't refresh token; keeping the current one");
                    Ok(old.token)
                }
            },
        }
    }

    /// Drops the tokens bound to the pod `uid` (the pod is gone).
    pub fn forget_pod(&self, uid: &str) {
        lock(&self.cache).retain(|key, _| key.pod_uid != uid);
    }

    async fn request(&self, key: &TokenKey) -> Result<Issued, String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &key.namespace);
        let response: TokenRequest = api
            .create_subresource(
                "token",
                &key.service_account,
                &PostParams::default(),
                &key.request(),
            )
            .await
            .map_err(|e| match e {
                kube::Error::Api(status) => status.message,
                other => other.to_string(),
            })?;
        Issued::from_response(response, key.expiration_seconds)
    }
}

/// Locks a mutex, recovering from poisoning: the cache is a plain map, left
/// consistent whatever panicked while it was held.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
