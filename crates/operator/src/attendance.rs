//! The reactive floor's input: how many students a class has connected now, read from the
//! class's Redis (`HLEN lc:{<class>}:where`, the socket servers' user → pod hash).
//!
//! Best effort by design: an unreachable or slow Redis gives `None` ("unknown") within the
//! timeout and never fails the reconcile; the schedule alone still holds the class's capacity.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use liveclass_api::{LiveClass, types::RedisMode};

use crate::resources::redis_url;

/// The Redis key the socket servers keep the class's connected users in (see
/// `crates/socket/src/store.rs`); the class id is the LiveClass's name.
pub fn where_key(class: &str) -> String {
    format!("lc:{{{class}}}:where")
}

/// Where the operator reads a class's attendance from.
#[derive(Clone)]
pub struct Attendance {
    client: Client,
    override_url: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Attendance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attendance")
            .field("override_url", &self.override_url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Attendance {
    pub fn new(client: Client, override_url: Option<String>, timeout: Duration) -> Self {
        Self {
            client,
            override_url,
            timeout,
        }
    }

    /// Students connected to `lc`'s class now, or `None` when it cannot be known in time.
    pub async fn connected(&self, lc: &LiveClass, class: &str, namespace: &str) -> Option<u64> {
        let url = self.url(lc, class, namespace).await?;
        match tokio::time::timeout(self.timeout, hlen(&url, &where_key(class))).await {
            Ok(Ok(n)) => Some(n),
            Ok(Err(error)) => {
                tracing::debug!(%error, "reading connected students failed; treating as unknown");
                None
            }
            Err(_) => {
                tracing::debug!("reading connected students timed out; treating as unknown");
                None
            }
        }
    }

    async fn url(&self, lc: &LiveClass, class: &str, namespace: &str) -> Option<String> {
        if let Some(url) = &self.override_url {
            return Some(url.clone());
        }
        match (&lc.spec.redis.mode, &lc.spec.redis.external) {
            (RedisMode::External, Some(external)) => {
                let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
                let secret = secrets.get_opt(&external.secret_ref.name).await.ok()??;
                let bytes = secret.data?.remove(&external.secret_ref.key)?;
                String::from_utf8(bytes.0).ok().map(|s| s.trim().to_owned())
            }
            (RedisMode::External, None) => None,
            _ => Some(redis_url(class, namespace)),
        }
    }
}

async fn hlen(url: &str, key: &str) -> redis::RedisResult<u64> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    redis::cmd("HLEN")
        .arg(key)
        .query_async(&mut connection)
        .await
}
