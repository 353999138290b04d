//! Mints the HS256 tokens the school's backend would give students and teachers.

use liveclass_protocol::{Claims, Role};
use serde::Serialize;

/// Signs tokens with one shared secret.
#[derive(Clone)]
pub struct TokenMinter {
    key: jsonwebtoken::EncodingKey,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenMinter { .. }")
    }
}

/// The claims of a token for `user` in `class` with `role`, valid for an hour.
pub fn claims(user: &str, class: &str, role: Role) -> Claims {
    Claims {
        sub: user.into(),
        class: class.into(),
        role,
        exp: now() + 3600,
        iat: Some(now()),
        name: None,
        aud: None,
        iss: None,
    }
}

impl TokenMinter {
    pub fn new(secret: &str) -> Self {
        Self {
            key: jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// A token for `user` in `class` valid for an hour.
    pub fn student(&self, user: &str, class: &str) -> String {
        self.mint(&claims(user, class, Role::Student))
    }

    /// A teacher's token, valid for an hour.
    pub fn teacher(&self, user: &str, class: &str) -> String {
        self.mint(&claims(user, class, Role::Teacher))
    }

    /// Signs any claims: [`Claims`] with odd values, or arbitrary JSON for malformed ones.
    pub fn mint(&self, claims: &impl Serialize) -> String {
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        // Encoding HS256 with a valid key cannot fail for plain claims.
        jsonwebtoken::encode(&header, claims, &self.key).unwrap_or_default()
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    liveclass_protocol::now_ms() / 1000
}
