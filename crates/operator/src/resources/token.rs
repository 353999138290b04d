//! The Secret holding the key students' tokens are signed with: the one the spec names, or one
//! the operator generates (`<class>-token`, key `hs256-key`) so that a class without a
//! `tokenSecretRef` still runs.
//!
//! A generated Secret is created once and never rewritten: the operator can create Secrets but
//! never read them, and rotating the key is the school's act (`docs/operator.md`), seen by the
//! socket servers without a restart because they re-read the mounted file.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use liveclass_api::types::SecretKeyRef;

use super::Meta;

/// The key of a generated Secret that holds the current signing key.
pub const GENERATED_KEY: &str = "hs256-key";
/// The key of a generated Secret that may hold the previous signing key during a rotation.
pub const GENERATED_PREVIOUS_KEY: &str = "hs256-key-previous";
/// Random bytes in a generated key (it is stored base64url-encoded: 64 characters).
pub const GENERATED_BYTES: usize = 48;

/// Where the socket servers of a class find the token signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `spec.socket.tokenSecretRef`.
    Given {
        current: SecretKeyRef,
        previous_key: Option<String>,
    },
    /// The Secret the operator generates, `<class>-token`.
    Generated { name: String },
}

impl TokenSource {
    /// The Secret and key holding the current signing key (what status reports).
    pub fn current(&self) -> SecretKeyRef {
        match self {
            TokenSource::Given { current, .. } => current.clone(),
            TokenSource::Generated { name } => SecretKeyRef {
                name: name.clone(),
                key: GENERATED_KEY.to_owned(),
            },
        }
    }

    /// The key of the same Secret holding the previous signing key, if there can be one.
    pub fn previous_key(&self) -> Option<&str> {
        match self {
            TokenSource::Given { previous_key, .. } => previous_key.as_deref(),
            TokenSource::Generated { .. } => Some(GENERATED_PREVIOUS_KEY),
        }
    }

    /// The name of the Secret the operator must create, if it generates one.
    pub fn generated(&self) -> Option<&str> {
        match self {
            TokenSource::Given { .. } => None,
            TokenSource::Generated { name } => Some(name),
        }
    }
}

/// The generated token Secret for a class, holding `key` (already random, base64url text).
pub(crate) fn generated_secret(meta: &Meta, name: &str, key: String) -> Secret {
    let mut metadata = meta.metadata(name, "socket");
    if let Some(labels) = metadata.labels.as_mut() {
        labels.insert("liveclass.dev/token".to_owned(), "generated".to_owned());
    }
    Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            GENERATED_KEY.to_owned(),
            ByteString(key.into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// The generated Redis password Secret for a class (`<class>-redis-auth`, key `password`).
pub(crate) fn generated_redis_secret(meta: &Meta, name: &str, password: String) -> Secret {
    Secret {
        metadata: meta.metadata(name, "redis"),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            super::redis::PASSWORD_KEY.to_owned(),
            ByteString(password.into_bytes()),
        )])),
        ..Secret::default()
    }
}
